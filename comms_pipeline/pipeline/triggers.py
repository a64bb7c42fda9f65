"""The Python API for workflow systems: record that a communication must be made.

    from comms_pipeline.pipeline.triggers import trigger
    header_id = trigger(engine, contact_ref="C-1001", template_code="WELCOME",
                        entities={"subscription": {"number": "S-1"}},
                        idempotency_key="crm-event-42")

A repeated call with the same idempotency key returns the first header's id and writes
nothing. A value no request may hold (invalid Unicode such as a lone surrogate, a NUL
character, NaN or an infinity) raises
:class:`~comms_pipeline.core.request_values.InvalidValue`, a
``ValueError`` naming where it is (``params.amount: is not a number (NaN) ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.request_values import InvalidValue, check_fields
from comms_pipeline.core.states import HeaderStatus
from comms_pipeline.queue.births import insert_one
from comms_pipeline.queue.machine import HEADERS

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SEND_TO = ("all", "primary", "type")
__all__ = ["SEND_TO", "InvalidValue", "trigger"]


def trigger(target: Engine | Connection, *, contact_ref: str, template_code: str | None = None,
            event: str | None = None, event_number: str | None = None,
            rule_code: str | None = None, media: str | None = None, send_to: str = "primary",
            address_type: str | None = None, language: str | None = None,
            entities: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
            send_after: datetime | None = None, expires_at: datetime | None = None,
            priority: int = 2, idempotency_key: str | None = None,
            copy_of_id: int | None = None, override_consent: bool = False,
            await_resolution: bool = False, requested_by_system_id: int | None = None,
            is_test: bool = False) -> int:
    """Write one request header; return its id (the existing one for a repeated key).

    ``override_consent`` sends an important message whatever the contact's marketing opt-outs.
    ``await_resolution`` is a workflow event created "on create": the header waits in Awaiting
    Event Resolution until its ``event_number`` is resolved (``comms rules resolve``).
    ``is_test`` marks a test key's request: its entries are sent only to the simulator.
    """
    if send_to not in SEND_TO:
        raise ValueError(f"send_to must be one of {', '.join(SEND_TO)}, not {send_to!r}")
    if send_to == "type" and not address_type:
        raise ValueError("send_to='type' needs address_type (e.g. 'work')")
    if priority not in (1, 2, 3):
        raise ValueError("priority must be 1 (high), 2 (medium) or 3 (low)")
    if not template_code and not event:
        raise ValueError("a trigger names a template_code or an event")
    if await_resolution and not event_number:
        raise ValueError("await_resolution needs the event_number that will be resolved")
    check_fields(contact_ref=contact_ref, template_code=template_code, event=event,
                 event_number=event_number, rule_code=rule_code, media=media,
                 address_type=address_type, language=language, entities=entities,
                 params=params, idempotency_key=idempotency_key)
    values = {
        "contact_ref": contact_ref, "template_code": template_code, "event": event,
        "event_number": event_number, "rule_code": rule_code, "media": media,
        "send_to": send_to, "address_type": address_type, "language": language,
        "entities": dict(entities) if entities else None,
        "params": dict(params) if params else None, "send_after": send_after,
        "expires_at": expires_at, "priority": priority, "idempotency_key": idempotency_key,
        "copy_of_id": copy_of_id, "override_consent": override_consent,
        "requested_by_system_id": requested_by_system_id, "is_test": is_test,
        "status": (HeaderStatus.AWAITING_EVENT_RESOLUTION if await_resolution
                   else HeaderStatus.AWAITING_PROCESSING), "created_at": utcnow(),
    }
    if hasattr(target, "begin") and not hasattr(target, "in_transaction"):
        with target.begin() as conn:  # an Engine
            return _insert(conn, values)
    return _insert(target, values)  # type: ignore[arg-type]  # a Connection inside the caller's transaction


def _insert(conn: Connection, values: dict[str, Any]) -> int:
    """The header, born with its history; a repeated idempotency key returns the first one."""
    unique = "idempotency_key" if values["idempotency_key"] is not None else None
    return insert_one(conn, HEADERS, values, actor="trigger", unique=unique)
