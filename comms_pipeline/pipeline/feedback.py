"""What a bounce or a complaint does to its entry: one function for every source.

:func:`handle_feedback` is called, in the caller's transaction, with one
:class:`FeedbackEvent` -- from the bounce receiver (``comms daemon run bounces``: DSNs and ARF
reports) or a provider's webhook. It finds the entry (the detail id of a signed VERP address,
else the signed id in the original's Message-ID), keeps the report in ``feedback_reports``
(unmatched ones too), and turns a Completed email entry Rejected with the DSN status as its
error code on a hard bounce (``5.x.x``), through the queue's state machine (history row
included). Soft bounces and complaints are recorded and change no state. A hard bounce can come back
before the sending daemon has finished its batch (a local MTA bounces in milliseconds): the
entry is still Awaiting Send, so :class:`EntryInFlight` is raised and the caller answers
"try again later" (SMTP 451, HTTP 503): the MTA or the provider sends it again.

What else a report should cause -- a suppression, a status callback to the client system --
is added to :data:`FEEDBACK_HOOKS`: each hook runs in the same transaction, after the report
is recorded, with the event and its result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter
from sqlalchemy import insert, select

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.core.states import DetailState, Media
from comms_pipeline.pipeline.feedback_callbacks import callback_on_feedback
from comms_pipeline.pipeline.feedback_suppressions import suppress_on_feedback
from comms_pipeline.queue.claims import transition_rows
from comms_pipeline.queue.metrics import PROCESS
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.store.models import details_t, feedback_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.pipeline.verp import VerpAddresses
    from comms_pipeline.settings.suppressions import SuppressionSettings

__all__ = ["FEEDBACK_HOOKS", "EntryInFlight", "FeedbackEvent", "FeedbackResult",
           "handle_feedback", "record_malformed"]

log = structlog.get_logger(__name__)

REPORTS = Counter("comms_feedback_reports", "Bounces and complaints that came back, by kind "
                  "and outcome (rejected, recorded, unmatched, malformed)",
                  ["source", "kind", "outcome"], registry=PROCESS)

#: Kept of an unmatched or malformed report, to read it later (the original's headers).
RAW_MAX = 64 * 1024
CODE_MAX = 16
MESSAGE_ID_MAX = 255


class EntryInFlight(CommsError):
    """The entry is still being sent (its batch is not finished): report the bounce later."""


@dataclass(frozen=True)
class FeedbackResult:
    """What one event did: its ``feedback_reports`` row, its entry, its outcome."""

    report_id: int
    detail_id: int | None
    #: ``rejected`` (a Completed entry turned Rejected), ``recorded`` (matched, no state
    #: change: a soft bounce, a complaint, an entry not Completed) or ``unmatched``.
    outcome: str

    @property
    def matched(self) -> bool:
        return self.detail_id is not None


#: ``hook(conn, event, result)``: runs for every event after it is recorded, in its
#: transaction -- where the suppression list and the client systems' callbacks plug in.
FeedbackHook = Callable[["Connection", FeedbackEvent, FeedbackResult,
                         "SuppressionSettings | None"], None]
FEEDBACK_HOOKS: list[FeedbackHook] = [suppress_on_feedback, callback_on_feedback]


def _email_detail(conn: Connection, detail_id: int | None) -> tuple[int, str] | None:
    if detail_id is None:
        return None
    row = conn.execute(select(details_t.c.id, details_t.c.state)
                       .where(details_t.c.id == detail_id)
                       .where(details_t.c.media == Media.EMAIL)).first()
    return (row.id, row.state) if row is not None else None


def handle_feedback(conn: Connection, event: FeedbackEvent, *,
                    verp: VerpAddresses | None = None, raw: bytes | None = None,
                    suppressions: SuppressionSettings | None = None) -> FeedbackResult:
    """Record ``event`` on its entry and act on it (see the module's docstring).

    ``verp`` reads the signed id from ``event.message_id`` when ``event.detail_id`` is None;
    ``raw`` (the report as it came) is kept when the event matches no entry;
    ``suppressions`` (``settings.suppressions``) sets the soft-bounce threshold.
    """
    detail_id = event.detail_id
    if detail_id is None and event.message_id and verp is not None:
        detail_id = verp.detail_id_from_message_id(event.message_id)
    found = _email_detail(conn, detail_id)
    outcome = "unmatched"
    if found is not None:
        if event.kind == "hard_bounce" and found[1] == DetailState.AWAITING_SEND:
            raise EntryInFlight(f"entry {found[0]} is still being sent; report it again later")
        outcome = "recorded"
        if event.kind == "hard_bounce" and found[1] == DetailState.COMPLETED:
            outcome = _reject(conn, found[0], event) or outcome
    report_id = conn.execute(insert(feedback_t).values(
        detail_id=found[0] if found else None, kind=event.kind, source=event.source[:32],
        recipient=event.recipient, message_id=(event.message_id or None) and
        event.message_id[:MESSAGE_ID_MAX], status=(event.status or None) and
        event.status[:CODE_MAX], diagnostic=event.diagnostic, outcome=outcome,
        problem=None if found else "no entry matches its VERP address or Message-ID",
        raw=None if found or raw is None else raw[:RAW_MAX], received_at=event.received_at,
    ).returning(feedback_t.c.id)).scalar_one()
    result = FeedbackResult(report_id, found[0] if found else None, outcome)
    REPORTS.labels(event.source, event.kind, outcome).inc()
    log.info("feedback.recorded", kind=event.kind, source=event.source, outcome=outcome,
             detail_id=result.detail_id, status=event.status, report_id=report_id)
    for hook in FEEDBACK_HOOKS:
        hook(conn, event, result, suppressions)
    return result


def _reject(conn: Connection, detail_id: int, event: FeedbackEvent) -> str | None:
    code = (event.status or "5.0.0")[:CODE_MAX]
    description = f"bounced: {event.diagnostic}" if event.diagnostic else "bounced"
    # transition_rows moves what ``where`` selects (an external system's entry too).
    moved = transition_rows(
        conn, detail_queue(Media.EMAIL, DetailState.COMPLETED),
        (details_t.c.id == detail_id) & (details_t.c.state == DetailState.COMPLETED),
        DetailState.REJECTED, f"bounce:{event.source}"[:128], code=code,
        values={"error_code": code, "error_description": description})
    return "rejected" if moved else None


def record_malformed(conn: Connection, source: str, problem: str, raw: bytes | None,
                     received_at: object) -> int:
    """Keep a report that could not be read (and count it); it names no entry."""
    report_id = conn.execute(insert(feedback_t).values(
        kind="unknown", source=source[:32], outcome="malformed", problem=problem,
        raw=raw[:RAW_MAX] if raw is not None else None, received_at=received_at,
    ).returning(feedback_t.c.id)).scalar_one()
    REPORTS.labels(source, "unknown", "malformed").inc()
    log.warning("feedback.malformed", source=source, problem=problem, report_id=report_id)
    return report_id
