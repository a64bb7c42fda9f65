"""Admins' view of the suppression list: list, add, remove (with who and why; the row stays).

Admin keys only: the list says which customers' addresses are dead or complained.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.web.auth import require
from comms_pipeline.web.errors import error_responses, invalid, not_found
from comms_pipeline.web.schemas import NO_NUL, UtcIn, utc_out
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(tags=["suppressions"], responses=error_responses(401, 403, 422),
                   route_class=StrictJsonRoute)
Admin = Annotated[Principal, Depends(require("admin"))]
AddressText = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL)]
Why = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)]

SuppressibleMedia = Literal["email", "sms", "push"]
Reason = Literal["hard_bounce", "complaint", "unregistered", "smpp_permanent",
                 "soft_bounce_threshold", "manual"]
Scope = Literal["all", "marketing"]


class SuppressionOut(BaseModel):
    id: int
    address: str
    media: str
    reason: str
    scope: str = Field(description="all: every classification; marketing: marketing and "
                                   "reward communications only")
    description: str | None
    source_detail_id: int | None = Field(description="The queue entry whose failure "
                                                     "caused it")
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    removed_at: datetime | None
    removed_by: str | None
    removal_reason: str | None
    active: bool


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"address": "maria@example.com", "media": "email", "reason": "manual",
         "description": "asked by phone not to be emailed"},
        {"address": "+35799123456", "media": "sms", "scope": "marketing",
         "expires_at": "2027-06-30T00:00:00Z"}]})

    address: AddressText
    media: SuppressibleMedia
    reason: Reason = Field("manual")
    scope: Scope | None = Field(None, description="Default: marketing for complaints, "
                                                  "else all")
    expires_at: UtcIn | None = None
    description: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class RemovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"address": "maria@example.com", "media": "email",
         "why": "the customer corrected the address (ticket 4411)"}]})

    address: AddressText
    media: SuppressibleMedia
    why: Why


def _out(s: sup.Suppression, now: datetime) -> dict[str, Any]:
    data = s.as_dict()
    for name in ("created_at", "expires_at", "removed_at"):
        data[name] = utc_out(data[name])
    return {**data, "active": s.active(now)}


def _region(request: Request) -> str:
    return str(request.app.state.settings.monitor.default_country)


@router.get("/v1/suppressions", response_model=SuppressionPage,
            summary="The suppression list, newest first",
            description="Addresses the Comms Monitor rejects `SUPPRESSED`: those in force, "
                        "or with `include_inactive` the expired and removed ones too (with "
                        "who removed them and why). Filter by `media`, and by `address` "
                        "(normalised for its media, so it needs `media`); page on with "
                        "`before_id`, the last id of the page. Admin keys only.")
def list_route(request: Request, principal: Admin, media: SuppressibleMedia | None = None,
               address: Annotated[str | None, Query(max_length=4096, pattern=NO_NUL)] = None,
               include_inactive: bool = False,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> dict:
    now = utcnow()
    try:
        with request.app.state.engine.connect() as conn:
            rows = sup.list_suppressions(conn, now=now, address=address,
                                         media=media,
                                         include_inactive=include_inactive, limit=limit,
                                         before_id=before_id, region=_region(request))
    except sup.SuppressionError as exc:
        raise invalid(str(exc)) from None
    return {"items": [_out(s, now) for s in rows]}


@router.post("/v1/suppressions", response_model=SuppressionOut, status_code=201,
             summary="Suppress an address",
             description="Put an address on the list for a media (reason `manual` unless "
                         "given). Answers 201 with the suppression; one already in force "
                         "for the same reason and scope is answered instead (200), not "
                         "added twice. Recorded as created by the key's name.",
             responses={200: {"model": SuppressionOut,
                              "description": "Already suppressed: the suppression in force"}})
def add_route(request: Request, principal: Admin, body: SuppressionIn) -> Any:
    try:
        with request.app.state.engine.begin() as conn:
            s, new = sup.add(conn, address=body.address, media=body.media,
                             reason=body.reason,
                             scope=body.scope,
                             source_detail_id=None, expires_at=body.expires_at,
                             actor=principal.actor, description=body.description,
                             created_at=None, region=_region(request))
    except sup.SuppressionError as exc:
        raise invalid(str(exc)) from None
    out = _out(s, utcnow())
    if new:
        return out
    return JSONResponse(jsonable_encoder(SuppressionOut(**out)), status_code=200)


@router.post("/v1/suppressions/remove", response_model=SuppressionPage,
             summary="Take an address off the list, saying why",
             description="Every suppression of the address for the media not yet removed "
                         "is marked removed, with the key's name and `why` (an operator "
                         "corrected a hard-bounced address, a customer asked again); the "
                         "rows are kept. 404 when the address is not on the list.",
             responses=error_responses(404))
def remove_route(request: Request, principal: Admin, body: RemovalIn) -> dict:
    try:
        with request.app.state.engine.begin() as conn:
            removed = sup.remove(conn, address=body.address, media=body.media,
                                 actor=principal.actor, why=body.why, region=_region(request))
    except sup.NotSuppressed as exc:
        raise not_found(str(exc)) from None
    except sup.SuppressionError as exc:
        raise invalid(str(exc)) from None
    now = utcnow()
    return {"items": [_out(s, now) for s in removed]}

