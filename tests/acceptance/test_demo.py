"""`comms demo` end to end in a subprocess, then `comms status --json` on what it left."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
from email import policy

from pypdf import PdfReader


def _comms(env, *args):
    return subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=True)


def test_demo_runs_everything_and_explains_the_bad_ones(tmp_path):
    env = dict(os.environ, COMMS_PATHS_VAR=str(tmp_path / "var"))
    run = _comms(env, "--json-logs", "--log-level", "debug", "demo")
    out, logs = run.stdout, run.stderr
    var = tmp_path / "var" / "demo"
    for reason in ("UNKNOWN_TEMPLATE", "UNKNOWN_CONTACT", "INVALID_ADDRESS", "NO_ADDRESS",
                   "OPTED_OUT", "EXPIRED"):
        assert reason in out
    env.update(COMMS_PATHS_VAR=str(var), COMMS_DATABASE_URL=f"sqlite:///{var}/comms.db")
    status = json.loads(_comms(env, "status", "--json").stdout)
    headers = status["headers"]
    assert headers["awaiting_processing"] == headers["awaiting_event_resolution"] == 0
    assert headers["error"] == 2 and headers["not_sent"] == 2 and headers["opted_out"] == 1
    assert status["details"]["Pending"] == 0
    assert status["details"]["Rejected"] == 2 and status["details"]["Completed"] >= 10
    assert status["documents"]["awaiting_storage"] == 0
    rejected = json.loads(_comms(env, "queue", "list", "--state", "Rejected", "--json").stdout)
    assert all(r["error_code"] and r["error_description"] for r in rejected)
    message = email.message_from_bytes((var / "out" / "email" / "1.eml").read_bytes(),
                                       policy=policy.default)
    assert message["To"].addresses[0].addr_spec == "maria.georgiou@example.com"
    assert message.get_body(("plain",)).get_content().startswith("Αγαπητέ/ή Maria Georgiou")
    assert "email.merged" in logs and "sms.sent" in logs  # the logs are there ...
    texts = [json.loads(line)["text"] for path in (var / "out" / "sms").glob("*.jsonl")
             for line in path.read_text().splitlines()]
    subjects = [email.message_from_bytes(p.read_bytes(), policy=policy.default)["Subject"]
                for p in (var / "out" / "email").glob("*.eml")]
    assert texts and subjects
    leaked = [t for t in texts + subjects if t in logs or json.dumps(t)[1:-1] in logs]
    assert leaked == []  # ... and carry no message body or subject
    letters = sorted((var / "out" / "letters").glob("*/*.pdf"))
    assert len(letters) == 2
    texts = [PdfReader(p).pages[0].extract_text() for p in letters]
    assert any("4 Ledra Street" in t for t in texts) and any("Makariou" in t for t in texts)
