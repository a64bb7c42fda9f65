"""Crash test: three SMS daemon processes on PostgreSQL work 20,000 entries while one of them
is killed with SIGKILL in the middle of a batch. Every entry must end in a terminal state,
none may be lost, and duplicates may only come from the killed daemon's claimed batch."""

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

N = 20_000
BATCH = 200


def _env(pg_url, var):
    env = dict(os.environ)
    env.update(COMMS_DATABASE_URL=pg_url, COMMS_PATHS_VAR=str(var),
               COMMS_CLAIMS_LEASE_SECONDS="3", COMMS_DAEMONS_BATCH_SIZE=str(BATCH),
               COMMS_DAEMONS_POLL_INTERVAL="0.2", COMMS_DAEMONS_HEARTBEAT_SECONDS="1")
    return env


def _counts(engine):
    with engine.connect() as conn:
        return dict(conn.execute(select(details_t.c.state, func.count())
                                 .group_by(details_t.c.state)).all())


def _holder_pids(engine):
    with engine.connect() as conn:
        holders = conn.execute(select(details_t.c.claimed_by, func.count())
                               .where(details_t.c.claimed_by.isnot(None))
                               .group_by(details_t.c.claimed_by)).all()
    return {int(claimed_by.rsplit(":", 1)[1]): count for claimed_by, count in holders}


def _wait(predicate, limit, what):
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


@pytest.mark.slow
def test_sigkill_mid_batch_loses_nothing(pg_url, tmp_path, capsys):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        cid = factories.contact(conn)
        factories.bulk_sms_details(conn, N, cid)
    var = tmp_path / "var"
    cmd = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs", "daemon", "run", "sms"]
    procs = [subprocess.Popen(cmd, env=_env(pg_url, var), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        _wait(lambda: _counts(engine).get("completed", 0) >= N // 10, 120, "a first tenth")
        victim, held_when_killed = None, 0

        def freeze_one_holding_a_claim():
            """SIGSTOP a daemon; keep it frozen only if it holds claims (mid-batch)."""
            nonlocal victim, held_when_killed
            held = _holder_pids(engine)
            candidate = next((p for p in procs if held.get(p.pid)), None)
            if candidate is None:
                return False
            candidate.send_signal(signal.SIGSTOP)
            frozen_claims = _holder_pids(engine).get(candidate.pid, 0)
            if frozen_claims:
                victim, held_when_killed = candidate, frozen_claims
                return True
            candidate.send_signal(signal.SIGCONT)
            return False

        _wait(freeze_one_holding_a_claim, 60, "a daemon caught holding a claim")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert held_when_killed > 0
        _wait(lambda: _counts(engine).get("awaiting_send", 0) == 0, 240, "the backlog to drain")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    counts = _counts(engine)
    with engine.connect() as conn:
        stuck = conn.execute(select(func.count()).where(details_t.c.claimed_by.isnot(None))
                             ).scalar_one()
    engine.dispose()
    sent = collections.Counter()
    for path in (var / "out" / "sms").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            sent[json.loads(line)["detail_id"]] += 1
    duplicates = sum(c - 1 for c in sent.values() if c > 1)
    with capsys.disabled():
        print(f"\ncrash test: {N} entries, killed pid {victim.pid} holding {held_when_killed} "
              f"claims; final states {counts}; duplicates sent: {duplicates} "
              f"(bound: one batch = {BATCH})")
    assert counts == {"completed": N}
    assert stuck == 0
    assert len(sent) == N, "an entry was never sent"
    assert duplicates <= BATCH
    assert [p.returncode for p in procs if p is not victim] == [0, 0]
