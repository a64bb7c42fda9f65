"""A full disk is an error, not corruption: the local-folder gateways and the local document
store, writing onto a tiny tmpfs mounted by the test, leave the entries Pending with
STORAGE_FULL (STORAGE_READ_ONLY on a read-only filesystem), never count a torn file as sent,
and leave no half-written file behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update

from comms_pipeline.core.errors import TransientGatewayError
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.gateways.local_files import LocalDocumentStore
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.conftest import require_service
from tests.integration.details_factory import add_details
from tests.integration.documents_factory import add_entries, details, make_eml


def _mount(folder: Path, *options: str) -> bool:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                           str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """``var/out`` on a 64 KiB tmpfs (16 pages): the daemons' local folders fill it fast."""
    out = tmp_path / "var" / "out"
    out.mkdir(parents=True)
    require_service(os.geteuid() == 0 and _mount(out, "size=64k", "mode=0755"),
                    "a tmpfs mount (root)")
    yield out
    subprocess.run(["umount", "-l", str(out)], check=False)


def _run_batch(settings, engine, daemon):  # type: ignore[no-untyped-def]
    runner = Runner(settings, engine, daemon, once=True)
    runner.run_batch()
    runner.handler.close()


def test_emails_that_do_not_fit_wait_with_storage_full(sqlite_url, make_engine_for, small_disk):
    settings, engine = make_engine_for(sqlite_url, COMMS_DAEMONS_BATCH_SIZE="40")
    ids = add_entries(engine, "email", 40,
                      content=lambda i, to: make_eml(to, body=f"Hello {i} " + "x" * 2000))

    _run_batch(settings, engine, EmailDaemon(settings, engine))

    rows = details(engine, ids)
    sent = {i for i, r in rows.items() if r["state"] == "completed"}
    waiting = {i for i, r in rows.items() if r["state"] == "awaiting_send"}
    assert sent and waiting and sent | waiting == set(ids)
    for i in waiting:
        assert rows[i]["error_code"] == "STORAGE_FULL"
        assert rows[i]["next_attempt_at"] is not None and rows[i]["claimed_by"] is None
    folder = small_disk / "email"
    files = {int(p.stem): p for p in folder.glob("*.eml")}
    assert set(files) == sent  # a file for every entry sent, and only for those
    for path in files.values():  # and each one whole
        assert path.read_bytes().rstrip().endswith(b"--")
    assert not list(folder.glob(".*.part"))  # no half-written temp file left behind

    # Space is freed (the files are taken away): the waiting entries go out on their retries.
    for _ in range(len(ids)):
        for path in folder.glob("*.eml"):
            path.unlink()
        with engine.begin() as conn:
            conn.execute(update(details_t).values(next_attempt_at=None))
        _run_batch(settings, engine, EmailDaemon(settings, engine))
        if {r["state"] for r in details(engine, ids).values()} == {"completed"}:
            break
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}


def test_a_batch_of_sms_lines_is_written_whole_or_not_at_all(sqlite_url, make_engine_for,
                                                             small_disk):
    settings, engine = make_engine_for(sqlite_url, COMMS_DAEMONS_BATCH_SIZE="500")
    first = add_details(engine, "sms", [("+447700900001", "first")])
    _run_batch(settings, engine, SmsDaemon(settings, engine))
    (outbox,) = (small_disk / "sms").glob("*.jsonl")
    before = outbox.read_bytes()
    assert details(engine, first)[first[0]]["state"] == "completed"

    big = add_details(engine, "sms", [(f"+4477009{i:05d}", "y" * 150) for i in range(500)])
    _run_batch(settings, engine, SmsDaemon(settings, engine))

    rows = details(engine, big)
    sent = {i for i, r in rows.items() if r["state"] == "completed"}
    waiting = {i for i, r in rows.items()
               if (r["state"], r["error_code"]) == ("awaiting_send", "STORAGE_FULL")}
    assert waiting and sent | waiting == set(big)
    lines = outbox.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole: none torn
    assert [r["detail_id"] for r in records] == first + sorted(sent)  # and only those sent
    assert outbox.read_bytes().startswith(before)


def test_the_local_document_store_refuses_with_storage_full(small_disk):
    store = LocalDocumentStore(small_disk / "documents")
    with pytest.raises(TransientGatewayError) as caught:
        store.put("2026/12/big.eml", b"z" * 200_000, "message/rfc822", {})
    assert caught.value.code == "STORAGE_FULL"
    leftovers = [p for p in (small_disk / "documents").rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_read_only_filesystem_is_storage_read_only(sqlite_url, make_engine_for, small_disk):
    settings, engine = make_engine_for(sqlite_url)
    (small_disk / "email").mkdir()
    ids = add_entries(engine, "email", 2)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    _run_batch(settings, engine, EmailDaemon(settings, engine))

    assert {(r["state"], r["error_code"]) for r in details(engine, ids).values()} == {
        ("awaiting_send", "STORAGE_READ_ONLY")}
