"""What a dynamic link's action reads and writes: its ``link_actions`` row (one per token,
kept by the token's fingerprint), the contact's consent flags, and the communication the link
came in. The deciding (which action, once per token) is :mod:`comms_pipeline.web.link_actions`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from comms_pipeline.store.dialect import insert_ignore
from comms_pipeline.store.models import contacts_t, details_t, link_actions_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def contact_id_of(conn: Connection, ref: str) -> int | None:
    """The id of contact ``ref``, or None when it no longer exists."""
    return conn.execute(select(contacts_t.c.id).where(contacts_t.c.ref == ref)
                        ).scalar_one_or_none()


def contacts_detail(conn: Connection, detail_id: int, contact_id: int) -> int | None:
    """``detail_id`` if that communication is the contact's, else None."""
    return conn.execute(select(details_t.c.id).where(
        details_t.c.id == detail_id, details_t.c.contact_id == contact_id)
    ).scalar_one_or_none()


def action_time(conn: Connection, token_fingerprint: str) -> datetime | None:
    """When the token with this fingerprint acted (None: it has not)."""
    t = link_actions_t
    return conn.execute(select(t.c.at).where(t.c.token_id == token_fingerprint)
                        ).scalar_one_or_none()


def record_action(conn: Connection, values: dict[str, Any]) -> int | None:
    """The new ``link_actions`` row's id; None when the token already acted (unique token)."""
    return insert_ignore(conn, link_actions_t, values, ["token_id"])


def note_action_data(conn: Connection, action_id: int, data: dict[str, Any]) -> None:
    """Replace what the action row says it did (e.g. the queue entry it pushed)."""
    t = link_actions_t
    conn.execute(update(t).where(t.c.id == action_id).values(data=data))


def set_consent(conn: Connection, contact_id: int, column: str, value: bool) -> None:
    """Set one of the contact's opt-in flags (``opt_in_direct_marketing`` …)."""
    conn.execute(update(contacts_t).where(contacts_t.c.id == contact_id)
                 .values({column: value}))
