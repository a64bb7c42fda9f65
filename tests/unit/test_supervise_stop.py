"""``comms daemon stop`` reports every copy truly, whichever copy exits first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from comms_pipeline.runtime import supervisor as supervise

# Copy 1 stops only after copy 2 has exited (so the stop loop, waiting for copy 1, finds
# copy 2 already gone): before the fix, copy 2 was reported "not running".
SLOW = textwrap.dedent("""
    import os, signal, sys, time
    other = int(sys.argv[1])
    def gone():
        try:
            return open(f"/proc/{other}/stat").read().rsplit(")", 1)[-1].split()[0] == "Z"
        except OSError:
            return True
    def on_term(*_):
        while not gone():
            time.sleep(0.01)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


def test_each_signalled_copy_is_reported_stopped(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fast = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    slow = subprocess.Popen([sys.executable, "-c", SLOW, str(fast.pid)], stdout=subprocess.PIPE,
                            text=True)
    assert slow.stdout.readline().strip() == "ready"
    (run / "sms-1.pid").write_text(f"{slow.pid}\n")
    (run / "sms-2.pid").write_text(f"{fast.pid}\n")
    (run / "sms-3.pid").write_text("999999999\n")
    try:
        results = supervise.stop(tmp_path, "sms", timeout=60)
    finally:
        for proc in (fast, slow):
            proc.kill()
            proc.wait()
    assert [(inst.copy, what) for inst, what in results] == [
        (1, "stopped"), (2, "stopped"), (3, "not running")]
    assert list(run.glob("*.pid")) == []
