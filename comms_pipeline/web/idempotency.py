"""``Idempotency-Key``: a repeated call gets the first call's answer and changes nothing.

The answer is stored in ``idempotency_records`` in the same transaction as the change it
describes, so there is never a change without its record or a record without its change.
The record is reserved before the action runs, so of two calls racing with one key the
second waits for the first to commit and then answers with its record. The same key with a
different request is refused (422): the key names one request, not a slot to reuse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Header

from comms_pipeline.core.clock import utcnow
from comms_pipeline.store import idempotency_records as records
from comms_pipeline.web.errors import ApiError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.pipeline.apikeys import Principal

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
    description="Repeat a call safely: the same key and request get the first answer")]

Action = Callable[["Connection", "Principal"], tuple[int, dict[str, Any]]]


def fingerprint(method: str, path: str, body: Any = None) -> str:
    data = json.dumps([method.upper(), path, body], sort_keys=True, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def run_idempotent(engine: Engine, gate: Callable[[Connection], Principal], key: str | None,
                   request_hash: str, action: Action) -> tuple[int, dict[str, Any], bool]:
    """``(status, body, replayed)`` of ``action`` run once per ``key``.

    ``gate(conn)`` checks the caller (raising 401/403) in the same transaction;
    ``action(conn, principal)`` returns ``(status, body)`` or raises :class:`ApiError`; a
    client error (4xx) is an answer too and is stored like a success, after its writes are
    rolled back. The key's record is inserted *before* acting: a second call with the key
    waits on that row (PostgreSQL's unique index; SQLite's single writer) and then replays
    the answer.
    """
    with engine.begin() as conn:
        principal = gate(conn)
        if key is None:  # an ApiError rolls the whole transaction back
            status, body = action(conn, principal)
            return status, body, False
        record_id = records.reserve(conn, principal.key_id, key, request_hash, utcnow())
        if record_id is None:
            found = records.stored_answer(conn, principal.key_id, key)
            return _replay(found, request_hash)
        status, body = _attempt(conn, principal, action)
        records.store_answer(conn, record_id, status, body)
    return status, body, False


def _attempt(conn: Connection, principal: Principal,
             action: Action) -> tuple[int, dict[str, Any]]:
    savepoint = conn.begin_nested()
    try:
        status, body = action(conn, principal)
    except ApiError as exc:
        savepoint.rollback()
        if exc.status >= 500 or exc.status == 429:  # a limit passes: the call may be repeated
            raise
        return exc.status, exc.body()
    savepoint.commit()
    return status, body


def _replay(found: Any, request_hash: str) -> tuple[int, dict[str, Any], bool]:
    if found.request_hash != request_hash:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used for a different request; use a new key "
                       "for a new request")
    return int(found.status_code), dict(found.response or {}), True

