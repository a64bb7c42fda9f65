"""The reads behind the Web API: queue entries with their system and contact, cursors, and
stored emails read back.

A cursor is opaque to clients (base64 of the last row's sort key and a fingerprint of the
filters): it stays valid while entries change state, and a cursor from another listing is
refused rather than silently giving a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import json
from datetime import datetime
from typing import Any

from comms_pipeline.core.retention import removal_notice
from comms_pipeline.core.states import PublicState, public_state
from comms_pipeline.queue.system_queue import document_rows
from comms_pipeline.web.errors import invalid
from comms_pipeline.web.schemas import DocumentRef, utc_out

TIMES = ("created_at", "updated_at", "completed_at", "expires_at")


def shown_state(state: str, expires_at: datetime | None, now: datetime) -> str:
    """The public state; a Pending entry past its expiry is Expired even before the sweep."""
    public = public_state(state)
    if public == PublicState.PENDING and expires_at is not None and expires_at <= now:
        return PublicState.EXPIRED.value
    return public.value


def entry_dict(row: Any, now: datetime) -> dict[str, Any]:
    data = {k: v for k, v in row._mapping.items()}
    data["state"] = shown_state(row.state, row.expires_at, now)
    data["removed"] = removal_notice(data.pop("purged_at", None), data.pop("purged_by", None))
    for name in TIMES:
        data[name] = utc_out(data.get(name))
    return data


def document_refs(conn: Any, detail_ids: list[int]) -> dict[int, DocumentRef]:
    if not detail_ids:
        return {}
    return {r.detail_id: DocumentRef(id=r.id, kind=r.kind, content_type=r.content_type,
                                     size=r.size) for r in document_rows(conn, detail_ids)}


# -- cursors ----------------------------------------------------------------------------------
def filters_fingerprint(**filters: Any) -> str:
    data = json.dumps(filters, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:12]


def encode_cursor(key: list[Any], scope: str) -> str:
    raw = json.dumps({"k": key, "f": scope}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str | None, scope: str, length: int) -> list[int] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key = data["k"]
        valid = (data["f"] == scope and isinstance(key, list) and len(key) == length
                 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
                         for v in key))
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise invalid("the cursor is not one this listing gave out (or the filters changed)",
                      code="invalid_cursor")
    return key


# -- stored emails ----------------------------------------------------------------------------
def parse_eml(data: bytes) -> dict[str, str | None]:
    """Subject, sender, recipient, date, text and HTML of a stored .eml."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    found: dict[str, str | None] = {"subject": _header(msg, "Subject"),
                                    "sender": _header(msg, "From"), "to": _header(msg, "To"),
                                    "date": _header(msg, "Date"), "text": None, "html": None}
    for kind in ("plain", "html"):
        part = msg.get_body(preferencelist=(kind,))
        if part is not None:
            try:
                found["text" if kind == "plain" else "html"] = part.get_content()
            except (LookupError, UnicodeError):
                continue
    return found


def _header(msg: Any, name: str) -> str | None:
    value = msg.get(name)
    return str(value) if value is not None else None
