"""Workers ride out a PostgreSQL restart: the Comms Monitor job and the SMS and Email daemons
run as processes against a throwaway cluster of the test's own, with the loopback SMSC and
SMTP server, and PostgreSQL is stopped and started again while they are busy. Every worker
is still running afterwards (the job finishes with exit code 0), everything is delivered,
nothing is left claimed, and each worker said ``db.unavailable``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store import db as dbmod
from comms_pipeline.store.models import details_t, headers_t
from tests import factories
from tests.integration.documents_factory import add_entries
from tests.servers.smtp import SmtpServer

HEADERS = 400
EMAILS = 150


def _wait(predicate, limit: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def _count(engine, table, *where) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_every_worker_rides_out_a_postgresql_restart(pg_cluster, smsc, tmp_path):
    admin = create_engine(pg_cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE comms"))
    admin.dispose()
    url = pg_cluster.url("comms")
    dbmod.upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.contact(conn, name="Maria")
        factories.sms_template(conn)
        for _ in range(HEADERS):
            trigger(conn, contact_ref="C-1", template_code="SMS_HELLO")
    add_entries(engine, "email", EMAILS)
    engine.dispose()  # the test's own connections must not outlive the restart either
    engine = create_engine(url, pool_pre_ping=True)

    smtp = SmtpServer().start()
    var = tmp_path / "var"
    env = dict(os.environ, COMMS_DATABASE_URL=url, COMMS_PATHS_VAR=str(var),
               COMMS_CLAIMS_LEASE_SECONDS="10", COMMS_DAEMONS_POLL_INTERVAL="0.2",
               COMMS_DAEMONS_HEARTBEAT_SECONDS="1", COMMS_GATEWAYS_SMS_BACKEND="smpp",
               COMMS_GATEWAYS_SMS_PORT=str(smsc.port), COMMS_GATEWAYS_SMS_TIMEOUT="5",
               COMMS_DAEMONS_BATCH_SIZE="20",
               COMMS_GATEWAYS_EMAIL_RATE_PER_SECOND="40", **smtp.env())
    cli = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs"]
    commands = {"monitor": [*cli, "job", "run", "monitor", "--batch-size", "2",
                            "--no-progress"],
                "sms": [*cli, "daemon", "run", "sms"],
                "email": [*cli, "daemon", "run", "email"]}
    logs = {name: (tmp_path / f"{name}.log").open("w+") for name in commands}
    procs = {name: subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
             for name, cmd in commands.items()}
    try:
        def headers_done() -> int:
            return _count(engine, headers_t, headers_t.c.status == "processed")

        def done(media: str) -> int:
            return _count(engine, details_t, details_t.c.media == media,
                          details_t.c.state == "completed")

        _wait(lambda: headers_done() >= 20 and done("email") >= 10, 120,
              "every worker to be busy")
        busy = {name: p.poll() is None for name, p in procs.items()}

        engine.dispose()
        pg_cluster.stop()  # sessions terminated, new ones refused: the database is away
        time.sleep(2)  # an outage of a couple of seconds (what is asserted is the outcome)
        alive_during = {name: p.poll() is None for name, p in procs.items()}
        pg_cluster.start()

        _wait(lambda: headers_done() == HEADERS, 180, "the monitor to finish")
        _wait(lambda: done("sms") == HEADERS, 180, "every SMS to be sent")
        _wait(lambda: done("email") == EMAILS, 180, "every email to be sent")
        alive_after = {name: p.poll() is None for name, p in procs.items() if name != "monitor"}
        procs["monitor"].wait(timeout=120)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(timeout=60)
        smtp.stop()
    claimed = _count(engine, details_t, details_t.c.claimed_by.isnot(None))
    claimed += _count(engine, headers_t, headers_t.c.claimed_by.isnot(None))
    engine.dispose()
    output = {}
    for name, f in logs.items():
        f.seek(0)
        output[name] = f.read()
        f.close()

    assert busy == {"monitor": True, "sms": True, "email": True}
    assert alive_during == busy, output
    assert alive_after == {"sms": True, "email": True}, output
    assert {name: p.returncode for name, p in procs.items()} == {
        "monitor": 0, "sms": 0, "email": 0}, output
    for name, text_ in output.items():
        assert "db.unavailable" in text_, name
    assert claimed == 0
    assert len({m.destination for m in smsc.messages()}) == 1  # one contact, every message
    assert len(smsc.messages()) >= HEADERS
    assert len({m.message_id for m in smtp.messages}) == EMAILS


@pytest.mark.parametrize("command", [["job", "run", "monitor"], ["daemon", "run", "sms", "--once"]])
def test_a_once_run_gives_up_after_its_limit_with_exit_code_75(command, tmp_path):
    from tests.servers.smtp import free_port

    env = dict(os.environ, COMMS_PATHS_VAR=str(tmp_path / "var"),
               # a port nothing listens on: a database that is down (no server to bind 0)
               COMMS_DATABASE_URL=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x",
               COMMS_DATABASE_OUTAGE_WAIT_ONCE_SECONDS="1")
    done = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs",
                           *command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 75, done.stderr
    assert "db.unavailable" in done.stdout + done.stderr
    assert "the database has been unavailable" in done.stderr
