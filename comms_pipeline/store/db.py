"""Engines and transactions for SQLite and PostgreSQL, and the schema upgrade.

SQLite is the single-writer path: every transaction starts with ``BEGIN IMMEDIATE`` so that
two processes never both read-then-write the same rows (the second waits on ``busy_timeout``).
PostgreSQL sessions run in UTC so that ``CURRENT_TIMESTAMP`` defaults agree with Python's
naive-UTC timestamps.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Table, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url

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
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


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


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value: object) -> str:
    """One value in COPY's text format (NULL is ``\\N``; backslash, tab, CR and LF escaped)."""
    if type(value) is not str:  # most values are strings: no conversion
        if value is None:
            return "\\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat()
        value = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    if _COPY_SPECIAL.search(value) is None:  # the common case: nothing to escape
        return value
    return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], value)


#: Rows changed since the last ANALYZE, beyond which a table's statistics are refreshed before
#: it is claimed from: at least this many, and at least half the rows it holds.
STALE_MIN_CHANGES = 10_000


def analyze_if_stale(conn: Connection, table: Table) -> bool:
    """``ANALYZE`` a PostgreSQL table whose statistics no longer describe it.

    A bulk load (a notification run's million headers, a backlog that arrived while the
    monitor was down) leaves the planner believing the table is as small as when autovacuum
    last looked: it then sorts the whole backlog at every claim instead of walking the work
    index, so each batch costs more the larger the backlog. PostgreSQL's advice after a bulk
    load is to ANALYZE; autovacuum does it too, but only after its next nap. Returns whether
    it analyzed. A role that does not own the table gets a warning from the server, no error.
    """
    if not is_postgres(conn):
        return False
    found = conn.execute(text(
        "SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables "
        "WHERE relid = CAST(:t AS regclass)"), {"t": table.name}).first()
    if found is None:
        return False
    live, changed = found
    if changed < max(STALE_MIN_CHANGES, live // 2):
        return False
    conn.execute(text(f"ANALYZE {table.name}"))
    return True


def bulk_insert(conn: Connection, table: Table, rows: Sequence[Mapping[str, object]],
                return_ids: bool = False) -> list[int]:
    """Insert many rows: ``COPY … FROM STDIN`` on PostgreSQL (several times a multi-row
    INSERT's speed), an executemany elsewhere. Every row has the keys of the first.

    With ``return_ids`` the new rows' ids come back in the order of ``rows`` (on PostgreSQL
    they are drawn from the table's sequence first and copied in with the rows).
    """
    if not rows:
        return []
    if not is_postgres(conn):
        if not return_ids:
            conn.execute(table.insert(), list(rows))
            return []
        stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        return list(conn.execute(stmt, list(rows)).scalars())
    # A column that is NULL in every row and has no server default is left to the table.
    columns = [c for c in rows[0] if table.c[c].server_default is not None
               or any(row[c] is not None for row in rows)]
    ids: list[int] = []
    if return_ids:
        ids = sorted(conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) "
                 "FROM generate_series(1, :n)"), {"t": table.name, "n": len(rows)}).scalars())
        columns.insert(0, "id")
        rows = [{"id": i, **row} for i, row in zip(ids, rows, strict=True)]
    buffer = io.StringIO("".join(
        "\t".join(_copy_text(row[c]) for c in columns) + "\n" for row in rows))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        cursor.close()
    return ids
