"""``comms daemon run|start bounces`` as an operator runs it: the receiver listens, shows in
``comms daemon status``, takes a report over SMTP and stops on SIGTERM."""

from __future__ import annotations

import json
import smtplib
import time

from comms_pipeline.store.db import upgrade
from tests.acceptance.test_cli import _wait_status, comms  # noqa: F401 (the fixture)
from tests.integration.bounce_support import CORPUS
from tests.servers.smtp import free_port


def test_bounces_daemon_starts_shows_in_status_receives_and_stops(comms):  # noqa: F811
    port = free_port()
    env = {"COMMS_BOUNCES_DOMAIN": "bounces.example.com",
           "COMMS_BOUNCES_LISTEN_PORT": str(port), "COMMS_LINKS_SECRET": "s"}
    upgrade(comms.url)
    assert "started bounces-1" in comms("daemon", "start", "bounces", extra_env=env).stdout
    proc = _wait_status(lambda *a, **k: comms(*a, extra_env=env, **k), 0, {"running"})
    [row] = json.loads(proc.stdout)["daemons"]
    assert (row["name"], row["state"]) == ("bounces-1", "running")
    deadline = time.monotonic() + 30  # the listener may bind just after its first beat
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                refused = smtp.sendmail("", ["bounces+1.000000000000@bounces.example.com"],
                                        (CORPUS / "yahoo_arf_abuse.eml").read_bytes()
                                        .replace(b"\n", b"\r\n"))
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert refused == {}
    assert "stopped" in comms("daemon", "stop", "bounces", extra_env=env).stdout

