"""Amazon SES bounce and complaint notifications into :func:`handle_feedback`.

The Web API's ``POST /feedback/ses`` checks the SNS signature and the topic, then hands the
notification's ``Message`` here: each bounced or complaining recipient becomes one
:class:`FeedbackEvent` (source ``ses``), named by the VERP address SES reports as
``mail.source`` or, failing that, by the signed id in the original's Message-ID, all in one
transaction. A notification that cannot be read is kept as malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.gateways.delivery_reports import MalformedReport
from comms_pipeline.gateways.ses_feedback import parse_ses
from comms_pipeline.pipeline.feedback import handle_feedback, record_malformed
from comms_pipeline.pipeline.verp import VerpAddresses

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

SOURCE = "ses"


@dataclass(frozen=True)
class SesOutcome:
    type: str
    recorded: int = 0
    rejected: int = 0
    malformed: bool = False


def record_ses(engine: Engine, settings: Settings, message: str) -> SesOutcome:
    """Record one SES notification (raises ``EntryInFlight`` for a bounce back too early)."""
    now = utcnow()
    raw = message.encode("utf-8", "replace")
    try:
        notice = parse_ses(message)
    except MalformedReport as exc:
        with engine.begin() as conn:
            record_malformed(conn, SOURCE, str(exc), raw, now)
        return SesOutcome("unknown", malformed=True)
    verp = VerpAddresses.from_settings(settings)
    detail_id = verp.detail_id(notice.source) if verp and notice.source else None
    rejected = 0
    with engine.begin() as conn:
        for r in notice.recipients:
            result = handle_feedback(conn, FeedbackEvent(
                kind=r.kind, detail_id=detail_id, message_id=notice.message_id,
                recipient=r.recipient, status=r.status, diagnostic=r.diagnostic,
                source=SOURCE, received_at=now), verp=verp, raw=raw,
                suppressions=settings.suppressions)
            rejected += result.outcome == "rejected"
    return SesOutcome(notice.type, recorded=len(notice.recipients), rejected=rejected)
