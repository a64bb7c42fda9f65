"""What following a dynamic link does, once per token.

Consent links set the contact's opt-in flag; service-request acceptances are recorded and
pushed to the external system configured for them (``[web] service_request_system``) as a
queue entry awaiting that system — delivered by its webhook or pulled through the API like
any other entry. The ``link_actions`` row (unique per token) and the effect are written in one
transaction, so a token acts exactly once even when two requests race with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import DetailState, HeaderStatus, Media
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline import link_records as records
from comms_pipeline.queue.births import insert_one
from comms_pipeline.queue.machine import DETAILS, HEADERS
from comms_pipeline.store.queries import find_external_system

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.pipeline.links import LinkPayload

log = structlog.get_logger(__name__)

CONSENT = {
    "opt_in_direct_marketing": ("opt_in_direct_marketing", True),
    "opt_out_direct_marketing": ("opt_in_direct_marketing", False),
    "opt_in_affiliate_marketing": ("opt_in_affiliate_marketing", True),
    "opt_out_affiliate_marketing": ("opt_in_affiliate_marketing", False),
}

#: What each link asks on its confirmation page, and the button that confirms it.
QUESTIONS = {
    "opt_in_direct_marketing": ("Receive our offers?", "Yes, send me offers"),
    "opt_out_direct_marketing": ("Stop receiving our offers?", "Unsubscribe"),
    "opt_in_affiliate_marketing": ("Receive our partners' offers?",
                                   "Yes, send me partners' offers"),
    "opt_out_affiliate_marketing": ("Stop receiving our partners' offers?", "Unsubscribe"),
    "service_request_response_acceptance": ("Accept the response to your service request?",
                                            "I accept"),
    "service_request_temporary_resolution_acceptance": (
        "Accept the temporary resolution of your service request?", "I accept"),
    "service_request_final_resolution_acceptance": (
        "Accept the final resolution of your service request?", "I accept"),
}


class UnknownLinkContact(CommsError):
    """The link names a contact that no longer exists."""


@dataclass(frozen=True)
class LinkResult:
    action: str
    at: datetime
    already_done: bool


def token_id(token: str) -> str:
    """The token's fingerprint: what ``link_actions`` keeps (never the token itself).

    Taken over the decoded bytes of each part, so two spellings of one token (base64's spare
    bits in a last character) are one token and cannot act twice.
    """
    digest = hashlib.sha256()
    for part in token.split("."):
        try:
            digest.update(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except (binascii.Error, ValueError):
            digest.update(part.encode("utf-8"))
        digest.update(b".")
    return digest.hexdigest()


def used_at(conn: Connection, token: str) -> datetime | None:
    return records.action_time(conn, token_id(token))


def perform(conn: Connection, settings: Any, payload: LinkPayload, token: str) -> LinkResult:
    """Do the link's action unless its token already acted (then report when it did)."""
    contact_id = records.contact_id_of(conn, payload.contact_ref)
    if contact_id is None:
        raise UnknownLinkContact()
    now = utcnow()
    detail_id = _own_detail(conn, payload, contact_id)
    action_id = records.record_action(conn, {
        "token_id": token_id(token), "contact_id": contact_id, "action": payload.action,
        "detail_id": detail_id, "at": now,
        "data": {"subject": payload.subject} if payload.subject else None,
    })
    if action_id is None:
        return LinkResult(payload.action, used_at(conn, token) or now, True)
    if payload.action in CONSENT:
        column, value = CONSENT[payload.action]
        records.set_consent(conn, contact_id, column, value)
        audit.record(conn, actor=audit.link_actor(token_id(token)), action="contact.consent",
                     target_kind="contact", target_id=contact_id,
                     change={column: {"after": value}, "link_action": payload.action})
    else:
        entry = _push_to_system(conn, settings, payload, contact_id, now)
        if entry is not None:
            records.note_action_data(conn, action_id,
                                     {"subject": payload.subject, "queue_entry": entry})
    log.info("link.acted", action=payload.action, contact_id=contact_id, detail_id=detail_id)
    return LinkResult(payload.action, now, False)


def _own_detail(conn: Connection, payload: LinkPayload, contact_id: int) -> int | None:
    """The communication the link came in (an unsubscribe token's subject), if it is the
    contact's."""
    if payload.action.startswith("service_request") or not payload.subject \
            or not payload.subject.isdigit() or len(payload.subject) > 18:
        return None
    return records.contacts_detail(conn, int(payload.subject), contact_id)


def _push_to_system(conn: Connection, settings: Any, payload: LinkPayload, contact_id: int,
                    now: datetime) -> int | None:
    """A queue entry awaiting the configured external system; None when none is configured."""
    code = settings.web.service_request_system
    if not code:
        return None
    system_id = find_external_system(conn, code)
    if system_id is None:
        log.warning("link.no_such_system", system=code, action=payload.action)
        return None
    body = {"event": payload.action, "service_request": payload.subject,
            "contact_ref": payload.contact_ref, "at": now.isoformat() + "Z"}
    header_id = insert_one(conn, HEADERS, dict(
        contact_ref=payload.contact_ref, event=payload.action, event_number=payload.subject,
        media=Media.EXTERNAL, status=HeaderStatus.PROCESSED, details_created=1, created_at=now,
        updated_at=now), actor="dynamic-link")
    detail_id = insert_one(conn, DETAILS, dict(
        header_id=header_id, contact_id=contact_id, media=Media.EXTERNAL,
        direction="outgoing", classification="customer_care", external_system_id=system_id,
        subject=f"{payload.action} {payload.subject or ''}".strip(),
        body=json.dumps(body, sort_keys=True), state=DetailState.AWAITING_EXTERNAL,
        priority=2, created_at=now), actor="dynamic-link")
    return detail_id
