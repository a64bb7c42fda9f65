"""Status callbacks: an external system registers where its status events are POSTed.

An external system's key registers, lists and removes its own endpoints only (another
system's endpoint answers 404, as if it did not exist); an admin key sees every one and
names the system when it registers one. The signing secret is answered once, at
registration.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import apikeys
from comms_pipeline.pipeline import callback_endpoints as endpoints
from comms_pipeline.queue.callbacks import EVENTS
from comms_pipeline.web.auth import BearerKey, check, system_scope
from comms_pipeline.web.errors import error_responses, invalid, not_found
from comms_pipeline.web.schemas import UtcOut
from comms_pipeline.web.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"],
                   responses=error_responses(401, 403, 404, 422),
                   route_class=StrictJsonRoute)
ROLES = ("external", "admin")
EndpointId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The endpoint's number")]


class CallbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://portal.example.com/comms/callbacks",
         "events": ["accepted", "rejected", "delivered", "bounced"]}]})

    url: str = Field(max_length=2000, pattern=r"^https?://[^\x00\s]+$",
                     description="Where the events are POSTed (http or https)")
    events: list[str] = Field(default_factory=lambda: ["all"], max_length=len(EVENTS) + 1,
                              description=f"Of: {', '.join(EVENTS)}; or ['all']")
    secret: str | None = Field(None, max_length=200, pattern=r"^whsec_[A-Za-z0-9+/=]+$",
                               description="Your own signing secret; default: a new one")
    system: str | None = Field(None, max_length=64,
                               description="Admin keys only: the external system's code")


class CallbackEndpoint(BaseModel):
    id: int
    system: str
    url: str
    events: list[str]
    enabled: bool
    consecutive_failures: int
    disabled_at: UtcOut | None = None
    disabled_reason: str | None = None
    created_at: UtcOut | None = None
    pending_events: int = 0


class NewCallbackEndpoint(CallbackEndpoint):
    secret: str = Field(description="Verify each callback's webhook-signature with it "
                                    "(Standard Webhooks); shown only now")


def _found(conn: Any, scope: int | None, endpoint_id: int) -> endpoints.Endpoint:
    for e in endpoints.list_endpoints(conn, scope):
        if e.id == endpoint_id:
            return e
    raise not_found(f"no callback endpoint {endpoint_id}")


@router.post("", status_code=201, response_model=NewCallbackEndpoint,
             summary="Register a callback endpoint")
def add(request: Request, key: BearerKey, body: CallbackBody) -> dict:
    """Register a URL for your communications' status events (accepted, rejected, delivered,
    bounced, complained, opened, clicked, expired, completed, removed). Each event is POSTed
    as JSON signed the Standard Webhooks way with the secret answered here (once), at least
    once (dedupe on `webhook-id`), in order per communication, retried for hours. Events
    carry ids, states, codes and timestamps, never message content or addresses."""
    with request.app.state.engine.begin() as conn:
        principal = check(conn, key, ROLES)
        scope = system_scope(principal)
        if scope is None:
            if not body.system:
                raise invalid("an admin key names the external system ('system')")
            try:
                scope = apikeys.system_id(conn, body.system)
            except apikeys.ApiKeyError as exc:
                raise invalid(str(exc)) from None
        elif body.system is not None:
            raise invalid("'system' is for admin keys: yours registers for its own system")
        try:
            endpoint_id, secret = endpoints.add_endpoint(
                conn, scope, body.url, body.events, api_key_id=principal.key_id,
                secret=body.secret)
        except CommsError as exc:
            raise invalid(str(exc)) from None
        return {**_found(conn, scope, endpoint_id).as_dict(), "secret": secret}


@router.get("", response_model=list[CallbackEndpoint], summary="List your callback endpoints")
def list_all(request: Request, key: BearerKey) -> list[dict]:
    """Your callback endpoints (an admin key: every system's), whether each is enabled, its
    run of failed deliveries and how many events wait for it. Never the secret."""
    with request.app.state.engine.begin() as conn:
        scope = system_scope(check(conn, key, ROLES))
        return [e.as_dict() for e in endpoints.list_endpoints(conn, scope)]


@router.delete("/{endpoint_id}", status_code=204, response_class=Response,
               summary="Remove a callback endpoint")
def remove(request: Request, key: BearerKey, endpoint_id: EndpointId) -> Response:
    """Stop sending events to this endpoint; events not yet sent to it are dropped. Another
    system's endpoint answers 404."""
    with request.app.state.engine.begin() as conn:
        scope = system_scope(check(conn, key, ROLES))
        if not endpoints.remove_endpoint(conn, endpoint_id, scope):
            raise not_found(f"no callback endpoint {endpoint_id}")
    return Response(status_code=204)


@router.post("/{endpoint_id}/enable", response_model=CallbackEndpoint,
             summary="Enable a disabled callback endpoint")
def enable(request: Request, key: BearerKey, endpoint_id: EndpointId) -> dict:
    """An endpoint is disabled after a run of failed deliveries; enable it once it answers
    again: the events that waited are sent from where they stopped, in order."""
    with request.app.state.engine.begin() as conn:
        scope = system_scope(check(conn, key, ROLES))
        if not endpoints.enable_endpoint(conn, endpoint_id, scope):
            raise not_found(f"no callback endpoint {endpoint_id}")
        return _found(conn, scope, endpoint_id).as_dict()
