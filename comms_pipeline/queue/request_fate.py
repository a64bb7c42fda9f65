"""Every request's fate: the reads behind ``comms requests``, ``GET /v1/requests`` and the
agent page's "not sent" list.

A request header ends Processed (its queue entries carry the rest of the story), or Error,
Not Sent, Opted Out, Cancelled with a code and a reason; these functions put the header, its
entries and their history from ``state_transitions`` side by side, so nobody has to join them
by hand. ``system_id`` scopes a read to the requests one external system made (others are
simply not found).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, false, or_, select

from comms_pipeline.core.states import HeaderStatus, public_state
from comms_pipeline.store.models import (
    contacts_t,
    details_t,
    headers_t,
    systems_t,
    transitions_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


#: Header statuses that mean nothing was (or will be) sent for the request.
UNSENT = (HeaderStatus.ERROR, HeaderStatus.NOT_SENT, HeaderStatus.OPTED_OUT,
          HeaderStatus.CANCELLED)
_HEADER_COLUMNS = ("id", "contact_ref", "template_code", "event", "event_number", "rule_code",
                   "media", "status", "status_code", "status_reason", "details_created",
                   "priority", "send_after", "expires_at", "created_at", "updated_at",
                   "idempotency_key", "is_test")


class UnknownStatus(ValueError):
    """A status filter that names no request status."""


def parse_status(text: str) -> str:
    """``error``, ``Error``, ``Not Sent``, ``not-sent`` -> the stored status."""
    value = text.strip().lower().replace(" ", "_").replace("-", "_")
    if value not in {s.value for s in HeaderStatus}:
        raise UnknownStatus(f"no request status {text!r} (known: "
                            f"{', '.join(s.value for s in HeaderStatus)})")
    return value


def _header_select():
    h = headers_t.c
    return select(*(h[c] for c in _HEADER_COLUMNS),
                  systems_t.c.code.label("requested_by")).outerjoin(
        systems_t, systems_t.c.id == h.requested_by_system_id)


def list_requests(conn: Connection, *, status: str | None = None, code: str | None = None,
                  since: datetime | None = None, contact_ref: str | None = None,
                  system_id: int | None = None, before_id: int | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """Request headers, newest first, filtered; ``before_id`` pages on."""
    h = headers_t.c
    q = _header_select()
    if status:
        q = q.where(h.status == parse_status(status))
    if code:
        q = q.where(h.status_code == code)
    if since is not None:
        q = q.where(h.created_at >= since)
    if contact_ref:
        q = q.where(h.contact_ref == contact_ref)
    if system_id is not None:
        q = q.where(h.requested_by_system_id == system_id)
    if before_id is not None:
        q = q.where(h.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(h.id.desc()).limit(limit)).mappings()]


def unsent_for_contact(conn: Connection, contact_ref: str, limit: int = 100
                       ) -> list[dict[str, Any]]:
    """A contact's requests that were not sent (error, not sent, opted out, cancelled) and
    its queue entries that ended Rejected or Expired, newest first, each with its reason."""
    h, d = headers_t.c, details_t.c
    headers = conn.execute(_header_select().where(
        h.contact_ref == contact_ref, h.status.in_([s.value for s in UNSENT]))
        .order_by(h.id.desc()).limit(limit)).mappings().all()
    entries = conn.execute(
        select(h.id, h.template_code, h.created_at, d.id.label("entry_id"), d.media, d.state,
               d.error_code, d.error_description)
        .join(details_t, d.header_id == h.id)
        .where(h.contact_ref == contact_ref, d.state.in_(("rejected", "expired")))
        .order_by(d.id.desc()).limit(limit)).mappings().all()
    items = [{"request_id": r["id"], "entry_id": None, "template_code": r["template_code"],
              "media": r["media"], "status": r["status"], "code": r["status_code"],
              "reason": r["status_reason"], "created_at": r["created_at"]} for r in headers]
    items += [{"request_id": r["id"], "entry_id": r["entry_id"],
               "template_code": r["template_code"], "media": r["media"],
               "status": public_state(r["state"]).value, "code": r["error_code"],
               "reason": r["error_description"], "created_at": r["created_at"]}
              for r in entries]
    items.sort(key=lambda i: (i["request_id"], i["entry_id"] or 0), reverse=True)
    return items[:limit]


def request_fate(conn: Connection, request_id: int, *, system_id: int | None = None
                 ) -> dict[str, Any] | None:
    """One request: its header, its queue entries and their states, and the history of both
    (oldest first). None when there is no such request (or it is not ``system_id``'s)."""
    h, d, t = headers_t.c, details_t.c, transitions_t.c
    q = _header_select().where(h.id == request_id)
    if system_id is not None:
        q = q.where(h.requested_by_system_id == system_id)
    header = conn.execute(q).mappings().first()
    if header is None:
        return None
    entries = conn.execute(
        select(d.id, d.media, d.address, d.address_type, d.language, d.state, d.error_code,
               d.error_description, d.gateway_ref, d.gateway, d.attempts, d.next_attempt_at,
               d.created_at, d.completed_at, systems_t.c.code.label("external_system"))
        .outerjoin(systems_t, systems_t.c.id == d.external_system_id)
        .where(d.header_id == request_id).order_by(d.id)).mappings().all()
    ids = [e["id"] for e in entries]
    history = conn.execute(
        select(t.kind, t.row_id, t.from_state, t.to_state, t.actor, t.code, t.at)
        .where(or_(and_(t.kind == "header", t.row_id == request_id),
                   and_(t.kind == "detail", t.row_id.in_(ids)) if ids else false()))
        .order_by(t.at, t.id)).mappings().all()
    return {"header": dict(header),
            "entries": [{**e, "public_state": public_state(e["state"]).value} for e in entries],
            "history": [dict(r) for r in history]}


def header_with_key(conn: Connection, idempotency_key: str) -> int | None:
    """The id of the header stored with ``idempotency_key`` (its scoped form), if any."""
    return conn.execute(select(headers_t.c.id).where(
        headers_t.c.idempotency_key == idempotency_key)).scalar_one_or_none()


def contact_exists(conn: Connection, ref: str) -> bool:
    return conn.execute(select(contacts_t.c.id).where(contacts_t.c.ref == ref)).first() \
        is not None
