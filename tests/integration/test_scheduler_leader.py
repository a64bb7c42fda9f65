"""One scheduler at a time, with a standby (issue 10 item 6), on SQLite (a lock file) and
PostgreSQL (an advisory lock): two ``comms scheduler run`` processes, the second stands by;
the leader is SIGKILLed and the standby takes over and fires the next job; no scheduled
time is fired twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

WAIT = 90  # generous bound for the events below on a loaded machine (not a measurement)


class Scheduler:
    """A ``comms scheduler run`` subprocess whose JSON log lines are collected."""

    def __init__(self, config: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comms_pipeline.cli.main", "--config", config,
             "--json-logs", "scheduler", "run"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(ValueError):  # a line that is not a log event
                self.events.append(json.loads(line))

    def named(self, event: str) -> list[dict]:
        return [e for e in list(self.events) if e.get("event") == event]

    def fired(self) -> list[tuple[str, str]]:
        return [(e["job"], e["scheduled_for"]) for e in self.named("scheduler.job_fired")
                if e.get("job") == "expiry-sweep"]

    def wait_for(self, what, label: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + WAIT
        while not what():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{label}: not seen (exit {self.proc.poll()}):\n"
                                     + "".join(self.raw[-40:]))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)


def _config(tmp_path, url: str) -> str:
    config = tmp_path / "comms.toml"
    config.write_text(f"""
[database]
url = "{url}"
[paths]
var = "{tmp_path / 'var'}"
[scheduler]
standby_poll_seconds = 0.2
leader_check_seconds = 1
[scheduler.jobs]
monitor = ""
email-monitor = ""
letter-monitor = ""
expiry-sweep = ""
[scheduler.intervals]
expiry-sweep = 1
""", encoding="utf-8")
    return str(config)


def test_a_standby_takes_over_when_the_leader_is_killed(db_url, tmp_path):
    config = _config(tmp_path, db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    leader = Scheduler(config, env)
    standby = None
    try:
        leader.wait_for(lambda: leader.named("scheduler.leader"), "the first one leads")
        standby = Scheduler(config, env)
        standby.wait_for(lambda: standby.named("scheduler.standby"), "the second stands by")
        leader.wait_for(lambda: len(leader.fired()) >= 2, "the leader fires the job")
        assert standby.fired() == [] and not standby.named("scheduler.leader")

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(timeout=30)
        standby.wait_for(lambda: standby.named("scheduler.leader"), "the standby takes over")
        standby.wait_for(lambda: len(standby.fired()) >= 2, "the standby fires the next job")
    finally:
        if leader.proc.poll() is None:
            leader.proc.kill()
        leader.stop()
        if standby is not None:
            standby.stop()
    fires = leader.fired() + standby.fired()
    twice = [at for at, n in Counter(fires).items() if n > 1]
    assert twice == [], f"fired twice: {twice}"
    assert not standby.named("scheduler.job_failed"), "".join(standby.raw[-40:])


def test_a_leader_whose_lock_session_ends_stops_and_leads_again(pg_url, tmp_path):
    """A database restart or a cut connection ends the session holding the advisory lock:
    the leader notices, stops firing (``scheduler.leader_lost``) and takes the lock again."""
    from sqlalchemy import create_engine, text

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    one = Scheduler(_config(tmp_path, pg_url), env)
    engine = create_engine(pg_url)
    try:
        one.wait_for(lambda: one.fired(), "it leads and fires")
        with engine.begin() as conn:
            ended = conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")).all()
        assert ended == [(True,)]
        one.wait_for(lambda: one.named("scheduler.leader_lost"), "it sees the lock lost")
        one.wait_for(lambda: len(one.named("scheduler.leader")) == 2, "it leads again")
        before = len(one.fired())
        one.wait_for(lambda: len(one.fired()) > before, "and fires again")
    finally:
        engine.dispose()
        one.stop()
    assert one.proc.returncode == 0, "".join(one.raw[-40:])
