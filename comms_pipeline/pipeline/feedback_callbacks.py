"""What a bounce or a complaint tells the client system (a hook of
:data:`comms_pipeline.pipeline.feedback.FEEDBACK_HOOKS`): a ``bounced`` or ``complained``
status callback of the entry, written to the outbox in the report's transaction. A hard
bounce that turned the entry Rejected also sends ``rejected`` (the change of state does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.queue.callbacks import enqueue_event

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

EVENT = {"hard_bounce": "bounced", "soft_bounce": "bounced", "complaint": "complained"}


def callback_on_feedback(conn: Connection, event: FeedbackEvent, result: Any,
                         _settings: Any = None) -> None:
    if result.detail_id is None or event.kind not in EVENT:
        return
    enqueue_event(conn, detail_id=result.detail_id, event=EVENT[event.kind],
                  code=event.status, at=event.received_at,
                  details={"bounce": event.kind.removesuffix("_bounce")}
                  if event.kind != "complaint" else None)
