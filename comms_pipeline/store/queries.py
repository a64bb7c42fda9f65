"""Named lookups that several layers need (the queue's actions, the admin writes, the shells)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from comms_pipeline.store.models import contacts_t, details_t, keys_t, runs_t, systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def find_external_system(conn: Connection, code: str) -> int | None:
    """The id of external system ``code``, or None when there is none."""
    t = systems_t
    return conn.execute(select(t.c.id).where(t.c.code == code)).scalar_one_or_none()


def external_system_code(conn: Connection, system_id: int) -> str | None:
    """The code of external system ``system_id``, or None when there is none."""
    t = systems_t
    return conn.execute(select(t.c.code).where(t.c.id == system_id)).scalar_one_or_none()


def find_contact(conn: Connection, ref: str) -> Any | None:
    """The contact's ``id``, ``ref`` and ``name``, or None when there is none."""
    t = contacts_t
    return conn.execute(select(t.c.id, t.c.ref, t.c.name).where(t.c.ref == ref)).first()


def detail_exists(conn: Connection, detail_id: int) -> bool:
    """Whether communication (queue entry) ``detail_id`` exists."""
    return conn.execute(select(details_t.c.id).where(details_t.c.id == detail_id)).first() \
        is not None


def run_exists(conn: Connection, run_id: int) -> bool:
    """Whether notification run ``run_id`` exists."""
    return conn.execute(select(runs_t.c.id).where(runs_t.c.id == run_id)).first() is not None


def ping(conn: Connection) -> None:
    """Ask the database something trivial; raises whatever the driver raises when it is down."""
    conn.execute(text("SELECT 1"))


def key_system_code(conn: Connection, prefix: str) -> str | None:
    """The code of the external system whose API key has this prefix, or None."""
    return conn.execute(select(systems_t.c.code)
                        .join(keys_t, keys_t.c.external_system_id == systems_t.c.id)
                        .where(keys_t.c.prefix == prefix)).scalar_one_or_none()
