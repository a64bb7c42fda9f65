"""The communication queue for external systems: pull your entries, then mark each one
Completed, Rejected, or Completed and Removed.

An external system's key sees only its own entries (another system's entry answers 404, as if
it did not exist); an admin key sees every external system's. Entries are listed in the order
to process them (priority, then number); Expired entries are never offered.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import Media, public_state
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.queue import system_queue as sq
from comms_pipeline.queue.actions import (
    Ack,
    EntryNotFound,
    TransitionConflict,
    apply_action,
    apply_actions,
)
from comms_pipeline.web.auth import BearerKey, Gate, check, system_scope
from comms_pipeline.web.downloads import document_response
from comms_pipeline.web.errors import ApiError, error_responses, not_found
from comms_pipeline.web.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKey,
    fingerprint,
    run_idempotent,
)
from comms_pipeline.web.queries import (
    decode_cursor,
    document_refs,
    encode_cursor,
    entry_dict,
    filters_fingerprint,
    parse_eml,
)
from comms_pipeline.web.schemas import (
    BatchBody,
    BatchOutcome,
    Code,
    QueueEntry,
    QueueEntryContent,
    QueuePage,
    QueueState,
    RejectBody,
)
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/queue", tags=["queue"],
                   responses=error_responses(401, 403, 404, 422),
                   route_class=StrictJsonRoute)
ROLES = ("external", "admin")
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The entry's number")]


@router.get("", response_model=QueuePage, summary="List your queue entries")
def list_entries(request: Request, key: BearerKey,
                 state: QueueState = QueueState.PENDING, media: Media | None = None,
                 contact: Annotated[Code | None, Query(description="Contact ref")] = None,
                 cursor: Annotated[str | None, Query(max_length=400)] = None,
                 limit: Annotated[int | None, Query(ge=1, le=10000)] = None) -> dict:
    web = request.app.state.web
    limit = min(limit or web.page_size, web.max_page_size)
    with request.app.state.engine.begin() as conn:
        scope_id = system_scope(check(conn, key, ROLES))
        scope = filters_fingerprint(s=state.value, m=media, c=contact, x=scope_id)
        after = decode_cursor(cursor, scope, 2)
        rows = sq.list_queue(conn, scope_id, state.value, now=utcnow(),
                             media=media.value if media is not None else None,
                             contact=contact, after=after, limit=limit)
    now = utcnow()
    items = [entry_dict(r, now) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.priority, last.id], scope)
    return {"items": items, "next_cursor": next_cursor}


@router.post("/batch", response_model=BatchOutcome,
             responses={200: {"model": BatchOutcome}},
             summary="Complete, reject or remove many entries in one call")
def batch(request: Request, body: BatchBody, key: BearerKey,
          idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Each action is its own compare-and-set: one refused entry does not stop the others,
    and each result says what happened to its entry (200, 404 or 409 with the reason)."""

    def act(conn: Any, principal: Principal) -> tuple[int, dict[str, Any]]:
        acks = [Ack(i.id, i.action.value, i.code, i.description) for i in body.actions]
        outcomes = apply_actions(conn, acks, actor=principal.actor,
                                 external_system_id=system_scope(principal))
        results = []
        for ack, outcome in zip(acks, outcomes, strict=True):
            if isinstance(outcome, EntryNotFound):
                results.append({"id": ack.id, "status": 404, "code": "not_found",
                                "message": f"no queue entry {ack.id}"})
            elif isinstance(outcome, TransitionConflict):
                results.append({"id": ack.id, "status": 409, "state": outcome.state,
                                "code": "conflict", "message": str(outcome)})
            else:
                results.append({"id": ack.id, "status": 200,
                                "state": public_state(str(outcome)).value})
        return 200, BatchOutcome(results=results).model_dump(mode="json")

    request_hash = fingerprint("POST", "/v1/queue/batch", body.model_dump(mode="json"))
    status, payload, replayed = run_idempotent(request.app.state.engine, Gate(key, ROLES),
                                               idempotency_key, request_hash, act)
    return JSONResponse(payload, status_code=status,
                        headers={REPLAYED_HEADER: "true"} if replayed else {})


@router.get("/{entry_id}", response_model=QueueEntryContent,
            summary="One entry with its merged content")
def get_entry(request: Request, entry_id: EntryId, key: BearerKey) -> dict:
    now = utcnow()
    with request.app.state.engine.begin() as conn:
        scope_id = system_scope(check(conn, key, ROLES))
        row = sq.queue_entry(conn, entry_id, scope_id, with_body=True)
        if row is None:
            raise not_found(f"no queue entry {entry_id}")
        docs = document_refs(conn, [entry_id])
        content = None
        if entry_id in docs and docs[entry_id].kind == "email":
            content = sq.document_content(conn, entry_id)
    data = entry_dict(row, now)
    data["document"] = docs.get(entry_id)
    if content is not None:
        data["html"] = parse_eml(content)["html"]
    return data


@router.get("/{entry_id}/document", summary="The entry's stored document (.eml or .pdf)",
            response_class=Response,
            responses={200: {"content": {"message/rfc822": {}, "application/pdf": {}}}})
def get_entry_document(request: Request, entry_id: EntryId, key: BearerKey) -> Response:
    with request.app.state.engine.begin() as conn:
        scope_id = system_scope(check(conn, key, ROLES))
        doc_id = sq.entry_document_id(conn, entry_id, scope_id)
    if doc_id is None:
        raise not_found(f"queue entry {entry_id} has no stored document")
    return document_response(request, doc_id)


def _transition(request: Request, key: str, entry_id: int, action: str,
                idempotency_key: str | None, body: dict[str, Any] | None = None) -> JSONResponse:
    def act(conn: Any, principal: Principal) -> tuple[int, dict[str, Any]]:
        try:
            apply_action(conn, entry_id, action, actor=principal.actor,
                         external_system_id=system_scope(principal),
                         code=(body or {}).get("code"), description=(body or {}).get("description"))
        except EntryNotFound:
            raise not_found(f"no queue entry {entry_id}") from None
        except TransitionConflict as exc:
            raise ApiError(409, "conflict", str(exc), {"state": exc.state}) from None
        row = sq.queue_entry(conn, entry_id)
        return 200, QueueEntry.model_validate(entry_dict(row, utcnow())).model_dump(mode="json")

    request_hash = fingerprint("POST", f"/v1/queue/{entry_id}/{action}", body)
    status, payload, replayed = run_idempotent(request.app.state.engine, Gate(key, ROLES),
                                               idempotency_key, request_hash, act)
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    return JSONResponse(payload, status_code=status, headers=headers)


_ACTION_RESPONSES = {200: {"model": QueueEntry}, **error_responses(409)}


@router.post("/{entry_id}/complete", response_model=QueueEntry, responses=_ACTION_RESPONSES,
             summary="Mark a Pending entry Completed")
def complete(request: Request, entry_id: EntryId, key: BearerKey,
             idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return _transition(request, key, entry_id, "complete", idempotency_key)


@router.post("/{entry_id}/reject", response_model=QueueEntry, responses=_ACTION_RESPONSES,
             summary="Mark a Pending entry Rejected, with your error code and description")
def reject(request: Request, entry_id: EntryId, body: RejectBody, key: BearerKey,
           idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return _transition(request, key, entry_id, "reject", idempotency_key,
                       body.model_dump())


@router.post("/{entry_id}/remove", response_model=QueueEntry, responses=_ACTION_RESPONSES,
             summary="Mark a Pending or Completed entry Completed and Removed")
def remove(request: Request, entry_id: EntryId, key: BearerKey,
           idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return _transition(request, key, entry_id, "remove", idempotency_key)

