"""Shared fixtures: settings and a migrated database on SQLite and on PostgreSQL.

PostgreSQL comes from ``COMMS_TEST_PG_URL`` (default: postgres on 127.0.0.1:5432). A migrated
template database is built once per session and every test gets its own copy with
``CREATE DATABASE ... TEMPLATE``. When ``CI`` is set an unreachable server fails the run;
on a developer's machine the PostgreSQL half of the suite is skipped with the reason.

The loopback servers' fixtures (``tests/servers/``) are registered once here through
``pytest_plugins``, so a test names the fixture as an argument and imports nothing for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from comms_pipeline.settings.config import load_settings
from comms_pipeline.store import db as dbmod

# tests.servers.smtp first: pgcluster and sftp import it, and a plugin module imported before
# its registration cannot have its asserts rewritten (a warning, an error in this suite).
pytest_plugins = [
    "tests.servers.smtp",
    "tests.servers.blackhole",
    "tests.servers.http_gateways",
    "tests.servers.pgcluster",
    "tests.servers.s3",
    "tests.servers.sftp",
    "tests.servers.smpp",
    "tests.servers.web_app",
]

PG_URL = os.environ.get("COMMS_TEST_PG_URL",
                        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = bool(os.environ.get("CI"))
TEMPLATE_DB = f"comms_tpl_{os.getpid()}"


@pytest.fixture(autouse=True)
def _structlog_as_it_came():
    """A test that runs the CLI configures logging for the stdout it had; the next test's
    capsys would then see nothing. Every test starts from structlog's defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _signal_handlers_as_they_were():
    """A test running a Runner in the main thread installs its SIGTERM/SIGINT handlers (they
    only set an event); they must not outlive the test: a process forked later (an API
    server) would then ignore the SIGTERM that ends it, and the session wait for it."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _pg_admin():
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def require_service(ok: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a real server the test needs is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")  # only outside CI: in CI the line above fails


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    dbmod.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template():
    try:
        admin = _pg_admin()
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        require_service(False, f"PostgreSQL at {PG_URL} ({exc.__class__.__name__})")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"'))
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE_DB}"'))
    url = make_url(PG_URL).set(database=TEMPLATE_DB).render_as_string(hide_password=False)
    dbmod.upgrade(url)
    yield TEMPLATE_DB
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)'))
    admin.dispose()


def _fresh_pg(template: str) -> tuple[str, str]:
    name = f"comms_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return name, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop_pg(name: str) -> None:
    dbmod._cached_engine.cache_clear()
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, sqlite_template):
    """A freshly migrated database URL, on each backend in turn."""
    if request.param == "sqlite":
        path = tmp_path / "comms.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name, url = _fresh_pg(template)
    yield url
    _drop_pg(name)


@pytest.fixture
def pg_url(tmp_path, request):
    """A freshly migrated PostgreSQL database URL (for tests that need PostgreSQL only)."""
    template = request.getfixturevalue("pg_template")
    name, url = _fresh_pg(template)
    yield url
    _drop_pg(name)


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template):
    path = tmp_path / "comms.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


#: The repository's configuration file. Tests load it by its absolute path: left to
#: ``load_settings(path=None)`` the file is found only when the working directory is the
#: repository root, so settings (the default country, for one) would depend on where pytest runs.
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "comms.toml"


def load_test_settings(**env: str):  # type: ignore[no-untyped-def]
    """Settings from the repository's config and ``env`` only (never ``os.environ``), the same
    from whichever folder the suite is run; ``COMMS_CONFIG`` in ``env`` names another file."""
    return load_settings(path=env.get("COMMS_CONFIG", REPO_CONFIG), environ=env)


def make_settings(url: str, var: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_test_settings(COMMS_DATABASE_URL=url, COMMS_PATHS_VAR=str(var), **env)


@pytest.fixture
def make_engine_for(tmp_path):
    """``build(url, **COMMS_env)`` -> (settings, engine) for a test database; engines are
    disposed when the test ends."""
    engines = []

    def build(url: str, **env: str):  # type: ignore[no-untyped-def]
        settings = make_settings(url, tmp_path / "var", **env)
        engine = dbmod.make_engine(settings.database_url)
        engines.append(engine)
        return settings, engine

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def settings(db_url, tmp_path):
    return make_settings(db_url, tmp_path / "var")


@pytest.fixture
def engine(settings):
    engine = dbmod.make_engine(settings.database_url)
    yield engine
    engine.dispose()
