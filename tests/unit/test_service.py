"""``comms run``'s supervisor: what it plans from ``[run]``, and a child that keeps dying is
restarted with a backoff that doubles up to its ceiling."""

from __future__ import annotations

import sys
import time

from comms_pipeline.runtime.service import Child, Service, plan
from tests.conftest import load_test_settings


def test_plan_follows_the_run_section(tmp_path):
    settings = load_test_settings(COMMS_PATHS_VAR=str(tmp_path),
                                  COMMS_RUN_WORKERS='["monitor"]',
                                  COMMS_RUN_DAEMONS='{"sms": 2, "email": 0, "letter": 0, '
                                                    '"storage": 1, "push-handset": 0, '
                                                    '"push-external": 0}')
    children = {c.key: c.argv[1:] for c in plan(settings, ["comms"])}
    assert children == {
        "monitor-1": ["job", "run", "monitor", "--follow", "--no-progress"],
        "sms-1": ["daemon", "run", "sms"], "sms-2": ["daemon", "run", "sms-2"],
        "storage-1": ["daemon", "run", "storage"],
        "scheduler": ["scheduler", "run", "--skip-job", "monitor"]}
    assert all(c.pidfile for c in plan(settings, ["comms"]) if c.key != "scheduler")


def test_a_child_that_keeps_dying_is_restarted_with_a_doubling_backoff(tmp_path):
    settings = load_test_settings(COMMS_PATHS_VAR=str(tmp_path), COMMS_RUN_RESTART_SECONDS="0.1",
                                  COMMS_RUN_RESTART_MAX_SECONDS="0.4")
    child = Child("dies", [sys.executable, "-c", "raise SystemExit(3)"],
                  tmp_path / "run" / "dies-1.pid")
    service = Service(settings, [child])
    service._spawn(child)
    deadline = time.monotonic() + 30  # a safety net, not a timing check
    while child.restarts < 4 and time.monotonic() < deadline:
        service.tick()
        time.sleep(0.02)
    assert child.restarts == 4
    assert set(child.history) == {3}
    # Doubled at each death in a row (it never ran restart_reset_seconds), up to the ceiling.
    assert child.delays[:4] == [0.1, 0.2, 0.4, 0.4]
    assert service._stop_children() == []
    assert not child.pidfile.exists()  # type: ignore[union-attr]
