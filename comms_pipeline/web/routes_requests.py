"""Triggers over HTTP: a communication request for systems that cannot write SQL.

The body becomes one request header through :func:`comms_pipeline.pipeline.triggers.trigger`,
exactly as a workflow system's INSERT would. What can be checked at once is checked at once
(the template, rule and contact exist) and answered 422 with the reason; everything else is
the Comms Monitor's, which records an explained state for it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from comms_pipeline.core.request_origin import scoped_key
from comms_pipeline.notifications.event_rules import normalise, split_event
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.pipeline.request_check import missing_warnings
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.models import (
    contacts_t,
    rules_t,
    templates_t,
)
from comms_pipeline.web.auth import BearerKey, Gate
from comms_pipeline.web.errors import ApiError, error_responses, invalid
from comms_pipeline.web.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKey,
    fingerprint,
    run_idempotent,
)
from comms_pipeline.web.schemas import CommunicationRequest, RequestAccepted
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/requests", tags=["requests"],
                   responses=error_responses(401, 403, 422),
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
    q = select(rules_t.c.code, rules_t.c.entity, rules_t.c.event, rules_t.c.email_template,
               rules_t.c.sms_template).where(rules_t.c.active.is_(True))
    if req.rule_code:
        q = q.where(rules_t.c.code == req.rule_code)
    return [r for r in conn.execute(q) if normalise(r.event) == name
            and (normalise(r.entity) == entity if entity else normalise(r.entity) in given)]


def _check_event_targets(conn: Any, req: CommunicationRequest, principal: Principal) -> None:
    """Refuse an event whose rules (any of them) deliver into another system's queue."""
    if principal.role != "external":
        return
    rules = _rules_of_event(conn, req)
    codes = {c for r in rules for c in (r.email_template, r.sms_template) if c}
    if not codes:
        return
    owners = dict(conn.execute(select(templates_t.c.code, templates_t.c.external_system_id)
                               .where(templates_t.c.code.in_(codes))).all())
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
        tpl = conn.execute(select(templates_t.c.active, templates_t.c.unrestricted_params,
                                  templates_t.c.external_system_id)
                           .where(templates_t.c.code == req.template_code)).first()
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
        rule = conn.execute(select(rules_t.c.email_template, rules_t.c.sms_template).where(
            rules_t.c.code == req.rule_code)).first()
        if rule is None:
            raise invalid(f"unknown event rule {req.rule_code!r}", code="unknown_rule",
                          field="rule_code")
        owners = conn.execute(select(templates_t.c.external_system_id).where(
            templates_t.c.code.in_([c for c in rule if c]))).scalars()
        if any(_foreign(principal, owner) for owner in owners):
            raise ApiError(403, FOREIGN, f"event rule {req.rule_code!r} delivers to "
                           f"another external system's queue")
    if req.event and not req.template_code:
        _check_event_targets(conn, req, principal)
    if conn.execute(select(contacts_t.c.id).where(
            contacts_t.c.ref == req.contact_ref)).first() is None:
        raise invalid(f"unknown contact {req.contact_ref!r}", code="unknown_contact",
                      field="contact_ref")
    return warnings + missing_warnings(
        conn, contact_ref=req.contact_ref, template_code=req.template_code, event=req.event,
        rule_code=req.rule_code, entities=req.entities, params=req.params,
        language=req.language, settings=settings)


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
        header_id = trigger(
            conn, contact_ref=body.contact_ref, template_code=body.template_code,
            event=body.event, event_number=body.event_number, rule_code=body.rule_code,
            await_resolution=body.await_resolution, override_consent=body.override_consent,
            media=body.media.value if body.media else None, send_to=body.send_to.value,
            address_type=body.address_type, language=body.language, entities=body.entities,
            params=body.params, send_after=body.send_after, expires_at=body.expires_at,
            priority=body.priority, idempotency_key=_scoped_key(principal,
                                                                body.idempotency_key))
        return 202, RequestAccepted(request_id=header_id, idempotency_key=body.idempotency_key,
                                    warnings=warnings).model_dump(mode="json")

    request_hash = fingerprint("POST", "/v1/requests", body.model_dump(mode="json"))
    status, payload, replayed = run_idempotent(request.app.state.engine, Gate(key, ROLES),
                                               idempotency_key, request_hash, act)
    return JSONResponse(payload, status_code=status,
                        headers={REPLAYED_HEADER: "true"} if replayed else {})
