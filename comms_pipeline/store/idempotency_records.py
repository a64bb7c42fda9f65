"""The rows behind ``Idempotency-Key`` (see :mod:`comms_pipeline.web.idempotency`): reserved
before the action runs, answered in the same transaction as the change they describe."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from comms_pipeline.store.dialect import insert_ignore
from comms_pipeline.store.models import idempotency_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

records_t = idempotency_t


def reserve(conn: Connection, key_id: int, key: str, request_hash: str,
            at: datetime) -> int | None:
    """Insert the key's record (answer to come); None when the key already has one."""
    return insert_ignore(conn, records_t, {
        "api_key_id": key_id, "key": key, "request_hash": request_hash, "status_code": 0,
        "response": None, "created_at": at,
    }, ["api_key_id", "key"])


def stored_answer(conn: Connection, key_id: int, key: str) -> Any:
    """The key's record: ``request_hash``, ``status_code`` and ``response``."""
    return conn.execute(select(records_t.c.request_hash, records_t.c.status_code,
                               records_t.c.response)
                        .where(records_t.c.api_key_id == key_id,
                               records_t.c.key == key)).one()


def store_answer(conn: Connection, record_id: int, status: int,
                 response: dict[str, Any]) -> None:
    """Write the answer into the reserved record."""
    conn.execute(update(records_t).where(records_t.c.id == record_id)
                 .values(status_code=status, response=response))
