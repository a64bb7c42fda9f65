"""Engines and transactions for SQLite and PostgreSQL, and the schema upgrade.

SQLite is the single-writer path: every transaction starts with ``BEGIN IMMEDIATE`` so that
two processes never both read-then-write the same rows (the second waits on ``busy_timeout``).
PostgreSQL sessions run in UTC so that ``CURRENT_TIMESTAMP`` defaults agree with Python's
naive-UTC timestamps.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from comms_pipeline.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"


def utcnow() -> datetime:
    """Naive UTC now: the one clock every timestamp in the database is written with."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5) -> Engine:
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
        connect_args={"options": "-c timezone=UTC"},
    )


def _make_sqlite_transactional(engine: Engine) -> None:
    """Take over transaction control from pysqlite and begin every transaction IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
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
def _cached_engine(url: str, echo: bool, pool_size: int) -> Engine:
    return make_engine(url, echo=echo, pool_size=pool_size)


def engine_for(settings: Settings) -> Engine:
    """The process-wide engine for these settings (one pool per URL)."""
    return _cached_engine(settings.database_url, settings.database.echo,
                          settings.database.pool_size)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``comms db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def _copy_text(value: object) -> str:
    """One value in COPY's text format (NULL is ``\\N``; backslash, tab, CR and LF escaped)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def bulk_insert(conn: Connection, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert many rows: ``COPY … FROM STDIN`` on PostgreSQL (several times a multi-row
    INSERT's speed), an executemany elsewhere. Every row has the keys of the first."""
    if not rows:
        return
    if not is_postgres(conn):
        conn.execute(table.insert(), list(rows))
        return
    columns = list(rows[0])
    buffer = io.StringIO("".join(
        "\t".join(_copy_text(row[c]) for c in columns) + "\n" for row in rows))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        cursor.close()
