"""Engines and transactions for SQLite and PostgreSQL, and the schema upgrade.

SQLite is the single-writer path: every transaction starts with ``BEGIN IMMEDIATE`` so that
two processes never both read-then-write the same rows (the second waits on ``busy_timeout``).
PostgreSQL sessions run in UTC so that ``CURRENT_TIMESTAMP`` defaults agree with Python's
naive-UTC timestamps. What differs between the two dialects in the statements themselves
(upsert, COPY, ANALYZE, advisory locks) is in :mod:`comms_pipeline.store.dialect`.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from comms_pipeline.store.dialect import READ_ONLY

if TYPE_CHECKING:
    from collections.abc import Iterator

    from comms_pipeline.settings.config import DatabaseSettings, Settings

_CHECKOUT_MIGRATIONS = Path(__file__).resolve().parents[2] / "sql" / "migrations"
#: ``sql/migrations`` in a checkout; the copy a wheel carries in the package otherwise.
MIGRATIONS_DIR = (_CHECKOUT_MIGRATIONS if _CHECKOUT_MIGRATIONS.is_dir()
                  else Path(__file__).resolve().parents[1] / "sql_migrations")


def pg_connect_args(database: DatabaseSettings | None) -> dict[str, object]:
    """libpq parameters for the pipeline's PostgreSQL sessions: UTC, and with settings the
    statement, lock and idle-in-transaction timeouts, TCP keepalives and a connect timeout.

    Without settings (migrations, tools) only the time zone is set: a schema upgrade of a
    large table must not be cut short by a worker's statement timeout.
    """
    options = ["-c timezone=UTC"]
    if database is None:
        return {"options": " ".join(options)}
    for name, seconds in (("statement_timeout", database.statement_timeout_seconds),
                          ("lock_timeout", database.lock_timeout_seconds),
                          ("idle_in_transaction_session_timeout",
                           database.idle_in_transaction_seconds)):
        if seconds:
            options.append(f"-c {name}={max(1, round(seconds * 1000))}")
    return {"options": " ".join(options), "keepalives": 1,
            "keepalives_idle": database.tcp_keepalive_idle_seconds,
            "keepalives_interval": database.tcp_keepalive_interval_seconds,
            "keepalives_count": 3, "connect_timeout": database.connect_timeout_seconds}


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5,
                database: DatabaseSettings | None = None) -> Engine:
    """An engine for ``url``. On PostgreSQL the pool pre-pings (a connection the server
    closed, in a restart or a failover, is replaced before use) and, with ``database``
    settings, sessions get the timeouts of :func:`pg_connect_args`. The URL may name several
    hosts for failover (``?host=a:5432&host=b:5432&target_session_attrs=read-write``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 60})
        _make_sqlite_transactional(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        pool_pre_ping=True,
        executemany_mode="values_plus_batch",
        connect_args=pg_connect_args(database),
    )


def _make_sqlite_transactional(engine: Engine) -> None:
    """Take over transaction control from pysqlite and begin every transaction IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front (no deadlock upgrading a read lock); a
        # connection that only reads (store.dialect.reading) does not take it at all.
        read_only = conn.get_execution_options().get(READ_ONLY)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def _cached_engine(url: str, database_json: str) -> Engine:
    from comms_pipeline.settings.config import DatabaseSettings

    database = DatabaseSettings.model_validate_json(database_json)
    return make_engine(url, echo=database.echo, pool_size=database.pool_size,
                       database=database)


def engine_for(settings: Settings) -> Engine:
    """The process-wide engine for these settings (one pool per URL and settings)."""
    return _cached_engine(settings.database_url, settings.database.model_dump_json())


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``comms db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
