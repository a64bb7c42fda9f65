"""Every command documented to exit non-zero on failure does so, run as cron and systemd run
it: ``python -m comms_pipeline.cli.main ...`` in a subprocess (issue 16 item 6).

In-process tests (``CliRunner``) did not see the bug: click in standalone mode exits with an
``Exit``'s code, while ``main()`` ran it with ``standalone_mode=False`` and threw it away.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from comms_pipeline.store.db import upgrade
from tests import factories


@pytest.fixture
def comms(tmp_path):
    var = tmp_path / "var"
    env = dict(os.environ, COMMS_PATHS_VAR=str(var),
               COMMS_DATABASE_URL=f"sqlite:///{var}/comms.db",
               COMMS_DAEMONS_POLL_INTERVAL="0.1", COMMS_CLAIMS_MAX_ATTEMPTS="5")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args],
                              env=env, capture_output=True, text=True, timeout=120)

    var.mkdir()
    run.url = env["COMMS_DATABASE_URL"]
    run.var = var
    upgrade(run.url)
    return run


def _sql(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
        for stmt in statements:
            conn.execute(text(stmt))
    engine.dispose()


def test_job_run_with_a_failed_batch_exits_1(comms):
    _sql(comms.url, "INSERT INTO request_headers (contact_ref, template_code, entities) "
                    "VALUES ('C-1', 'SMS_HELLO', '\"oops\"')")
    proc = comms("job", "run", "monitor", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: monitor: 1 batch(es) failed" in proc.stderr
    ok = comms("job", "run", "expiry-sweep", "--no-progress")
    assert ok.returncode == 0, ok.stderr


def test_daemon_run_once_with_a_failed_batch_exits_1(comms):
    _sql(comms.url)
    assert comms("trigger", "--contact", "C-1", "--template", "SMS_HELLO").returncode == 0
    assert comms("job", "run", "monitor", "--no-progress").returncode == 0
    # An entry the daemon cannot work on (its text is not text): the handler raises.
    engine = create_engine(comms.url)
    with engine.begin() as conn:
        body = conn.execute(text("SELECT body FROM request_details")).scalar_one()
        conn.execute(text("UPDATE request_details SET body = X'FFFE'"))  # bytes, not text
    engine.dispose()
    proc = comms("daemon", "run", "sms", "--once")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: sms: 1 batch(es) failed" in proc.stderr
    engine = create_engine(comms.url)
    with engine.begin() as conn:  # the text is back and the retry's backoff has passed
        conn.execute(text("UPDATE request_details SET body = :b, next_attempt_at = NULL"),
                     {"b": body})
    engine.dispose()
    ok = comms("daemon", "run", "sms", "--once")
    assert ok.returncode == 0 and "sms: 1 handled" in ok.stdout, ok.stderr


def _template_dir(root: Path, sms_text: str) -> Path:
    folder = root / "low_balance"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "template.toml").write_text(
        'code = "LOW_BALANCE"\nname = "Low balance"\nmedia = "sms"\n'
        'referring_entities = ["wallet"]\n', encoding="utf-8")
    (folder / "en.txt").write_text(sms_text + "\n", encoding="utf-8")
    return folder


def test_templates_validate_exits_1_on_errors(comms, tmp_path):
    good = comms("templates", "validate", str(_template_dir(tmp_path / "good",
                                                            "Wallet #wallet.number is low.")))
    assert good.returncode == 0, good.stdout + good.stderr
    bad = comms("templates", "validate", str(_template_dir(tmp_path / "bad", "#wallet.numbr")))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "LOW_BALANCE: 1 error(s)" in bad.stdout
    unread = comms("templates", "validate", "NO_SUCH_TEMPLATE")
    assert unread.returncode == 1 and "NO_SUCH_TEMPLATE" in unread.stderr


def test_templates_validate_strict_exits_1_on_warnings(comms, tmp_path):
    """A parameter the template does not declare is a warning: allowed, unless --strict."""
    folder = _template_dir(tmp_path, "Wallet #wallet.number: #param.top_up_hint")
    lenient = comms("templates", "validate", str(folder))
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "LOW_BALANCE: 0 error(s), 1 warning(s)" in lenient.stdout
    strict = comms("templates", "validate", "--strict", str(folder))
    assert strict.returncode == 1, strict.stdout + strict.stderr
    clean = _template_dir(tmp_path / "clean", "Wallet #wallet.number is low.")
    assert comms("templates", "validate", "--strict", str(clean)).returncode == 0


def test_apply_status_with_a_refused_row_exits_1(comms, tmp_path):
    assert comms("external-systems", "add", "CAS", "--name", "CA system").returncode == 0
    path = tmp_path / "ack.csv"
    path.write_text("entry_id,status,error_code,error_description\n999,Sent,,\n")
    proc = comms("external-systems", "apply-status", str(path), "--system", "CAS")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0 entries updated, 1 refused" in proc.stdout


def test_usage_and_configuration_errors_exit_2_and_help_exits_0(comms):
    assert comms("job", "run", "nope").returncode == 2
    assert comms("--help").returncode == 0
    assert comms("job", "run", "--help").returncode == 0


def test_queue_retry_of_a_permanent_rejection_exits_1(comms):
    engine = create_engine(comms.url)
    with engine.begin() as conn:
        factories.contact(conn, phone="12")
        factories.sms_template(conn)
    engine.dispose()
    assert comms("trigger", "--contact", "C-1", "--template", "SMS_HELLO").returncode == 0
    assert comms("job", "run", "monitor", "--no-progress").returncode == 0
    proc = comms("queue", "retry", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not retried 1: rejected INVALID_ADDRESS" in proc.stdout


def test_a_second_notification_run_of_one_period_exits_1(comms):
    from comms_pipeline.notifications.types import Definitions, TypeDef, save_definitions

    _sql(comms.url)
    engine = create_engine(comms.url)
    with engine.begin() as conn:
        save_definitions(conn, Definitions({}, {"HELLO": TypeDef(
            name="Hello", classification="customer_care", entity="contact_information",
            template="SMS_HELLO",
            population_query="SELECT 1 AS recipient_key, 'C-1' AS contact_ref")}, {}))
    engine.dispose()
    first = comms("notifications", "run", "HELLO", "--no-progress")
    assert first.returncode == 0 and "created 1" in first.stdout, first.stderr
    again = comms("notifications", "run", "HELLO", "--no-progress")
    assert again.returncode == 1 and "already finished" in again.stderr
    other = comms("notifications", "run", "HELLO", "--no-progress", "--run-key", "resend-1")
    assert other.returncode == 0 and "created 1" in other.stdout, other.stderr
