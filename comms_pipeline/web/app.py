"""The Web API application: ``create_app(settings)`` wires the routers, errors and pages.

Served by ``comms api serve`` (uvicorn). The OpenAPI document is at ``/openapi.json`` and
readable at ``/docs`` and ``/redoc`` (assets served locally: no CDN). Requests are logged as
``api.request`` events (:mod:`.access_log`) with the route's template (``/links/{name}``),
never the concrete path or query, which may hold tokens.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from comms_pipeline import __version__
from comms_pipeline.pipeline.tracking import Tracker
from comms_pipeline.queue.metrics import registry as metrics_registry
from comms_pipeline.store.db import engine_for
from comms_pipeline.store.queries import ping
from comms_pipeline.web import (
    routes_admin,
    routes_agents,
    routes_callbacks,
    routes_erasure,
    routes_feedback,
    routes_links,
    routes_ops,
    routes_queue,
    routes_requests,
    routes_suppressions,
    routes_tracking,
)
from comms_pipeline.web.access_log import AccessLog
from comms_pipeline.web.body_guard import BodyGuard
from comms_pipeline.web.docs import install_offline_docs
from comms_pipeline.web.errors import install_error_handlers
from comms_pipeline.web.limits import LimitsCache, rate_limit
from comms_pipeline.web.operation_docs import describe_operations
from comms_pipeline.web.schemas import Health

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

DESCRIPTION = """
The communication queue for external systems, communication requests over HTTP, agents' view
of a contact's communications and stored documents, open/click tracking and dynamic links.

Authenticate with `Authorization: Bearer <API key>` (`comms external-systems add` gives an
external system its key; `comms api-keys add --role agent|admin` makes the others). Every error
answers `{"code", "message", "details"}`. Repeat a POST safely with an `Idempotency-Key` header.
"""

STATIC = {
    "/agent": ("agent.html", "text/html; charset=utf-8"),
    "/agent/app.js": ("agent.js", "text/javascript; charset=utf-8"),
    "/agent/app.css": ("agent.css", "text/css; charset=utf-8"),
}
AGENT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; """
                               "style-src 'self' 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; frame-src blob:; "
                               "object-src blob:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static(name: str) -> bytes:
    return resources.files("comms_pipeline.web").joinpath("static", name).read_bytes()


def _add_pages(app: FastAPI) -> None:
    for path, (name, media_type) in STATIC.items():
        def serve(name: str = name, media_type: str = media_type) -> Response:
            return Response(_static(name), media_type=media_type, headers=AGENT_HEADERS)

        app.add_api_route(path, serve, methods=["GET"], include_in_schema=False)


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    app = FastAPI(title="comms-pipeline Web API", version=__version__,
                  description=DESCRIPTION, docs_url=None, redoc_url=None,
                  dependencies=[Depends(rate_limit)])
    install_offline_docs(app)
    app.state.settings = settings
    app.state.engine = engine if engine is not None else engine_for(settings)
    app.state.web = settings.web
    app.state.tracker = Tracker(settings)
    app.state.limits = LimitsCache(app.state.engine, settings.web.limits_refresh_seconds)
    install_error_handlers(app)

    @app.get("/health", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "The database is unreachable"}})
    def health(request: Request) -> Any:
        try:
            with request.app.state.engine.connect() as conn:
                ping(conn)
        except Exception as exc:  # any database failure means "not healthy"
            log.warning("api.health_failed", error=type(exc).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"},
                                status_code=503)
        return {"status": "ok", "database": "ok"}

    app.state.metrics = metrics_registry(app.state.engine)
    for module in (routes_queue, routes_requests, routes_agents, routes_tracking, routes_links,
                   routes_ops, routes_suppressions, routes_admin, routes_feedback,
                   routes_callbacks, routes_erasure):
        app.include_router(module.router)
    _add_pages(app)
    describe_operations(app)
    app.add_middleware(BodyGuard, engine=app.state.engine,
                       max_bytes=app.state.web.max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def create_app_from_environment() -> FastAPI:
    """uvicorn's factory for worker processes: configuration from ``$COMMS_CONFIG`` and
    ``COMMS_*``, log level from ``$COMMS_LOG_LEVEL`` (default info)."""
    import os

    from comms_pipeline.runtime.logs import configure_logging
    from comms_pipeline.settings.config import load_settings

    configure_logging(os.environ.get("COMMS_LOG_LEVEL", "info").lower())
    return create_app(load_settings())
