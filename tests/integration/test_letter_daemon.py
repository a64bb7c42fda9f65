"""The Letter daemon against a real SFTP server (asyncssh) on loopback, and the local drop."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import update

from comms_pipeline.daemons.letter import LetterDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.documents_factory import add_entries, details, make_pdf
from tests.servers.sftp import SftpServer


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    return Runner(settings, engine, LetterDaemon(settings, engine), once=True).run()


def pdfs_by_entry(count: int):  # type: ignore[no-untyped-def]
    pdfs = [make_pdf(pages=1 + i % 3) for i in range(count)]
    return pdfs, (lambda i, to: pdfs[i])


def test_letters_uploaded_with_a_manifest_written_last(db_url, sftp_server, make_engine_for):
    settings, engine = make_engine_for(db_url, **sftp_server.env("letter",
                                                                 sftp_server.known_hosts))
    pdfs, content = pdfs_by_entry(5)
    ids = add_entries(engine, "letter", 5, content=content)

    assert run_once(settings, engine) == 5

    rows = details(engine, ids)
    assert {r["state"] for r in rows.values()} == {"completed"}
    (batch_dir,) = (sftp_server.root / "incoming").iterdir()
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    assert manifest["batch"] == batch_dir.name and manifest["count"] == 5
    for i, (detail_id, entry) in enumerate(zip(ids, manifest["letters"], strict=True)):
        assert entry == {"file": f"{detail_id}.pdf", "detail_id": detail_id,
                         "pages": 1 + i % 3, "size": len(pdfs[i]),
                         "sha256": hashlib.sha256(pdfs[i]).hexdigest()}
        assert (batch_dir / entry["file"]).read_bytes() == pdfs[i]
        assert rows[detail_id]["gateway_ref"] == f"{batch_dir.name}/{detail_id}.pdf"
    assert sorted(p.name for p in batch_dir.iterdir()) == sorted(
        [f"{i}.pdf" for i in ids] + ["manifest.json"])  # nothing half-written left behind
    # The print house sees the manifest only once every PDF is there.
    opened = [path for op, path in sftp_server.operations if op == "open"]
    assert opened[-1].endswith("manifest.json.part")
    assert sftp_server.operations[-1] == ("rename", f"/incoming/{batch_dir.name}/manifest.json")


def test_unknown_or_changed_host_key_is_refused(sqlite_url, sftp_server, make_engine_for,
                                                tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    impostor = SftpServer(tmp_path / "impostor")  # another key, claimed for the same address
    changed = tmp_path / "changed_known_hosts"
    public = impostor.host_key.export_public_key("openssh").decode().split()
    changed.write_text(f"[{sftp_server.host}]:{sftp_server.port} {public[0]} {public[1]}\n")
    for known_hosts, code in ((empty, "HOST_KEY_UNKNOWN"), (changed, "HOST_KEY_MISMATCH")):
        settings, engine = make_engine_for(sqlite_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                           **sftp_server.env("letter", known_hosts))
        ids = add_entries(engine, "letter", 1)
        run_once(settings, engine)
        (row,) = details(engine, ids).values()
        assert (row["state"], row["error_code"]) == ("awaiting_send", code)
    assert sftp_server.operations == []  # never logged in, nothing written
    assert not (sftp_server.root / "incoming").exists()


def test_key_authentication(sqlite_url, tmp_path, make_engine_for):
    server = SftpServer(tmp_path / "root", with_client_key=True).start()
    try:
        known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
        key = server.write_client_key(tmp_path / "id_ed25519")
        env = server.env("letter", known_hosts, key_file=str(key), remote_dir="/drop")
        env.pop("COMMS_GATEWAYS_LETTER_PASSWORD")
        settings, engine = make_engine_for(sqlite_url, **env)
        ids = add_entries(engine, "letter", 2)
        run_once(settings, engine)
    finally:
        server.stop()
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    (batch_dir,) = (tmp_path / "root" / "drop").iterdir()
    assert (batch_dir / "manifest.json").is_file()


def test_server_down_then_back(sqlite_url, sftp_server, make_engine_for):
    settings, engine = make_engine_for(sqlite_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                       **sftp_server.env("letter", sftp_server.known_hosts))
    first = add_entries(engine, "letter", 2)
    daemon = LetterDaemon(settings, engine)  # one daemon, one kept-open connection
    runner = Runner(settings, engine, daemon, once=True)
    runner.run_batch()
    sftp_server.stop()
    second = add_entries(engine, "letter", 2)
    runner.run_batch()
    rows = details(engine, second)
    assert {(r["state"], r["error_code"]) for r in rows.values()} == {
        ("awaiting_send", "ECONNREFUSED")}

    sftp_server.start()
    with engine.begin() as conn:
        conn.execute(update(details_t).values(next_attempt_at=None))
    runner.run()
    assert {r["state"] for r in details(engine, first + second).values()} == {"completed"}
    assert len(list((sftp_server.root / "incoming").iterdir())) == 2


def test_local_drop_and_invalid_documents(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    good = add_entries(engine, "letter", 2)
    not_pdf = add_entries(engine, "letter", 1, content=lambda i, to: b"<html>oops</html>")
    run_once(settings, engine)

    rows = details(engine, good + not_pdf)
    assert rows[not_pdf[0]]["state"] == "rejected"
    assert rows[not_pdf[0]]["error_code"] == "NOT_PDF"
    (batch_dir,) = (settings.var_dir / "out" / "letters").iterdir()
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    assert [e["detail_id"] for e in manifest["letters"]] == good
    for detail_id in good:
        assert rows[detail_id]["state"] == "completed"
        assert (batch_dir / f"{detail_id}.pdf").read_bytes().startswith(b"%PDF-")

