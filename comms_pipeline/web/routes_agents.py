"""Agents: what was sent to a customer, its fate and its tracking, and the stored documents.

Agent and admin keys only. Reading a stored email here never counts as an open: the preview
drops the open pixel, and the agent page shows the HTML in a sandboxed frame.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import Media
from comms_pipeline.notifications import log as comm_log
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.pipeline.tracking import (
    run_report,
    strip_pixel,
    tracking_counts,
    tracking_events,
)
from comms_pipeline.queue.request_fate import unsent_for_contact
from comms_pipeline.queue.system_queue import contact_history
from comms_pipeline.store.queries import (
    detail_exists,
    external_system_code,
    find_contact,
    run_exists,
)
from comms_pipeline.web.auth import require
from comms_pipeline.web.downloads import document_bytes, document_response, presigned_url
from comms_pipeline.web.errors import ApiError, error_responses, not_found
from comms_pipeline.web.queries import (
    decode_cursor,
    document_refs,
    encode_cursor,
    entry_dict,
    filters_fingerprint,
    parse_eml,
)
from comms_pipeline.web.request_schemas import UnsentPage
from comms_pipeline.web.schemas import (
    NO_NUL,
    CommunicationsLog,
    CommunicationsPage,
    DocumentLink,
    EmailPreview,
    Me,
    RunTrackingReport,
    TrackingEventOut,
    utc_out,
)
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(tags=["agents"], responses=error_responses(401, 403, 404, 422),
                   route_class=StrictJsonRoute)
Agent = Annotated[Principal, Depends(require("agent", "admin"))]
DocId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/v1/me", response_model=Me, summary="Who the key belongs to", tags=["keys"])
def me(request: Request,
       principal: Annotated[Principal, Depends(require("external", "agent", "admin"))]) -> dict:
    system = None
    if principal.external_system_id is not None:
        with request.app.state.engine.connect() as conn:
            system = external_system_code(conn, principal.external_system_id)
    return {"name": principal.name, "role": principal.role, "key_prefix": principal.prefix,
            "external_system": system, "kind": principal.kind}


@router.get("/v1/contacts/{ref}/log", response_model=CommunicationsLog,
            summary="A contact's communications log: agents' interactions and the sends, "
                    "newest first, with the follow-ups they refer to")
def communications_log(request: Request, principal: Agent,
                       ref: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)],
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    try:
        with request.app.state.engine.begin() as conn:  # sends not yet logged are added
            entries = comm_log.list_for_contact(conn, ref, limit=limit)
    except comm_log.CommunicationError:
        raise not_found(f"no contact {ref!r}") from None
    return {"contact_ref": ref, "items": [
        {"id": e.id, "media": e.media, "direction": e.direction, "category": e.category,
         "subject": e.subject, "content": e.content, "status": e.status,
         "follow_up_of_id": e.follow_up_of_id, "queue_entry_id": e.detail_id,
         "created_by": e.created_by, "created_at": utc_out(e.created_at),
         "completed_at": utc_out(e.completed_at), "removed": e.removed} for e in entries]}


@router.get("/v1/contacts/{ref}/communications", response_model=CommunicationsPage,
            summary="A contact's communications, newest first, with state, errors, tracking")
def communications(request: Request, principal: Agent,
                   ref: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)],
                   media: Media | None = None,
                   cursor: Annotated[str | None, Query(max_length=400)] = None,
                   limit: Annotated[int | None, Query(ge=1, le=10000)] = None) -> dict:
    web = request.app.state.web
    limit = min(limit or web.page_size, web.max_page_size)
    scope = filters_fingerprint(r=ref, m=media)
    before = decode_cursor(cursor, scope, 1)
    now = utcnow()
    with request.app.state.engine.connect() as conn:
        contact = find_contact(conn, ref)
        if contact is None:
            raise not_found(f"no contact {ref!r}")
        rows = contact_history(conn, contact.id,
                               media=media.value if media is not None else None,
                               before=before[0] if before is not None else None, limit=limit)
        page = rows[:limit]
        ids = [r.id for r in page]
        docs = document_refs(conn, ids)
        counts = tracking_counts(conn, ids)
    items = []
    for row in page:
        item = entry_dict(row, now)
        item["document"] = docs.get(row.id)
        summary = counts.get(row.id, {})
        item["tracking"] = {**summary,
                            "first_event_at": utc_out(summary.get("first_event_at")),
                            "last_event_at": utc_out(summary.get("last_event_at"))}
        items.append(item)
    next_cursor = encode_cursor([page[-1].id], scope) if len(rows) > limit else None
    return {"contact": {"ref": contact.ref, "name": contact.name}, "items": items,
            "next_cursor": next_cursor}


@router.get("/v1/communications/{detail_id}/tracking", response_model=list[TrackingEventOut],
            summary="Every open and click of one communication")
def communication_tracking(request: Request, principal: Agent, detail_id: DocId) -> list[dict]:
    with request.app.state.engine.connect() as conn:
        if not detail_exists(conn, detail_id):
            raise not_found(f"no communication {detail_id}")
        events = tracking_events(conn, detail_id)
    return [{**e, "at": utc_out(e["at"])} for e in events]


@router.get("/v1/documents/{document_id}", response_class=Response,
            summary="Download a stored email (.eml) or letter (.pdf)",
            responses={200: {"content": {"message/rfc822": {}, "application/pdf": {}},
                             "description": "The document's bytes"}, **error_responses(409)})
def download(request: Request, principal: Agent, document_id: DocId) -> Response:
    return document_response(request, document_id)


@router.get("/v1/documents/{document_id}/preview", response_model=EmailPreview,
            responses=error_responses(409), summary="A stored email read back for display")
def preview(request: Request, principal: Agent, document_id: DocId) -> dict:
    info, data = document_bytes(request, document_id)
    if info.kind != "email":
        raise ApiError(409, "not_an_email", f"document {document_id} is a {info.kind}; "
                       "download it instead")
    parsed = parse_eml(data)
    if parsed["html"]:
        parsed["html"] = strip_pixel(parsed["html"], request.app.state.settings)
    return {"document_id": document_id, **parsed}


@router.get("/v1/documents/{document_id}/link", response_model=DocumentLink,
            responses=error_responses(409), summary="A short-lived presigned S3 link")
def link(request: Request, principal: Agent, document_id: DocId) -> dict:
    seconds = request.app.state.web.presign_seconds
    return {"url": presigned_url(request, document_id, seconds), "expires_in": seconds}


@router.get("/v1/notification-runs/{run_id}/tracking", response_model=RunTrackingReport,
            summary="A notification run's tracking report: sent, opened, clicked")
def notification_run_tracking(request: Request, principal: Agent, run_id: DocId) -> dict:
    with request.app.state.engine.connect() as conn:
        if not run_exists(conn, run_id):
            raise not_found(f"no notification run {run_id}")
        return {"run_id": run_id, **run_report(conn, run_id)}


@router.get("/v1/contacts/{ref}/not-sent", response_model=UnsentPage,
            summary="A contact's requests and communications that were not sent, and why",
            description="Requests that ended Error, Not Sent, Opted Out or Cancelled, and queue "
                        "entries that ended Rejected or Expired, newest first, each with its "
                        "code and reason (the agent page lists them beside the sent ones). A "
                        "reference no contact has still lists the requests made for it.")
def not_sent(request: Request, principal: Agent,
             ref: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)],
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    with request.app.state.engine.connect() as conn:
        items = unsent_for_contact(conn, ref, limit=limit)
    return {"contact_ref": ref,
            "items": [{**i, "created_at": utc_out(i["created_at"])} for i in items]}
