"""A frozen worker cannot hold rows past its lease: an SMS daemon is frozen (SIGSTOP) inside
its finishing transaction, holding ``FOR UPDATE`` locks on its batch. The server ends the
frozen session after ``database.idle_in_transaction_seconds``, so another copy takes the
rows over once the lease has passed; the frozen copy, woken, finds them gone (its late
completion refused), and keeps running."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select

from comms_pipeline.store.models import details_t
from tests import factories

N = 100
BATCH = 50


def _wait(predicate, limit: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def _completed(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(details_t.c.state == "completed")
                            ).scalar_one()


def test_a_daemon_frozen_in_its_finish_loses_its_rows_to_another_copy(pg_url, tmp_path):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        factories.bulk_sms_details(conn, N, factories.contact(conn))
    var = tmp_path / "var"
    marker = tmp_path / "frozen"
    env = dict(os.environ, COMMS_DATABASE_URL=pg_url, COMMS_PATHS_VAR=str(var),
               COMMS_CLAIMS_LEASE_SECONDS="2", COMMS_DAEMONS_BATCH_SIZE=str(BATCH),
               COMMS_DAEMONS_POLL_INTERVAL="0.2", COMMS_DAEMONS_HEARTBEAT_SECONDS="1",
               COMMS_DATABASE_IDLE_IN_TRANSACTION_SECONDS="1")
    cmd = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs", "daemon", "run",
           "sms"]
    log_a = (tmp_path / "a.log").open("w+")
    frozen = subprocess.Popen(cmd, env={**env, "COMMS_TEST_FREEZE_IN_FINISH": str(marker)},
                              stdout=log_a, stderr=subprocess.STDOUT)
    other = None
    try:
        _wait(marker.exists, 60, "the first daemon to freeze inside its finish")
        other = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        # Every row, the frozen copy's locked batch included, is completed by the other copy.
        _wait(lambda: _completed(engine) == N, 120, "the other copy to take every row over")
        assert frozen.poll() is None  # still frozen, not dead
        frozen.send_signal(signal.SIGCONT)
        _wait(lambda: "claims.lease_lost" in (tmp_path / "a.log").read_text(), 60,
              "the woken copy to find its batch gone")
        assert frozen.poll() is None  # it rode out its lost session
    finally:
        for p in (frozen, other):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in (frozen, other):
            if p is not None:
                p.wait(timeout=60)
    with engine.connect() as conn:
        claimed = conn.execute(select(func.count()).where(details_t.c.claimed_by.isnot(None))
                               ).scalar_one()
    engine.dispose()
    sent = collections.Counter()
    for path in (var / "out" / "sms").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            sent[json.loads(line)["detail_id"]] += 1
    assert frozen.returncode == 0 and other.returncode == 0
    assert claimed == 0
    assert len(sent) == N
    assert sum(c - 1 for c in sent.values()) <= BATCH  # only the frozen batch, sent twice


def test_pipeline_sessions_carry_the_timeouts_and_keepalives(pg_url, tmp_path):
    from comms_pipeline.store.db import engine_for
    from tests.conftest import make_settings

    settings = make_settings(pg_url, tmp_path / "var", COMMS_DATABASE_LOCK_TIMEOUT_SECONDS="5")
    engine = engine_for(settings)
    try:
        with engine.connect() as conn:
            shown = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in (
                "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
                "TimeZone")}
            dsn = conn.connection.dbapi_connection.get_dsn_parameters()
    finally:
        engine.dispose()
    assert shown == {"statement_timeout": "5min", "lock_timeout": "5s",
                     "idle_in_transaction_session_timeout": "1min", "TimeZone": "UTC"}
    assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["connect_timeout"]) == (
        "1", "30", "10")
