"""``comms requests list|show``: every request's fate from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import create_engine

from comms_pipeline.store.db import upgrade
from tests import factories


def _comms(var, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    proc = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args],
                          env={**env, "COMMS_PATHS_VAR": str(var)}, capture_output=True,
                          text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_list_and_show_say_why_a_request_was_not_sent(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    url = f"sqlite:///{var}/comms.db"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.sms_template(conn)
    engine.dispose()
    _comms(var, "contacts", "add", "C-1", "--name", "Maria", "--phone", "+35799123456")
    _comms(var, "trigger", "--contact", "C-1", "--template", "SMS_HELLO")
    _comms(var, "trigger", "--contact", "C-404", "--template", "SMS_HELLO", "--no-check")
    _comms(var, "job", "run", "monitor")

    listing = _comms(var, "requests", "list", "--status", "error").stdout.splitlines()
    assert listing[0].split()[:3] == ["ID", "CREATED", "CONTACT"]  # a header row
    [row] = listing[1:]
    assert row.split()[0] == "2" and "UNKNOWN_CONTACT" in row and "C-404" in row
    assert _comms(var, "requests", "list", "--code", "NOPE").stdout.strip() == "no requests match"
    mine = json.loads(_comms(var, "requests", "list", "--contact", "C-1", "--since", "1h",
                             "--json").stdout)
    assert [(r["id"], r["status"]) for r in mine] == [(1, "processed")]

    shown = _comms(var, "requests", "show", "1").stdout
    assert "status           processed" in shown
    assert "+35799123456" in shown and "Pending" in shown
    assert "request      awaiting_processing -> processed" in shown
    failed = _comms(var, "requests", "show", "2").stdout
    assert "UNKNOWN_CONTACT" in failed and "queue entries (0)" in failed

    bad = _comms(var, "requests", "list", "--status", "lost", check=False)
    assert bad.returncode == 2 and "no request status 'lost'" in bad.stderr
    missing = _comms(var, "requests", "show", "99", check=False)
    assert missing.returncode == 1 and "no request 99" in missing.stderr
