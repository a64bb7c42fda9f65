"""Reading bounces and complaints: RFC 3464 DSNs and RFC 5965 (ARF) feedback reports.

Python's email package does the MIME work: a ``message/delivery-status`` part is parsed into
its field blocks (the per-message block, then one per recipient), a
``message/feedback-report`` part into one block. The returned original (``message/rfc822`` or
``text/rfc822-headers``) gives its Message-ID and Return-Path (our VERP address), which name
the message when the envelope does not.

Nothing here raises but :class:`MalformedReport`: whatever came in is either a report or a
reason it is not one, so the receiver never falls over a stranger's mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from comms_pipeline.core.feedback_events import FeedbackKind

#: RFC 3463 ``class.subject.detail``: 2, 4 or 5, then up to three digits each.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<!\d)([245])\d\d(?!\d)")
DIAGNOSTIC_MAX = 1000


class MalformedReport(ValueError):
    """The message is not a delivery status notification or a feedback report we can read."""


@dataclass(frozen=True)
class RecipientReport:
    kind: FeedbackKind
    recipient: str | None
    status: str | None
    diagnostic: str | None


@dataclass
class ParsedReport:
    """A report's recipients, and what names the original message."""

    report_type: str
    recipients: list[RecipientReport] = field(default_factory=list)
    #: The original's Message-ID (from the returned headers), else None.
    message_id: str | None = None
    #: The original's envelope sender (Return-Path, ARF Original-Mail-From): our VERP address.
    original_sender: str | None = None


def _unfold(value: object) -> str:
    return " ".join(str(value or "").split())


def _address(value: object) -> str | None:
    """``rfc822; user@example.org`` -> ``user@example.org``."""
    text = _unfold(value)
    if not text:
        return None
    _, sep, rest = text.partition(";")
    return (rest if sep else text).strip().strip("<>") or None


def _diagnostic(value: object) -> str | None:
    """``smtp; 550 5.1.1 …`` -> ``550 5.1.1 …`` (the diagnostic type is always smtp or x-…)."""
    text = _unfold(value)
    if not text:
        return None
    kind, sep, rest = text.partition(";")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,20}", kind.strip()):
        text = rest.strip()
    return text[:DIAGNOSTIC_MAX] or None


def _status(status_field: object, diagnostic: str | None) -> str | None:
    for text in (_unfold(status_field), diagnostic or ""):
        found = _STATUS.search(text)
        if found:
            return ".".join(found.groups())
    code = _SMTP_CODE.search(diagnostic or "")
    return f"{code.group(1)}.0.0" if code else None


def _kind(action: str, status: str | None) -> FeedbackKind | None:
    """failed + 5.x.x: hard; delayed, or failed with 4.x.x: soft; delivered / relayed /
    expanded: no bounce at all (None)."""
    action = action.lower()
    if action in ("delivered", "relayed", "expanded"):
        return None
    if action == "failed":
        return "soft_bounce" if status and status.startswith("4.") else "hard_bounce"
    if action == "delayed":
        return "soft_bounce"
    # No (or an unknown) Action: the status decides, as it does for old MTAs.
    if status and status.startswith("5."):
        return "hard_bounce"
    if status and status.startswith("4."):
        return "soft_bounce"
    return None


def _payload_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    # Some MTAs send the status as text/plain-ish bytes the parser left unsplit.
    text = _payload_bytes(part)
    return [HeaderParser(policy=compat32).parsestr(chunk.strip() + "\n")
            for chunk in re.split(r"\r?\n\s*\r?\n", text.decode("utf-8", "replace"))
            if chunk.strip()]


def _original_headers(msg: Message) -> Message | None:
    """The returned original's headers: a message/rfc822 part, or text/rfc822-headers."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if ctype == "text/rfc822-headers":
            raw = _payload_bytes(part)
            return HeaderParser(policy=compat32).parsestr(raw.decode("utf-8", "replace"))
    return None


def _find(msg: Message, ctype: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == ctype:
            return part
    return None


def _delivery_status(part: Message) -> list[RecipientReport]:
    blocks = _blocks(part)
    out: list[RecipientReport] = []
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        if recipient is None and not block.get("Action"):
            continue  # the per-message block when the MTA sent no recipient block
        diagnostic = _diagnostic(block.get("Diagnostic-Code"))
        status = _status(block.get("Status"), diagnostic)
        kind = _kind(_unfold(block.get("Action")), status)
        if kind is not None:
            out.append(RecipientReport(kind, recipient, status, diagnostic))
    return out


def _feedback(part: Message, original: Message | None) -> tuple[RecipientReport, str | None]:
    blocks = _blocks(part)
    if not blocks:
        raise MalformedReport("the feedback-report part is empty")
    fields = blocks[0]
    feedback_type = _unfold(fields.get("Feedback-Type")) or "abuse"
    agent = _unfold(fields.get("User-Agent"))
    recipient = _address(fields.get("Original-Rcpt-To")) or (
        _address(original.get("To")) if original is not None else None)
    diagnostic = f"feedback-type: {feedback_type}" + (f" ({agent})" if agent else "")
    return (RecipientReport("complaint", recipient, None, diagnostic[:DIAGNOSTIC_MAX]),
            _address(fields.get("Original-Mail-From")))


def parse_report(data: bytes) -> ParsedReport:
    """The recipients a DSN or ARF report is about; :class:`MalformedReport` otherwise."""
    try:
        msg = message_from_bytes(data, policy=compat32)
    except Exception as exc:  # the parser is lenient; this is a last guard
        raise MalformedReport(f"unreadable message ({type(exc).__name__})") from None
    try:
        return _parse(msg)
    except MalformedReport:
        raise
    except Exception as exc:  # a stranger's mail must never take the receiver down
        raise MalformedReport(f"unreadable report ({type(exc).__name__})") from None


def _parse(msg: Message) -> ParsedReport:
    original = _original_headers(msg)
    message_id = _unfold(original.get("Message-ID")) if original is not None else ""
    return_path = _address(original.get("Return-Path")) if original is not None else None
    feedback = _find(msg, "message/feedback-report")
    if feedback is not None:
        recipient, mail_from = _feedback(feedback, original)
        return ParsedReport("feedback-report", [recipient], message_id or None,
                            mail_from or return_path)
    status = _find(msg, "message/delivery-status") or _find(msg, "message/global-delivery-status")
    if status is None:
        raise MalformedReport(f"not a delivery status notification or a feedback report "
                              f"({msg.get_content_type()})")
    recipients = _delivery_status(status)
    return ParsedReport("delivery-status", recipients, message_id or None, return_path)
