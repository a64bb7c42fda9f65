"""The work queues of the pipeline: which rows each job and daemon claims."""

from __future__ import annotations

from sqlalchemy import and_, or_, true

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import PENDING_STATES, DetailState, HeaderStatus
from comms_pipeline.queue.claims import WorkQueue
from comms_pipeline.queue.machine import DETAILS, DOCUMENTS, HEADERS
from comms_pipeline.queue.retry import RetryPolicy
from comms_pipeline.queue.wake import MONITOR_CHANNEL, STORAGE_CHANNEL, merge_channel, send_channel
from comms_pipeline.store.models import details_t, documents_t, headers_t, systems_t


def header_queue() -> WorkQueue:
    """New request headers whose send-after time has come (the Comms Monitor's work)."""
    return WorkQueue(
        machine=HEADERS,
        pending=lambda: and_(
            headers_t.c.status == HeaderStatus.AWAITING_PROCESSING,
            or_(headers_t.c.send_after.is_(None), headers_t.c.send_after <= utcnow()),
        ),
        order_by=(headers_t.c.priority, headers_t.c.id),
        # Fair queueing: the systems that asked share the monitor round-robin per priority.
        lane=headers_t.c.requested_by_system_id,
        lane_domain=systems_t.c.id,
        channel=MONITOR_CHANNEL,
    )


def detail_queue(media: str, state: str = DetailState.AWAITING_SEND,
                 external: bool = False) -> WorkQueue:
    """Details of one media in one state; by default only those the pipeline sends itself."""
    owner = (details_t.c.external_system_id.isnot(None) if external
             else details_t.c.external_system_id.is_(None))
    return WorkQueue(
        machine=DETAILS,
        pending=lambda: and_(details_t.c.state == state, details_t.c.media == media, owner),
        order_by=(details_t.c.priority, details_t.c.id),
        lane=details_t.c.requested_by_system_id,
        lane_domain=systems_t.c.id,
        channel=send_channel(media) if state == DetailState.AWAITING_SEND else None,
    )


def pending_details_queue() -> WorkQueue:
    """Every Pending queue entry, whatever its media or owner (operators' cancellations)."""
    return WorkQueue(
        machine=DETAILS,
        pending=lambda: details_t.c.state.in_([s.value for s in PENDING_STATES]),
    )


def merge_queue(media: str) -> WorkQueue:
    """Email or letter details waiting for their document to be merged."""
    return WorkQueue(
        machine=DETAILS,
        pending=lambda: and_(details_t.c.state == DetailState.AWAITING_MERGE,
                             details_t.c.media == media),
        order_by=(details_t.c.priority, details_t.c.id),
        lane=details_t.c.requested_by_system_id,
        lane_domain=systems_t.c.id,
        channel=merge_channel(media),
    )


def storage_queue(retry: RetryPolicy | None = None) -> WorkQueue:
    """Documents not yet kept in long-term storage."""
    return WorkQueue(
        retry=retry,
        machine=DOCUMENTS,
        # A document whose content was removed (retention, erasure) has nothing to store.
        pending=lambda: and_(documents_t.c.stored_at.is_(None), documents_t.c.purged_at.is_(None),
                             true()),
        order_by=(documents_t.c.id,),
        channel=STORAGE_CHANNEL,
    )
