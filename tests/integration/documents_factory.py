"""Queue entries with their merged documents, written straight into the tables, as the Email
and Letter Monitors leave them (state ``awaiting_send``, one ``documents`` row per entry)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.models import contacts_t, details_t, documents_t

CONTENT_TYPES = {"email": "message/rfc822", "letter": "application/pdf"}


def make_pdf(pages: int = 1) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_eml(to: str, subject: str = "Your bill", body: str = "Hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Comms Demo <no-reply@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="comms.example.com")
    msg.set_content(body)
    msg.add_alternative(f"<p>{body}</p>", subtype="html")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def ensure_contact(engine, ref: str) -> int:  # type: ignore[no-untyped-def]
    t = contacts_t
    with engine.begin() as conn:
        found = conn.execute(select(t.c.id).where(t.c.ref == ref)).scalar_one_or_none()
        if found is not None:
            return found
        return add_contact(conn, ref, f"Contact {ref}",
                           addresses=[AddressSpec("email", f"{ref.lower()}@example.com",
                                                  is_primary=True)])


def add_entries(engine, media: str, count: int, *, contact_ref: str = "C-1",  # type: ignore[no-untyped-def]
                address: Callable[[int], str] | None = None,
                content: Callable[[int, str], bytes] | None = None,
                with_document: bool = True, **detail_values) -> list[int]:
    """``count`` entries of ``media`` awaiting send, each with its document; returns detail ids."""
    contact_id = ensure_contact(engine, contact_ref)
    header_id = trigger(engine, contact_ref=contact_ref, template_code=f"T-{media}")
    address = address or (lambda i: f"user{i}@example.com" if media == "email"
                          else f"{i} High Street")
    if content is None:
        pdf = make_pdf()
        content = (lambda i, to: make_eml(to)) if media == "email" else (lambda i, to: pdf)
    now = utcnow()
    rows = [{"header_id": header_id, "contact_id": contact_id, "media": media,
             "direction": "outgoing", "address": address(i), "state": "awaiting_send",
             "subject": "Your bill", "created_at": now, **detail_values}
            for i in range(count)]
    with engine.begin() as conn:
        ids = list(conn.execute(insert(details_t).returning(details_t.c.id,
                                                            sort_by_parameter_order=True),
                                rows).scalars())
        if with_document:
            docs = []
            for i, (detail_id, row) in enumerate(zip(ids, rows, strict=True)):
                data = content(i, row["address"])
                docs.append({"detail_id": detail_id, "kind": media,
                             "content_type": CONTENT_TYPES[media], "content": data,
                             "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                             "created_at": now})
            conn.execute(insert(documents_t), docs)
    return ids


def details(engine, ids: list[int]) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(select(details_t).where(details_t.c.id.in_(ids))).mappings()
        return {r["id"]: dict(r) for r in rows}


def documents(engine) -> list[dict]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(documents_t).order_by(documents_t.c.id))
                .mappings()]
