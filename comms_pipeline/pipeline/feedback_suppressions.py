"""What a bounce or a complaint does to the suppression list (a hook of
:data:`comms_pipeline.pipeline.feedback.FEEDBACK_HOOKS`, in the report's transaction).

A hard bounce suppresses the address for every classification (it cannot receive), with the
DSN status and the remote MTA's words; a complaint suppresses marketing only; a soft bounce
counts towards ``[suppressions] soft_bounce_threshold``. Only reports matched to an entry act:
the address is the one the entry was sent to, never one a report claims.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.store.models import details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.settings.suppressions import SuppressionSettings

ACTOR = "feedback"


def suppress_on_feedback(conn: Connection, event: FeedbackEvent, result: Any,
                         settings: SuppressionSettings | None = None) -> None:
    if result.detail_id is None:
        return
    address = conn.execute(select(details_t.c.address)
                           .where(details_t.c.id == result.detail_id)).scalar_one_or_none()
    if not address:
        return
    words = " ".join(x for x in (event.status, event.diagnostic) if x)[:500] or None
    try:
        if event.kind == "hard_bounce":
            sup.suppress(conn, address=address, media="email", reason="hard_bounce",
                         source_detail_id=result.detail_id, actor=ACTOR, description=words)
        elif event.kind == "complaint":
            sup.suppress(conn, address=address, media="email", reason="complaint",
                         source_detail_id=result.detail_id, actor=ACTOR, description=words)
        elif event.kind == "soft_bounce":
            sup.record_soft_bounce(conn, address=address, media="email",
                                   source_detail_id=result.detail_id,
                                   now=event.received_at or utcnow(), description=words,
                                   settings=settings)
    except sup.SuppressionError:  # an address the list cannot hold: the report stays
        return
