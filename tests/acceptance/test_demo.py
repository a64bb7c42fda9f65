"""`comms demo` end to end in a subprocess, then `comms status --json` on what it left."""

from __future__ import annotations

import email
import json
import os
import re
import sqlite3
import subprocess
import sys
from email import policy

import pytest
from pypdf import PdfReader

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.template_files import builtin_dirs, load_template_dir
from comms_pipeline.rendering.formatters import Formatters


def _comms(env, *args):
    return subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of ``comms demo`` shared by the tests of this module."""
    tmp_path = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, COMMS_PATHS_VAR=str(tmp_path / "var"))
    run = _comms(env, "--json-logs", "--log-level", "debug", "demo")
    return env, run, tmp_path / "var"


def test_demo_runs_everything_and_explains_the_bad_ones(demo):
    env, run, var = demo
    env = dict(env)
    out, logs = run.stdout, run.stderr
    for reason in ("UNKNOWN_TEMPLATE", "UNKNOWN_CONTACT", "INVALID_ADDRESS", "NO_ADDRESS",
                   "OPTED_OUT", "EXPIRED"):
        assert reason in out
    assert "requests list --status error" in out  # the plain commands see the demo's data
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


#: Signs of a merge field that rendered empty, whatever the template.
HOLES = re.compile(r"Dear ,|Αγαπητέ/ή ,|\S  +\S|<(strong|b|p|li|td|h2)>\s*</\1>|\(\)")
TAG = re.compile(r"#[a-z_]+(?:\.[a-z_]+)+|\$fmt\.\w+\([^()]*\)|\$!?\{?[a-z_]+(?:\.[a-z_]+)+\}?")


def fixed_pairs() -> set[str]:
    """The templates' fixed text either side of each tag, joined as an empty tag leaves it
    (``for  has been``): none of these may appear in an output."""
    pairs = set()
    for folder in builtin_dirs():
        for variant in load_template_dir(folder).variants:
            for source in (variant.body_text, variant.body_html, variant.subject):
                for line in (source or "").splitlines():
                    pieces = TAG.split(line)
                    for left, right in zip(pieces, pieces[1:], strict=False):
                        left, right = left[-8:], right[:8]
                        if len(left.strip()) >= 2 and len(right.strip()) >= 2 \
                                and "#" not in left + right and "$" not in left + right:
                            pairs.add(left + right)
    return pairs


def test_no_demo_output_has_an_empty_merge_field(demo):
    _, _, var = demo
    outputs: list[tuple[str, str]] = []
    for path in sorted((var / "out" / "email").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        outputs.append((path.name, message["Subject"]))
        for kind in ("plain", "html"):
            body = message.get_body((kind,))
            if body is not None:
                outputs.append((f"{path.name} {kind}", body.get_content()))
    for path in sorted((var / "out").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            outputs.append((path.name, data.get("text") or data.get("body") or json.dumps(data)))
    for path in sorted((var / "out" / "letters").glob("*/*.pdf")):
        text = "\n".join(p.extract_text() for p in PdfReader(path).pages)
        outputs.append((path.name, text))
    assert len(outputs) >= 15
    pairs = fixed_pairs()
    assert len(pairs) > 20
    for name, text in outputs:
        assert not HOLES.search(text), (name, HOLES.search(text), text)
        found = [p for p in pairs if p in text]
        assert found == [], (name, found)


def test_greek_demo_documents_speak_greek(demo):
    """Months, dates and amounts through the contact's language (Babel's CLDR data)."""
    _, _, var = demo
    bills = []
    for path in (var / "out" / "email").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if message["To"].addresses[0].addr_spec == "eleni@example.com":
            bills.append(message.get_body(("plain",)).get_content())
    assert len(bills) == 1
    assert "για την περίοδο Νοεμβρίου 2026" in bills[0]
    assert "έως τις 15 Δεκεμβρίου 2026" in bills[0] and "48,90 €" in bills[0]
    texts = [json.loads(line)["text"] for path in (var / "out" / "sms").glob("*.jsonl")
             for line in path.read_text().splitlines()]
    assert any("ύψους 25,00 € καταχωρήθηκε στις 23/11/2026" in t for t in texts), texts
    letters = [PdfReader(p) for p in sorted((var / "out" / "letters").glob("*/*.pdf"))]
    greek = [r for r in letters if r.trailer["/Root"]["/Lang"] == "el"]
    assert len(greek) == 1
    text = "\n".join(page.extract_text() for page in greek[0].pages).replace("\xa0", " ")
    assert Formatters("el").date(utcnow().date(), "long") in text  # "1 Δεκεμβρίου 2026"
    assert "Σελίδα 1 από 1" in text and "Αριθμός αναφοράς:" in text
    assert "25,00 €" in text and "Nicosia" in text and "London" not in text
    assert greek[0].metadata.author == "Company ZX Co."


def test_demo_keeps_a_database_it_did_not_make(tmp_path):
    env = dict(os.environ, COMMS_PATHS_VAR=str(tmp_path / "var"))
    _comms(env, "db", "upgrade")
    _comms(env, "contacts", "add", "C-1", "--name", "Real customer")
    proc = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", "demo"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "the demo did not make" in proc.stderr
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(tmp_path / "var" / "comms.db") as conn:
        assert conn.execute("SELECT ref FROM contacts").fetchall() == [("C-1",)]
