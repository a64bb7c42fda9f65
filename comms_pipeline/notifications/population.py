"""The population of a notification run, streamed from the business database.

A population query returns one row per recipient (or several, for list tags) with two
required columns, ``recipient_key`` (unique per recipient, e.g. the account id) and
``contact_ref``; every other column becomes a ``#notification.*`` tag value:

* ``total_notified_amount`` -> ``#notification.total_notified_amount``
* ``"accounts_receivable.name"`` -> ``#notification.accounts_receivable.name`` (a nested entity)
* ``"bills_notified_amount[].number"`` -> one item of the list ``$notification.
  bills_notified_amount`` per row of the same recipient (rows of a LEFT JOIN; an item whose
  columns are all NULL is left out)

The query is wrapped as ``SELECT * FROM (<query>) p WHERE p.recipient_key > :after ORDER BY
p.recipient_key`` and read through a server-side cursor (``stream_results`` / ``yield_per``),
so memory stays flat whatever the size, and a resumed run continues after the last recipient
it finished. Values are made JSON-safe here: decimals become strings (exact amounts), dates
ISO strings. Rows without a recipient key are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from comms_pipeline.core.errors import CommsError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.notifications.types import TypeInfo

KEY = "recipient_key"
CONTACT = "contact_ref"


class PopulationError(CommsError):
    """The population query of a notification type is unusable."""


@dataclass
class Recipient:
    key: Any
    contact_ref: str | None
    data: dict[str, Any] = field(default_factory=dict)


_PLAIN = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """A JSON-safe copy of a database value."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return value


def reader_engine(url: str) -> Engine:
    """A plain engine for reading populations.

    Not :func:`comms_pipeline.store.db.make_engine`: on SQLite that one begins every transaction
    IMMEDIATE, and a reader holding the write lock for the whole run would block the batches'
    own writes to the same file. Plain pysqlite reads in WAL mode never block the writer.
    """
    return create_engine(url, poolclass=NullPool)


def base_query(t: TypeInfo) -> str:
    """The SQL a run streams: the type's population query, or its SQL segment's members."""
    if (t.population_query or "").strip():
        return t.population_query.strip().rstrip(";")  # type: ignore[union-attr]
    if t.segment is not None and t.segment.kind == "sql":
        return (f"SELECT s.member_ref AS {KEY}, s.member_ref AS {CONTACT} "
                f"FROM ({t.segment.query.strip().rstrip(';')}) s")  # type: ignore[union-attr]
    if t.segment is not None and t.segment.kind == "list":
        return (f"SELECT member_ref AS {KEY}, member_ref AS {CONTACT} FROM segment_members "
                f"WHERE segment_id = {int(t.segment.id)}")
    raise PopulationError(f"notification type {t.code} has no population query nor segment")


def reads_comms_database(t: TypeInfo) -> bool:
    """A list segment lives in the comms database; everything else in the business one."""
    return not (t.population_query or "").strip() and t.segment is not None \
        and t.segment.kind == "list"


def _wrapped(query: str, after: Any, count: bool = False) -> tuple[str, dict[str, Any]]:
    where = f" WHERE p.{KEY} > :after" if after is not None else f" WHERE p.{KEY} IS NOT NULL"
    params = {"after": after} if after is not None else {}
    if count:
        return f"SELECT count(DISTINCT p.{KEY}) FROM ({query}) p{where}", params
    return f"SELECT * FROM ({query}) p{where} ORDER BY p.{KEY}", params


def count(conn: Connection, query: str, after: Any = None) -> int:
    sql, params = _wrapped(query, after, count=True)
    return int(conn.execute(text(sql), params).scalar_one())


@dataclass(frozen=True)
class _Plan:
    """Where each column of a population row goes, worked out once per query."""

    key: int
    contact: int
    flat: tuple[tuple[int, str], ...]
    nested: tuple[tuple[int, tuple[str, ...]], ...]
    items: tuple[tuple[int, str, tuple[str, ...]], ...]


def _plan(columns: list[str]) -> _Plan:
    if KEY not in columns or CONTACT not in columns:
        raise PopulationError(f"the population query must return columns {KEY} and {CONTACT}"
                              f" (it returns {', '.join(columns)})")
    flat, nested, items = [], [], []
    for i, name in enumerate(columns):
        if name in (KEY, CONTACT):
            continue
        if "[]." in name:
            list_name, _, rest = name.partition("[].")
            items.append((i, list_name, tuple(rest.split("."))))
        elif "." in name:
            nested.append((i, tuple(name.split("."))))
        else:
            flat.append((i, name))
    return _Plan(columns.index(KEY), columns.index(CONTACT), tuple(flat), tuple(nested),
                 tuple(items))


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for step in path[:-1]:
        nested = target.get(step)
        if not isinstance(nested, dict):
            nested = target[step] = {}
        target = nested
    target[path[-1]] = value


def _start(row: Any, plan: _Plan) -> Recipient:
    data = {name: plain(row[i]) for i, name in plan.flat}
    for i, path in plan.nested:
        _put(data, path, plain(row[i]))
    for _, name, _ in plan.items:
        data.setdefault(name, [])
    contact = row[plan.contact]
    return Recipient(row[plan.key], None if contact is None else str(contact), data)


def _add_items(recipient: Recipient, row: Any, plan: _Plan) -> None:
    built: dict[str, dict[str, Any]] = {}
    for i, name, path in plan.items:
        item = built.setdefault(name, {})
        value = row[i]
        if value is not None:
            _put(item, path, plain(value))
    for name, item in built.items():
        listed = recipient.data[name]
        if item and item not in listed:
            listed.append(item)


def stream(conn: Connection, query: str, after: Any = None,
           chunk: int = 5000) -> Iterator[Recipient]:
    """Recipients in key order, after ``after``, from a server-side cursor."""
    sql, params = _wrapped(query, after)
    result = conn.execution_options(stream_results=True, yield_per=chunk).execute(
        text(sql), params)
    try:
        plan = _plan(list(result.keys()))
        current: Recipient | None = None
        for row in result:
            if current is None or row[plan.key] != current.key:
                if current is not None:
                    yield current
                current = _start(row, plan)
            if plan.items:
                _add_items(current, row, plan)
        if current is not None:
            yield current
    finally:
        result.close()
