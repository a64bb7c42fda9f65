"""Triggers over HTTP: a communication request for systems that cannot write SQL.

The body becomes one request header through :func:`comms_pipeline.pipeline.triggers.trigger`,
exactly as a workflow system's INSERT would. What can be checked at once is checked at once
(the template, rule and contact exist) and answered 422 with the reason; everything else is
the Comms Monitor's, which records an explained state for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse

from comms_pipeline.core.request_origin import scoped_key
from comms_pipeline.notifications.event_rules import normalise, split_event
from comms_pipeline.pipeline import trigger_targets as targets
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.pipeline.request_check import missing_warnings
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue import request_fate as rq
from comms_pipeline.web.auth import BearerKey, Gate
from comms_pipeline.web.errors import ApiError, error_responses, invalid, not_found
from comms_pipeline.web.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKey,
    fingerprint,
    run_idempotent,
)
from comms_pipeline.web.limits import count_request
from comms_pipeline.web.queries import decode_cursor, encode_cursor, filters_fingerprint
from comms_pipeline.web.request_schemas import RequestFate, RequestPage, RequestSummary
from comms_pipeline.web.schemas import NO_NUL, CommunicationRequest, RequestAccepted, utc_out
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/requests", tags=["requests"],
                   responses=error_responses(401, 403, 404, 422, 429),
                   route_class=StrictJsonRoute)
ROLES = ("external", "admin")


FOREIGN = "foreign_system"


def _foreign(principal: Principal, system_id: int | None) -> bool:
    """Whether a template delivers into another external system's queue than the caller's."""
    return (principal.role == "external" and system_id is not None
            and system_id != principal.external_system_id)


def _rules_of_event(conn: Any, req: CommunicationRequest) -> list[Any]:
    """The active rules the Comms Monitor may expand this event trigger by (as it matches
    them: the event's name, and its entity or the entities given), whatever their segments
    and conditions say: those are decided later, on data the caller controls."""
    entity, name = split_event(req.event or "")
    given = {normalise(k) for k in (req.entities or {})}
    return [r for r in targets.active_rules(conn, req.rule_code) if normalise(r.event) == name
            and (normalise(r.entity) == entity if entity else normalise(r.entity) in given)]


def _check_event_targets(conn: Any, req: CommunicationRequest, principal: Principal) -> None:
    """Refuse an event whose rules (any of them) deliver into another system's queue."""
    if principal.role != "external":
        return
    rules = _rules_of_event(conn, req)
    codes = {c for r in rules for c in (r.email_template, r.sms_template) if c}
    if not codes:
        return
    owners = targets.template_owners(conn, codes)
    for rule in rules:
        for code in (rule.email_template, rule.sms_template):
            if code and _foreign(principal, owners.get(code)):
                raise ApiError(403, FOREIGN, f"event {req.event!r} is expanded by event rule "
                               f"{rule.code!r}, whose template {code!r} delivers to another "
                               f"external system's queue", {"rule_code": rule.code,
                                                            "template_code": code})


def _check(conn: Any, req: CommunicationRequest, principal: Principal,
           settings: Any = None) -> list[str]:
    """Refuse what cannot succeed or is not the caller's to ask; return warnings about what
    would be missing (the tags whose data the request lacks: their details would be
    rejected MISSING_DATA)."""
    warnings: list[str] = []
    if req.override_consent and principal.role != "admin":
        raise ApiError(403, "forbidden", "only an admin key may override the contact's "
                       "consent (override_consent)")
    if req.template_code:
        tpl = targets.template_gate(conn, req.template_code)
        if tpl is None:
            raise invalid(f"unknown template {req.template_code!r}", code="unknown_template",
                          field="template_code")
        if not tpl.active:
            raise invalid(f"template {req.template_code!r} is not active",
                          code="inactive_template", field="template_code")
        if _foreign(principal, tpl.external_system_id):
            raise ApiError(403, FOREIGN, f"template {req.template_code!r} delivers to "
                           f"another external system's queue")
        missing = [p for p in (tpl.unrestricted_params or []) if p not in (req.params or {})]
        warnings += [f"unrestricted parameter {p!r} is not given" for p in missing]
    if req.rule_code:
        rule = targets.rule_templates(conn, req.rule_code)
        if rule is None:
            raise invalid(f"unknown event rule {req.rule_code!r}", code="unknown_rule",
                          field="rule_code")
        owners = targets.template_systems(conn, [c for c in rule if c])
        if any(_foreign(principal, owner) for owner in owners):
            raise ApiError(403, FOREIGN, f"event rule {req.rule_code!r} delivers to "
                           f"another external system's queue")
    if req.event and not req.template_code:
        _check_event_targets(conn, req, principal)
    if not rq.contact_exists(conn, req.contact_ref):
        raise invalid(f"unknown contact {req.contact_ref!r}", code="unknown_contact",
                      field="contact_ref")
    return warnings + missing_warnings(
        conn, contact_ref=req.contact_ref, template_code=req.template_code, event=req.event,
        rule_code=req.rule_code, entities=req.entities, params=req.params,
        language=req.language, settings=settings)


def _media_of(conn: Any, req: CommunicationRequest) -> set[str]:
    """The media a request may produce, each counted once against the daily limits."""
    if req.template_code:
        if req.media:
            return {req.media.value}
        return set(targets.template_media(conn, [req.template_code]).values())
    if req.rule_code:
        codes = [c for c in targets.rule_templates(conn, req.rule_code) or () if c]
    else:
        codes = [c for r in _rules_of_event(conn, req)
                 for c in (r.email_template, r.sms_template) if c]
    return set(targets.template_media(conn, codes).values())


def _scoped_key(principal: Principal, key: str | None) -> str | None:
    """An external system's keys are its own, and its headers say they are its own (see
    :mod:`comms_pipeline.core.request_origin`): the monitor checks their targets again."""
    system = principal.external_system_id if principal.role == "external" else None
    return scoped_key(system, key)


@router.post("", status_code=202, response_model=RequestAccepted,
             responses={202: {"model": RequestAccepted}},
             summary="Request a communication (a template or an event, for one contact)")
def create_request(request: Request, body: CommunicationRequest, key: BearerKey,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    def act(conn: Any, principal: Principal) -> tuple[int, dict[str, Any]]:
        warnings = _check(conn, body, principal, request.app.state.settings)
        stored_key = _scoped_key(principal, body.idempotency_key)
        repeated = (body.idempotency_key is not None
                    and rq.header_with_key(conn, stored_key) is not None)  # type: ignore[arg-type]
        header_id = trigger(
            conn, contact_ref=body.contact_ref, template_code=body.template_code,
            event=body.event, event_number=body.event_number, rule_code=body.rule_code,
            await_resolution=body.await_resolution, override_consent=body.override_consent,
            media=body.media.value if body.media else None, send_to=body.send_to.value,
            address_type=body.address_type, language=body.language, entities=body.entities,
            params=body.params, send_after=body.send_after, expires_at=body.expires_at,
            priority=body.priority, idempotency_key=stored_key,
            # the system alone may read the request's fate, besides admins
            requested_by_system_id=(principal.external_system_id
                                    if principal.role == "external" else None),
            is_test=principal.is_test)
        if not repeated:  # the same request again is the same request: counted once
            count_request(conn, request, principal, _media_of(conn, body))
        return 202, RequestAccepted(request_id=header_id, idempotency_key=body.idempotency_key,
                                    warnings=warnings).model_dump(mode="json")

    request_hash = fingerprint("POST", "/v1/requests", body.model_dump(mode="json"))
    status, payload, replayed = run_idempotent(request.app.state.engine, Gate(key, ROLES),
                                               idempotency_key, request_hash, act)
    return JSONResponse(payload, status_code=status,
                        headers={REPLAYED_HEADER: "true"} if replayed else {})


# -- a request's fate --------------------------------------------------------------------------
def _readable_by(principal: Principal) -> int | None:
    """The system a caller's reads are scoped to (None: an admin sees every request)."""
    return principal.external_system_id if principal.role == "external" else None


def _summary(h: dict[str, Any]) -> dict[str, Any]:
    return {**{k: h.get(k) for k in RequestSummary.model_fields},
            **{k: utc_out(h.get(k)) for k in ("send_after", "expires_at", "created_at")}}


@router.get("", response_model=RequestPage,
            summary="List requests and their fate, newest first",
            description="Admins see every request; an external system sees only the requests "
                        "it made. Filter by status (e.g. `error`), status code (e.g. "
                        "`UNKNOWN_CONTACT`), creation time and contact; cursor-paged.")
def list_requests_route(
        request: Request, key: BearerKey,
        status: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
        code: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
        since: datetime | None = None,
        contact_ref: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    with request.app.state.engine.connect() as conn:
        principal = Gate(key, ROLES)(conn)
        system_id = _readable_by(principal)
        scope = filters_fingerprint(s=status, c=code, t=since, r=contact_ref, sys=system_id)
        before = decode_cursor(cursor, scope, 1)
        if since is not None and since.tzinfo is not None:
            since = since.astimezone(UTC).replace(tzinfo=None)
        try:
            rows = rq.list_requests(conn, status=status, code=code, since=since,
                                    contact_ref=contact_ref, system_id=system_id,
                                    before_id=before[0] if before else None, limit=limit + 1)
        except rq.UnknownStatus as exc:
            raise invalid(str(exc), field="status") from None
    page = rows[:limit]
    return {"items": [_summary(h) for h in page],
            "next_cursor": encode_cursor([page[-1]["id"]], scope) if len(rows) > limit
            else None}


@router.get("/{request_id}", response_model=RequestFate,
            summary="One request's fate: status, code, reason, queue entries, history",
            description="What became of a request: its status with the code and reason when "
                        "it was not sent, the queue entries it became with their states and "
                        "errors, and every state change. Admins and the external system that "
                        "made the request only; anyone else gets 404.")
def show_request(request: Request, key: BearerKey,
                 request_id: Annotated[int, FastPath(ge=1, le=2**63 - 1)]) -> dict:
    with request.app.state.engine.connect() as conn:
        principal = Gate(key, ROLES)(conn)
        fate = rq.request_fate(conn, request_id, system_id=_readable_by(principal))
    if fate is None:
        raise not_found(f"no request {request_id}")
    return {
        "request": _summary(fate["header"]),
        "entries": [{**e, "state": e["public_state"], "created_at": utc_out(e["created_at"]),
                     "completed_at": utc_out(e["completed_at"])} for e in fate["entries"]],
        "history": [{"what": "request" if t["kind"] == "header" else "entry",
                     "id": t["row_id"], "from_state": t["from_state"], "to_state": t["to_state"],
                     "code": t["code"], "actor": t["actor"], "at": utc_out(t["at"])}
                    for t in fate["history"]]}
