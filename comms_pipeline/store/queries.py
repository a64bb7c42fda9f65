"""Named lookups that several layers need (the queue's actions, the admin writes, the shells)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from comms_pipeline.store.models import systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def find_external_system(conn: Connection, code: str) -> int | None:
    """The id of external system ``code``, or None when there is none."""
    t = systems_t
    return conn.execute(select(t.c.id).where(t.c.code == code)).scalar_one_or_none()
