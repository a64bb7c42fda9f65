"""What differs between SQLite and PostgreSQL in the statements the pipeline issues, in one place.

Callers say what they want (insert unless the key is there, insert or update, load many rows,
refresh statistics, take a row lock, take an advisory lock) and this module picks the
dialect's way of saying it: ``INSERT … ON CONFLICT`` of the right dialect, ``COPY`` on
PostgreSQL, ``ANALYZE`` where statistics matter, JSON functions by their dialect's names.
What is behaviour rather than syntax — ``SKIP LOCKED`` claiming in :mod:`queue.claims`, the
``flock`` fallback of :mod:`store.locks` — stays with the code that decides it.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


#: The execution option of a connection that only reads (see :func:`reading`).
READ_ONLY = "comms_read_only"


def reading(engine: Engine) -> Connection:
    """A connection for reads only. On SQLite its transaction begins ``DEFERRED`` where every
    other begins ``IMMEDIATE`` (:mod:`store.db`): a read then neither takes the write lock nor
    waits for a writer (in WAL mode it reads the last commit), so a daemon's reads between its
    sends do not queue behind a finishing transaction. Use it only for connections that
    never write."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def insert_for(bind: Engine | Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of ``bind``'s dialect, so the caller can add ``.on_conflict_do_nothing()`` or
    ``.on_conflict_do_update()`` (the generic ``insert()`` has neither)."""
    dialect: Any = postgresql if is_postgres(bind) else sqlite
    return dialect.insert(table)


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any],
                  index_elements: Sequence[str]) -> int | None:
    """Insert one row unless a row with the same ``index_elements`` is there: the new row's
    id, or None when the key was already taken (by this process or a concurrent one)."""
    stmt = (insert_for(conn, table).values(dict(values))
            .on_conflict_do_nothing(index_elements=list(index_elements))
            .returning(table.c.id))
    return conn.execute(stmt).scalar_one_or_none()


def upsert(conn: Connection, table: Table, values: Mapping[str, Any],
           index_elements: Sequence[str], set_: Mapping[str, Any]) -> None:
    """Insert one row, or when a row with the same ``index_elements`` is there update its
    ``set_`` columns instead."""
    stmt = (insert_for(conn, table).values(dict(values))
            .on_conflict_do_update(index_elements=list(index_elements), set_=dict(set_)))
    conn.execute(stmt)


def lock_rows(conn: Connection, stmt: Select[Any]) -> None:
    """Lock the rows ``stmt`` selects until the transaction ends (``FOR UPDATE``). SQLite has
    no row locks and needs none: every transaction there begins ``IMMEDIATE`` and so already
    holds the database's write lock (see :mod:`store.db`), and nothing is run."""
    if is_postgres(conn):
        conn.execute(stmt.with_for_update())


def commit_without_waiting(conn: Connection) -> None:
    """Let this transaction's commit return before its WAL record is flushed to disk
    (PostgreSQL's ``SET LOCAL synchronous_commit = off``): for writes whose loss in a crash
    harms nothing, such as a rate limit's counter of the current second. No change on
    SQLite (its WAL mode already commits without a sync, ``synchronous=NORMAL``)."""
    if is_postgres(conn):
        conn.execute(text("SET LOCAL synchronous_commit = off"))


_NOTIFICATION_ENTITIES = {
    "postgresql": "(jsonb_build_object('notification', {data}::jsonb) || COALESCE((SELECT "
                  "jsonb_object_agg(e.key, e.value) FROM jsonb_each({data}::jsonb) e "
                  "WHERE jsonb_typeof(e.value) = 'object'), '{{}}'::jsonb))::json",
    "sqlite": "(SELECT json_group_object(k, json(v)) FROM (SELECT 'notification' AS k, "
              "{data} AS v UNION ALL SELECT e.key, e.value FROM json_each({data}) e "
              "WHERE e.type = 'object'))",
}


def entities_json_sql(bind: Engine | Connection, data: str) -> str:
    """SQL for a JSON object holding the JSON column ``data`` under ``"notification"`` plus
    each of its object-valued members under its own key (a run's header entities, built in
    the database from the notification rows), in ``bind``'s dialect's JSON functions."""
    return _NOTIFICATION_ENTITIES["postgresql" if is_postgres(bind) else "sqlite"].format(
        data=data)


def _int32(name: str) -> int:
    """A stable signed 32-bit number for a name (advisory locks take two int4 keys)."""
    value = zlib.crc32(name.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


def try_advisory_lock(conn: Connection, namespace: str, key: str) -> bool:
    """Take PostgreSQL's session-level advisory lock named ``namespace``/``key`` on ``conn``
    if it is free (``pg_try_advisory_lock``); whether ``conn``'s session now holds it."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                             {"a": _int32(namespace), "b": _int32(key)}).scalar())


def advisory_unlock(conn: Connection, namespace: str, key: str) -> None:
    """Release the advisory lock :func:`try_advisory_lock` took on ``conn``'s session."""
    conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                 {"a": _int32(namespace), "b": _int32(key)})


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
