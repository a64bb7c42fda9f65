"""Operators' mistakes, through the ``comms`` command line: one line naming the cause and the
fix, a distinct exit code, and never a traceback (unless ``--debug`` asks for it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from comms_pipeline.cli import errors as codes
from tests.conftest import PG_URL


def _run(cwd, *args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    return subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *args], cwd=cwd,
                          env={**base, **env}, capture_output=True, text=True, timeout=120)


def _pg(**parts) -> str:
    return make_url(PG_URL).set(**parts).render_as_string(hide_password=False)


def _assert_one_line(proc, exit_code: int, *words: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == exit_code, output
    assert "Traceback" not in output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


MISTAKES = [
    # (what, environment, arguments, exit code, words the message must hold)
    ("schema not created yet", {}, ("status",), codes.EXIT_DB_NOT_MIGRATED,
     ("no schema", "comms db upgrade")),
    ("typo in a variable's name", {"COMMS_DATABSE_URL": "sqlite:///x.db"}, ("status",),
     codes.EXIT_USAGE, ("COMMS_DATABSE_URL", "did you mean COMMS_DATABASE_URL")),
    ("unsupported URL scheme", {"COMMS_DATABASE_URL": "mysql://db/comms"}, ("status",),
     codes.EXIT_USAGE, ("database.url", "'mysql' is not supported")),
    ("no such configuration file", {}, ("--config", "nope.toml", "status"), codes.EXIT_USAGE,
     ("nope.toml",)),
    ("DKIM key file missing", {"COMMS_GATEWAYS_EMAIL_BACKEND": "smtp",
                               "COMMS_GATEWAYS_EMAIL_DKIM_SELECTOR": "s1",
                               "COMMS_GATEWAYS_EMAIL_DKIM_DOMAIN": "example.com",
                               "COMMS_GATEWAYS_EMAIL_DKIM_KEY_FILE": "/nonexistent/dkim.pem"},
     ("daemon", "run", "email", "--once"), codes.EXIT_GATEWAY_CONFIG,
     ("gateways.email.dkim_key_file", "/nonexistent/dkim.pem")),
]


@pytest.mark.parametrize(("what", "env", "args", "exit_code", "words"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_line_with_its_exit_code(tmp_path, what, env, args, exit_code, words):
    _assert_one_line(_run(tmp_path, *args, **env), exit_code, *words)


def test_duplicate_contact_is_a_conflict_on_sqlite(tmp_path):
    assert _run(tmp_path, "db", "upgrade").returncode == 0
    assert _run(tmp_path, "contacts", "add", "C-1", "--name", "Maria").returncode == 0
    _assert_one_line(_run(tmp_path, "contacts", "add", "C-1", "--name", "Maria"),
                     codes.EXIT_CONFLICT, "a contact with this ref", "already exists")


def test_postgres_urls_as_people_write_them_and_a_duplicate_there(tmp_path, pg_url):
    """``postgres://`` (libpq's and most tools' spelling) reaches the same database."""
    url = make_url(pg_url)
    written = f"postgres://{url.username}@{url.host}:{url.port}/{url.database}"
    assert _run(tmp_path, "contacts", "add", "C-1", "--name", "Maria",
                COMMS_DATABASE_URL=written).returncode == 0
    _assert_one_line(_run(tmp_path, "contacts", "add", "C-1", "--name", "Maria",
                          COMMS_DATABASE_URL=written.replace("postgres:", "postgresql:")),
                     codes.EXIT_CONFLICT, "a contact with this ref (C-1) already exists")


def test_postgres_missing_unreachable_and_refused(tmp_path, pg_url):
    _assert_one_line(_run(tmp_path, "status", COMMS_DATABASE_URL=_pg(database="comms_nosuch")),
                     codes.EXIT_DB_MISSING, "comms_nosuch does not exist", "createdb")
    _assert_one_line(_run(tmp_path, "status", COMMS_DATABASE_URL=_pg(host="127.0.0.1", port=1)),
                     codes.EXIT_DB_UNREACHABLE, "cannot reach the database", "Connection refused")
    _assert_one_line(_run(tmp_path, "status",
                          COMMS_DATABASE_URL=_pg(username="comms_no_such_role", password=None)),
                     codes.EXIT_PERMISSION, "refused access", "comms_no_such_role")


def test_debug_shows_the_traceback(tmp_path):
    proc = _run(tmp_path, "--debug", "status")
    assert proc.returncode == codes.EXIT_DB_NOT_MIGRATED
    assert "Traceback" in proc.stderr and "comms db upgrade" in proc.stderr
    proc = _run(tmp_path, "status", COMMS_DEBUG="1")
    assert "Traceback" in proc.stderr
