"""The ``comms`` command line, run in subprocesses as operators and cron would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine

from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.db import upgrade
from tests import factories


@pytest.fixture
def comms(tmp_path):
    var = tmp_path / "var"
    env = dict(os.environ, COMMS_PATHS_VAR=str(var),
               COMMS_DATABASE_URL=f"sqlite:///{var}/comms.db",
               COMMS_DAEMONS_HEARTBEAT_SECONDS="0.2", COMMS_DAEMONS_POLL_INTERVAL="0.1",
               COMMS_DAEMONS_STALE_AFTER_SECONDS="30")

    def run(*args, check=True, extra_env=None):
        proc = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args],
                              env={**env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"comms {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    run.var = var
    run.url = env["COMMS_DATABASE_URL"]
    return run


def _seed(url):
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.sms_template(conn)
    engine.dispose()


def test_trigger_monitor_send_and_status(comms):
    _seed(comms.url)
    comms("contacts", "add", "C-1", "--name", "Maria", "--phone", "+35799123456")
    out = comms("trigger", "--contact", "C-1", "--template", "SMS_HELLO",
                "--idempotency-key", "k1").stdout
    assert out.startswith("request header 1")
    assert comms("trigger", "--contact", "C-1", "--template", "SMS_HELLO",
                 "--idempotency-key", "k1").stdout.startswith("request header 1")
    refused = comms("trigger", "--contact", "C-404", "--template", "SMS_HELLO", check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        "Error: unknown contact 'C-404'"]
    comms("trigger", "--contact", "C-404", "--template", "SMS_HELLO", "--no-check")
    assert "2 handled" in comms("job", "run", "monitor").stdout
    assert "1 handled" in comms("daemon", "run", "sms", "--once").stdout
    status = json.loads(comms("status", "--json").stdout)
    assert status["headers"]["processed"] == 1 and status["headers"]["error"] == 1
    assert status["details"]["Completed"] == 1 and status["details"]["Pending"] == 0
    (line,) = (comms.var / "out" / "sms").glob("*.jsonl")
    assert json.loads(line.read_text())["text"] == "Hello Maria"
    listing = comms("queue", "list").stdout
    assert "Completed" in listing and "+35799123456" in listing
    assert "awaiting_send -> completed" in comms("queue", "show", "1").stdout


def test_invalid_configuration_names_the_key(comms):
    proc = comms("status", check=False, extra_env={"COMMS_DAEMONS_BATCH_SIZE": "lots"})
    assert proc.returncode == 2
    assert "daemons.batch_size" in proc.stderr


def test_unknown_job_is_a_usage_error(comms):
    proc = comms("job", "run", "nope", check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr


def _wait_status(comms, want_code, want_states=None, limit=30):
    """Poll ``daemon status`` until it exits ``want_code`` (and, if given, shows exactly
    ``want_states``: a copy may still be "starting", which is healthy, before its first beat)."""
    deadline = time.monotonic() + limit  # a safety net, not a timing assertion
    while True:
        proc = comms("daemon", "status", "--json", check=False)
        states = {d["state"] for d in json.loads(proc.stdout)["daemons"]} if proc.stdout else set()
        if proc.returncode == want_code and want_states in (None, states):
            return proc
        if time.monotonic() > deadline:
            return proc
        time.sleep(0.2)


def test_daemon_start_status_stop_and_dead_detection(comms):
    _seed(comms.url)
    out = comms("daemon", "start", "sms", "--copies", "2").stdout
    assert out.count("started sms-") == 2
    proc = _wait_status(comms, 0, {"running"})
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and {d["state"] for d in data["daemons"]} == {"running"}
    assert "already running" in comms("daemon", "start", "sms", "--copies", "2").stdout
    victim = data["daemons"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    proc = _wait_status(comms, 1)
    assert proc.returncode == 1
    states = {d["pid"]: d["state"] for d in json.loads(proc.stdout)["daemons"]}
    assert states[victim] == "dead"
    stopped = comms("daemon", "stop", "sms").stdout
    assert "stopped" in stopped and "not running" in stopped
    assert "nothing to stop" in comms("daemon", "stop").stdout


def test_help_explains(comms):
    out = comms("--help").stdout
    for word in ("daemon", "job", "trigger", "status", "queue", "scheduler", "demo"):
        assert word in out
    assert "--once" in comms("daemon", "run", "--help").stdout


def test_job_with_several_workers_drains_the_backlog_once(comms):
    _seed(comms.url)
    comms("contacts", "add", "C-1", "--name", "Maria", "--phone", "+35799123456")
    engine = create_engine(comms.url)
    for _ in range(300):
        trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    engine.dispose()
    out = comms("job", "run", "monitor", "--workers", "3", "--batch-size", "20").stdout
    assert "monitor: 300 handled" in out
    status = json.loads(comms("status", "--json").stdout)
    assert status["headers"]["processed"] == 300 and status["details_total"] == 300


def test_sigterm_stops_a_cron_job_gracefully(comms, tmp_path):
    """Under cron (no terminal, no progress bar) SIGTERM ends the job after its batch: exit 0,
    what was done is kept, nothing is left claimed for the lease to free."""
    from sqlalchemy import func, select

    from comms_pipeline.store.models import headers_t

    _seed(comms.url)
    comms("contacts", "add", "C-1", "--name", "Maria", "--phone", "+35799123456")
    engine = create_engine(comms.url)
    with engine.begin() as conn:
        conn.execute(headers_t.insert(), [{"contact_ref": "C-1", "template_code": "SMS_HELLO",
                                           "status": "awaiting_processing", "priority": 2}
                                          for _ in range(20_000)])
    env = dict(os.environ, COMMS_PATHS_VAR=str(comms.var), COMMS_DATABASE_URL=comms.url)
    proc = subprocess.Popen([sys.executable, "-m", "comms_pipeline.cli.main", "job", "run",
                             "monitor", "--no-progress", "--batch-size", "50"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def processed() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(headers_t).where(
                headers_t.c.status == "processed")).scalar_one()

    deadline = time.monotonic() + 60  # a safety net, not a timing assertion
    while processed() == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "worker.stopping" in out + err and "handled" in out
    with engine.connect() as conn:
        claimed = conn.execute(select(func.count()).select_from(headers_t).where(
            headers_t.c.claimed_by.isnot(None))).scalar_one()
    assert claimed == 0
    assert 0 < processed() < 20_000
    engine.dispose()
