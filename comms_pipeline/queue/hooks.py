"""What runs when a queue entry changes state, in the transaction that changes it.

Entries that became Completed (or Completed and Removed) are copied into the communications
log, whoever moved them: a daemon's finish, an external system's acknowledgement, an
operator's action. The work queues name this hook as their ``on_change``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, func, literal, select

from comms_pipeline.core.states import DetailState
from comms_pipeline.store.dialect import insert_for
from comms_pipeline.store.models import comms_t, details_t, templates_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


SENT_STATES = (DetailState.COMPLETED, DetailState.COMPLETED_REMOVED)
#: How a log entry copied from the queue reads: completed, written by the pipeline.
COMPLETED, PIPELINE = "completed", "pipeline"


def log_sends_on_change(conn: Connection, new_state: str, ids: list[int]) -> None:
    """A work queue's ``on_change`` hook: entries that became Completed enter the log."""
    if new_state in SENT_STATES:
        log_sent(conn, ids)


def log_sent(conn: Connection, detail_ids: Iterable[int] | None = None, *,
             contact_id: int | None = None, being_completed: bool = False) -> int:
    """Copy completed queue entries into the log (once each); return how many were added.

    Call it with the ids of details that became Completed (in the same transaction), or with
    ``contact_id`` to catch up one contact. ``being_completed`` skips the state check, for a
    hook that runs in the finishing transaction before the state is written (a handler's
    ``persist``: only rows still held reach it, and the transaction writes both or neither).
    """
    d = details_t
    where = [d.c.contact_id.isnot(None), ~exists().where(comms_t.c.detail_id == d.c.id)]
    if not being_completed:
        where.append(d.c.state.in_(SENT_STATES))
    if detail_ids is not None:
        ids = sorted(set(detail_ids))
        if not ids:
            return 0
        where.append(d.c.id.in_(ids))
    if contact_id is not None:
        where.append(d.c.contact_id == contact_id)
    source = (select(d.c.contact_id, d.c.media, d.c.direction, templates_t.c.category,
                     d.c.subject, d.c.body, literal(COMPLETED), d.c.id, literal(PIPELINE),
                     d.c.created_at,
                     func.coalesce(d.c.completed_at, d.c.updated_at, d.c.created_at))
              .select_from(d.outerjoin(templates_t, templates_t.c.id == d.c.template_id))
              .where(and_(*where)))
    stmt = insert_for(conn, comms_t).from_select(
        ["contact_id", "media", "direction", "category", "subject", "content", "status",
         "detail_id", "created_by", "created_at", "completed_at"], source
    ).on_conflict_do_nothing(index_elements=["detail_id"])
    return conn.execute(stmt).rowcount or 0
