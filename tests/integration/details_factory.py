"""Queue entries written straight into the tables, as the Comms Monitor leaves SMS, push and
external entries (merged text, state ``awaiting_send`` or ``awaiting_external``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.store.models import (
    addresses_t,
    details_t,
    headers_t,
    transitions_t,
)


def add_details(engine, media: str, targets: Sequence[tuple[str, str]], *,  # type: ignore[no-untyped-def]
                state: str = "awaiting_send", external_system_id: int | None = None,
                subject: str | None = None, contact_ref: str = "C-1",
                device_contact: bool = False, **extra: Any) -> list[int]:
    """One header and one detail per ``(address, body)``; returns the detail ids in order."""
    now = utcnow()
    with engine.begin() as conn:
        contact_id = None
        if device_contact:
            contact_id = add_contact(conn, contact_ref, "Test Person", addresses=[
                AddressSpec("device", address) for address, _ in targets])
        header_id = conn.execute(insert(headers_t).values(
            contact_ref=contact_ref, template_code="T1", media=media, status="processed",
            created_at=now).returning(headers_t.c.id)).scalar_one()
        rows = [{"header_id": header_id, "contact_id": contact_id, "media": media,
                 "direction": "outgoing", "address": address, "body": body, "subject": subject,
                 "state": state, "external_system_id": external_system_id, "priority": 2,
                 "created_at": now, **extra} for address, body in targets]
        stmt = insert(details_t).returning(details_t.c.id, sort_by_parameter_order=True)
        return list(conn.execute(stmt, rows).scalars())


def details(engine, ids: Sequence[int]) -> dict[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(select(details_t).where(details_t.c.id.in_(list(ids))))
        return {r.id: dict(r._mapping) for r in rows}


def transitions(engine, detail_id: int) -> list[tuple[str | None, str]]:  # type: ignore[no-untyped-def]
    t = transitions_t
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.from_state, t.c.to_state)
                            .where(t.c.kind == "detail", t.c.row_id == detail_id)
                            .order_by(t.c.id))
        return [tuple(r) for r in rows]


def device_addresses(engine) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    t = addresses_t
    with engine.connect() as conn:
        return {r.value: r.invalid_reason for r in conn.execute(
            select(t.c.value, t.c.invalid_reason).where(t.c.kind == "device"))}
