"""Waking on new work: migration 0009's triggers notify each stage's channel (once per
statement, however many rows), the PostgreSQL waker returns on a notification and on an
interrupt, and ``job run monitor --follow`` picks up a header inserted after it went idle
(PostgreSQL: by the notification, the fallback poll being far longer than the wait;
SQLite: by its short poll)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from sqlalchemy import func, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import make_url

from comms_pipeline.queue import wake
from comms_pipeline.queue.work_queues import detail_queue, header_queue, merge_queue, storage_queue
from comms_pipeline.store import db as dbmod
from comms_pipeline.store.models import details_t, headers_t, heartbeats_t
from tests import factories
from tests.integration.test_readme_sql import readme_sql

CHANNELS = ("comms_monitor", "comms_merge_email", "comms_send_sms", "comms_external",
            "comms_storage")


def _listener(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(make_url(url).set(drivername="postgresql")
                            .render_as_string(hide_password=False))
    conn.autocommit = True
    with conn.cursor() as cur:
        for channel in CHANNELS:
            cur.execute(f'LISTEN "{channel}"')
    return conn


def _received(conn) -> list[str]:  # type: ignore[no-untyped-def]
    select.select([conn], [], [], 0.5)
    conn.poll()
    channels = [n.channel for n in conn.notifies]
    conn.notifies.clear()
    return channels


def test_queues_name_the_channels_the_triggers_notify():
    assert header_queue().channel == wake.MONITOR_CHANNEL == "comms_monitor"
    assert merge_queue("email").channel == "comms_merge_email"
    assert detail_queue("sms").channel == "comms_send_sms"
    assert detail_queue("sms", "completed").channel is None
    assert storage_queue().channel == "comms_storage"


def test_triggers_notify_once_per_statement_and_channel(pg_url):
    engine = dbmod.make_engine(pg_url)
    listener = _listener(pg_url)
    try:
        with engine.begin() as conn:
            factories.contact(conn, ref="C-1001")
            factories.sms_template(conn, code="PAYMENT_RECEIPT_SMS")
        assert _received(listener) == []  # contacts and templates make no work
        with engine.begin() as conn:
            conn.execute(text(readme_sql()))
        assert _received(listener) == ["comms_monitor"]
        # 20,000 headers in one statement: one notification, not 20,000.
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO request_headers (contact_ref, template_code, entities, params) "
                "SELECT 'C-1001', 'PAYMENT_RECEIPT_SMS', '{}', '{}' "
                "FROM generate_series(1, 20000)"))
        assert _received(listener) == ["comms_monitor"]
        # Claim stamps and other updates that change no status make no notification.
        with engine.begin() as conn:
            conn.execute(text("UPDATE request_headers SET claimed_by = 'x'"))
            conn.execute(text("UPDATE request_headers SET claimed_by = NULL"))
        assert _received(listener) == []
        header = 1
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO request_details (header_id, media, direction, state, address, "
                "priority) SELECT :h, m, 'outgoing', s, 'a', 2 FROM (VALUES "
                "('sms', 'awaiting_send'), ('email', 'awaiting_merge'), "
                "('email', 'awaiting_merge'), ('sms', 'rejected')) AS v(m, s), "
                "generate_series(1, 500)"), {"h": header})
        assert sorted(_received(listener)) == ["comms_merge_email", "comms_send_sms"]
        with engine.begin() as conn:  # an operator's retry: Rejected -> Awaiting Send
            conn.execute(text("UPDATE request_details SET state = 'awaiting_send' "
                              "WHERE state = 'rejected'"))
        assert _received(listener) == ["comms_send_sms"]
    finally:
        listener.close()
        engine.dispose()


def test_pg_waker_wakes_on_a_notification_and_on_interrupt(pg_url):
    engine = dbmod.make_engine(pg_url)
    waker = wake.make_waker(engine, [wake.MONITOR_CHANNEL])
    try:
        assert isinstance(waker, wake.PgWaker) and waker.listening
        assert waker.wait(0.2) is False  # nothing to hear: the timeout
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_notify('comms_monitor', '')"))
        assert waker.wait(30) is True
        threading.Timer(0.2, waker.interrupt).start()
        assert waker.wait(30) is False  # stopped, not woken by work
    finally:
        waker.close()
        engine.dispose()


def test_sqlite_and_switched_off_listening_poll(sqlite_url, pg_url):
    for url, listen in ((sqlite_url, True), (pg_url, False)):
        engine = dbmod.make_engine(url)
        try:
            assert isinstance(wake.make_waker(engine, ["comms_monitor"], listen=listen),
                              wake.PollWaker)
        finally:
            engine.dispose()


def _wait(predicate, limit: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def test_a_follow_job_picks_up_a_header_inserted_after_it_went_idle(db_url, tmp_path):
    postgres = db_url.startswith("postgresql")
    engine = dbmod.make_engine(db_url)
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1001")
        factories.sms_template(conn, code="PAYMENT_RECEIPT_SMS",
                               text="Payment #payment.number received",
                               referring_entities=["payment"])
    # PostgreSQL: a fallback poll far longer than the wait below, so only the notification
    # can wake the worker in time; SQLite: the short poll is the mechanism.
    env = dict(os.environ, COMMS_DATABASE_URL=db_url, COMMS_PATHS_VAR=str(tmp_path / "var"),
               COMMS_DAEMONS_POLL_INTERVAL="600" if postgres else "0.2",
               COMMS_DAEMONS_HEARTBEAT_SECONDS="1")
    cli = [sys.executable, "-m", "comms_pipeline.cli.main"]
    log = (tmp_path / "follow.log").open("w+")
    proc = subprocess.Popen([*cli, "job", "run", "monitor", "--follow"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def count(table, *where) -> int:  # type: ignore[no-untyped-def]
        with engine.connect() as conn:
            return conn.execute(sa_select(func.count()).select_from(table)
                                .where(*where)).scalar_one()

    try:
        _wait(lambda: count(heartbeats_t, heartbeats_t.c.name == "monitor") == 1, 60,
              "the worker to start")
        time.sleep(1.0)  # it found nothing and is waiting
        status = subprocess.run([*cli, "daemon", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        shown = json.loads(status.stdout)["daemons"]
        assert [r["state"] for r in shown if r["name"] == "monitor"] == ["running"], shown
        raw = engine.raw_connection()
        try:
            raw.cursor().execute(readme_sql())
            raw.commit()
        finally:
            raw.close()
        _wait(lambda: count(headers_t, headers_t.c.status == "processed") == 1, 15,
              "the idle worker to expand the new header")
        assert proc.poll() is None  # still following
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.seek(0)
        output = log.read()
        log.close()
    assert proc.returncode == 0, output
    assert count(details_t, details_t.c.state == "awaiting_send") == 1
    assert count(headers_t, headers_t.c.claimed_by.isnot(None)) == 0
    with engine.connect() as conn:
        stopped = conn.execute(sa_select(heartbeats_t.c.stopped_at)).scalar_one()
    assert stopped is not None
    engine.dispose()
