"""Amazon SES bounce and complaint notifications (the ``Message`` of an SNS Notification).

Both SES formats are read: feedback notifications (``notificationType``) and event
publishing (``eventType``). A Permanent bounce is hard, a Transient or Undetermined one soft;
each bounced recipient's ``status`` and ``diagnosticCode`` are kept, and a complaint's
feedback type. The message is named by ``mail.source`` (the envelope sender: our VERP
address) and, failing that, by its Message-ID in ``mail.commonHeaders``. Deliveries, sends,
opens and the rest are not feedback: :func:`parse_ses` returns no recipients for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from comms_pipeline.core.feedback_events import FeedbackKind
from comms_pipeline.gateways.delivery_reports import DIAGNOSTIC_MAX, MalformedReport


@dataclass(frozen=True)
class SesRecipient:
    kind: FeedbackKind
    recipient: str | None
    status: str | None
    diagnostic: str | None


@dataclass
class SesNotification:
    type: str
    recipients: list[SesRecipient] = field(default_factory=list)
    source: str | None = None
    message_id: str | None = None


def _diagnostic(value: Any) -> str | None:
    text = " ".join(str(value or "").split())
    kind, sep, rest = text.partition(";")
    if sep and kind.strip().lower() in ("smtp", "x-postfix", "x-unix"):
        text = rest.strip()
    return text[:DIAGNOSTIC_MAX] or None


def _obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _message_id(mail: dict[str, Any]) -> str | None:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and common.get("messageId"):
        return str(common["messageId"])
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value"))
    return None


def parse_ses(message: str) -> SesNotification:
    """The bounced or complaining recipients of one SES notification."""
    try:
        data = json.loads(message)
    except ValueError:
        raise MalformedReport("the SES notification is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedReport("the SES notification is not a JSON object")
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    mail = _obj(data, "mail")
    out = SesNotification(kind, source=str(mail.get("source") or "") or None,
                          message_id=_message_id(mail))
    if kind == "Bounce":
        bounce = _obj(data, "bounce")
        hard = bounce.get("bounceType") == "Permanent"
        for r in bounce.get("bouncedRecipients") or []:
            if isinstance(r, dict):
                out.recipients.append(SesRecipient(
                    "hard_bounce" if hard else "soft_bounce", r.get("emailAddress"),
                    str(r.get("status"))[:16] if r.get("status") else
                    ("5.0.0" if hard else None),
                    _diagnostic(r.get("diagnosticCode")) or
                    f"SES {bounce.get('bounceType')}/{bounce.get('bounceSubType')}"))
    elif kind == "Complaint":
        complaint = _obj(data, "complaint")
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        agent = complaint.get("userAgent")
        for r in complaint.get("complainedRecipients") or []:
            if isinstance(r, dict):
                out.recipients.append(SesRecipient(
                    "complaint", r.get("emailAddress"), None,
                    (f"feedback-type: {feedback}" + (f" ({agent})" if agent else ""))
                    [:DIAGNOSTIC_MAX]))
    return out
