"""Expiry sweep: pending queue entries whose expiry date has passed become Expired.

Expired entries are no longer offered to external systems nor sent (SPEC). Daemons also
check expiry at send time; the sweep makes the state visible without waiting for a daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import and_

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import PENDING_STATES, DetailState, ErrorCode
from comms_pipeline.queue.claims import Outcome, WorkQueue
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.store.models import details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings


def expired_queue() -> WorkQueue:
    return WorkQueue(
        machine=DETAILS,
        pending=lambda: and_(details_t.c.state.in_([s.value for s in PENDING_STATES]),
                             details_t.c.expires_at <= utcnow()),
        give_up_state=DetailState.EXPIRED,
    )


class ExpirySweepJob:
    name = "expiry-sweep"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.queue = expired_queue()

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        now = utcnow()
        return [Outcome.done(r.id, DetailState.EXPIRED, ErrorCode.EXPIRED,
                             f"expired at {r.expires_at:%Y-%m-%d %H:%M} UTC before it was "
                             "processed", completed_at=now) for r in rows]

    def close(self) -> None:
        """Nothing to release."""
