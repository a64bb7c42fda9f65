"""Administration over the Web API (admin keys only): the audit log, template versions and
publishing one of them. Every change made here is recorded with the calling key as actor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline import template_versions as versions
from comms_pipeline.pipeline.apikeys import Principal
from comms_pipeline.web.auth import require
from comms_pipeline.web.errors import ApiError, error_responses
from comms_pipeline.web.schemas import NO_NUL, UtcOut
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(tags=["admin"], responses=error_responses(401, 403, 404, 422),
                   route_class=StrictJsonRoute)
Admin = Annotated[Principal, Depends(require("admin"))]
Code = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)]


class AuditEntryOut(BaseModel):
    id: int
    at: UtcOut
    actor: str
    action: str
    target_kind: str
    target_id: str | None
    change: dict[str, Any] | None


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    #: Pass as ``after_id`` for the next page (None: this was the last).
    next_after_id: int | None


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"version": 2}, {}]})
    version: int | None = Field(None, ge=1, le=2**31 - 1,
                                description="The version to make live (None: the newest)")


class Published(BaseModel):
    code: str
    previous: int | None
    live: int


class VersionOut(BaseModel):
    version: int
    state: str
    live: bool
    created_at: UtcOut
    created_by: str | None
    published_at: UtcOut | None


class VersionHistory(BaseModel):
    code: str
    versions: list[VersionOut]


@router.get("/v1/audit", response_model=AuditPage, summary="The audit log",
            description="Administrative changes oldest first: who (`cli:<user>`, "
                        "`api-key:<id>:<name>`, `link:<token id>`), when, what and the changed "
                        "fields before and after (secrets as fingerprints). Filters: `since` "
                        "(UTC), `actor` (whole or its start), `target` (`template` or "
                        "`template:CODE`); page with `after_id`.")
def audit_list(request: Request, principal: Admin,
               since: datetime | None = None,
               actor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
               target: Annotated[str | None, Query(max_length=270, pattern=NO_NUL)] = None,
               after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    with request.app.state.engine.connect() as conn:
        rows = audit.list_entries(conn, since=since, actor=actor, target=target,
                                  limit=limit, after_id=after_id)
    return {"entries": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/v1/templates/{code}/versions", response_model=VersionHistory,
            summary="A template's versions",
            description="Every saved version oldest first: live, draft (newer than the live "
                        "one, never published) or published before; who saved it and when.")
def template_history(request: Request, principal: Admin, code: Code) -> dict:
    try:
        with request.app.state.engine.connect() as conn:
            return {"code": code, "versions": versions.history(conn, code)}
    except CommsError as exc:
        raise ApiError(404, "not_found", str(exc)) from None


@router.post("/v1/templates/{code}/publish", response_model=Published,
             summary="Make a template version the live one",
             description="Communications rendered from now on use this version and record "
                         "its number; an earlier version rolls back. Without `version`, the "
                         "newest (the draft) is published. Recorded in the audit log.")
def template_publish(request: Request, principal: Admin, code: Code,
                     body: PublishBody) -> dict:
    try:
        with request.app.state.engine.begin() as conn:
            previous, live = versions.publish_version(
                conn, code, body.version, actor=audit.api_actor(principal.key_id,
                                                                principal.name))
    except CommsError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return {"code": code, "previous": previous, "live": live}
