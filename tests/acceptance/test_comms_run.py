"""``comms run`` on PostgreSQL runs the pipeline as one service: a trigger inserted by the
README's SQL statement reaches the loopback SMSC (the monitor and the SMS daemon are woken by
the database's notifications: their fallback poll is longer than the generous wait), a copy
killed with SIGKILL is started again and sends the next trigger, and SIGTERM stops every
process with nothing left claimed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from comms_pipeline.runtime.supervisor import pid_alive
from comms_pipeline.store import db as dbmod
from comms_pipeline.store.models import details_t, headers_t, heartbeats_t
from tests import factories
from tests.integration.test_readme_sql import readme_sql


def _wait(predicate, limit: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def _insert(engine, key: str) -> None:  # type: ignore[no-untyped-def]
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(readme_sql().replace("billing-payment-77", key))
        raw.commit()
    finally:
        raw.close()


def test_comms_run_delivers_restarts_a_killed_copy_and_stops_cleanly(pg_url, smsc, tmp_path):
    engine = dbmod.make_engine(pg_url)
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1001")
        factories.sms_template(conn, code="PAYMENT_RECEIPT_SMS",
                               text="Payment #payment.number received",
                               referring_entities=["payment"])
    var = tmp_path / "var"
    daemons = {"sms": 1, "email": 0, "letter": 0, "storage": 0, "push-handset": 0,
               "push-external": 0}
    env = dict(os.environ, COMMS_DATABASE_URL=pg_url, COMMS_PATHS_VAR=str(var),
               COMMS_DAEMONS_POLL_INTERVAL="600", COMMS_DAEMONS_HEARTBEAT_SECONDS="1",
               COMMS_RUN_WORKERS='["monitor"]', COMMS_RUN_DAEMONS=json.dumps(daemons),
               COMMS_RUN_RESTART_SECONDS="0.2",
               COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
               COMMS_GATEWAYS_SMS_TIMEOUT="5")
    log = (tmp_path / "run.log").open("w+")
    service = subprocess.Popen([sys.executable, "-m", "comms_pipeline.cli.main", "run"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    pidfiles = {name: var / "run" / f"{name}-1.pid" for name in ("monitor", "sms")}

    def count(table, *where) -> int:  # type: ignore[no-untyped-def]
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)
                                .where(*where)).scalar_one()

    def beats() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(select(heartbeats_t.c.name)
                                    .where(heartbeats_t.c.stopped_at.is_(None))).scalars())

    try:
        _wait(lambda: beats() >= {"monitor", "sms"}, 60, "the worker and the daemon to start")
        time.sleep(1.0)  # both found nothing and are waiting
        inserted = time.monotonic()
        _insert(engine, "run-1")
        _wait(lambda: len(smsc.messages()) == 1, 15, "the trigger to reach the SMSC")
        # A figure for the record (-s shows it), not an assertion: the poll is 600 s.
        print(f"comms run: README trigger to SMSC in {time.monotonic() - inserted:.2f} s")
        # Killed while idle (a copy killed mid-batch leaves its rows to lease takeover).
        _wait(lambda: count(details_t, details_t.c.state == "completed",
                            details_t.c.claimed_by.is_(None)) == 1, 30, "the send's commit")

        killed = _pid(pidfiles["sms"])
        assert killed and pid_alive(killed)
        os.kill(killed, signal.SIGKILL)
        _wait(lambda: (_pid(pidfiles["sms"]) or killed) != killed
              and pid_alive(_pid(pidfiles["sms"])), 30,  # type: ignore[arg-type]
              "the killed copy to be started again")
        _wait(lambda: sum(1 for b in beats() if b == "sms") >= 1, 30, "its heartbeat")
        _insert(engine, "run-2")
        _wait(lambda: len(smsc.messages()) == 2, 30, "the restarted copy to send")
        children = [_pid(p) for p in pidfiles.values()]
        assert service.poll() is None
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=90)
        log.seek(0)
        output = log.read()
        log.close()
    assert service.returncode == 0, output
    assert not any(pid_alive(pid) for pid in children if pid), output
    assert not any(p.exists() for p in pidfiles.values())
    with engine.connect() as conn:
        held = conn.execute(select(details_t.c.id, details_t.c.state, details_t.c.claimed_by)
                            .where(details_t.c.claimed_by.isnot(None))).all()
        held += conn.execute(select(headers_t.c.id, headers_t.c.status, headers_t.c.claimed_by)
                             .where(headers_t.c.claimed_by.isnot(None))).all()
    sent = count(details_t, details_t.c.state == "completed")
    engine.dispose()
    assert held == []
    assert sent == 2
    assert "run.child_died" in output
    assert "Traceback" not in output, output
