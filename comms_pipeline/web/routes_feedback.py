"""Provider event webhooks: Amazon SES bounce and complaint notifications via SNS.

``POST /feedback/ses`` is subscribed to an SNS topic that SES publishes to. It takes no API
key -- SNS cannot send one -- and is authenticated instead by the SNS signature (checked
against Amazon's certificate, :mod:`comms_pipeline.gateways.sns`) and by the topic, which must
be one of ``[bounces] ses_topic_arns`` (none configured: 404). A subscription confirmation is
confirmed by fetching its SubscribeURL (an SNS https address only). A bounce that came back
before its entry's batch finished answers 503, so SNS delivers it again.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from comms_pipeline.gateways.sns import SnsRejected, SnsVerifier, sns_url_ok
from comms_pipeline.pipeline.feedback import EntryInFlight
from comms_pipeline.pipeline.ses_events import record_ses
from comms_pipeline.web.errors import ApiError

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/feedback", tags=["feedback"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not a correctly signed SNS message, or not an allowed topic"},
    404: {"description": "SES notifications are not enabled ([bounces] ses_topic_arns)"},
    503: {"description": "The entry is still being sent: SNS delivers the bounce again"},
}


def verifier_for(request: Request) -> SnsVerifier:
    """The app's verifier (certificates cached), made on first use; tests set their own."""
    found = getattr(request.app.state, "sns_verifier", None)
    if found is None:
        found = request.app.state.sns_verifier = SnsVerifier()
    return found


@router.post("/ses", responses=_RESPONSES, summary="Amazon SES notifications via SNS")
async def ses_notification(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    topics = settings.bounces.ses_topic_arns
    if not topics:
        raise ApiError(404, "not_found", "SES notifications are not enabled here; set "
                       "[bounces] ses_topic_arns")
    verifier = verifier_for(request)
    body = await request.body()
    try:
        message = await run_in_threadpool(verifier.parse, body)
    except SnsRejected as exc:
        log.warning("feedback.sns_refused", reason=str(exc))
        raise ApiError(403, "forbidden", str(exc)) from None
    if message.get("TopicArn") not in topics:
        log.warning("feedback.sns_refused", reason="topic not allowed")
        raise ApiError(403, "forbidden", "this SNS topic is not in [bounces] ses_topic_arns")
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        url = str(message.get("SubscribeURL") or "")
        if not settings.bounces.ses_confirm_subscriptions or not sns_url_ok(url):
            log.info("feedback.sns_subscription_pending", topic=message.get("TopicArn"))
            return {"type": kind, "confirmed": False}
        await run_in_threadpool(verifier.fetch, url)
        log.info("feedback.sns_subscribed", topic=message.get("TopicArn"))
        return {"type": kind, "confirmed": True}
    if kind != "Notification":
        return {"type": kind}
    try:
        outcome = await run_in_threadpool(record_ses, request.app.state.engine, settings,
                                          str(message.get("Message") or ""))
    except EntryInFlight as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return {"type": outcome.type, "recorded": outcome.recorded, "rejected": outcome.rejected,
            "malformed": outcome.malformed}
