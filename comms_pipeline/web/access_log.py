"""The Web API's access log: one ``api.request`` event per request with the method, the
route's template, the status, the duration and the calling external system.

Never the key, the body or the concrete path and query (dynamic-link and tracking tokens
travel there): the route template (``/links/{name}``) is logged instead. The external system
is found from the key's public prefix (``cp_<prefix>_...``), looked up once per prefix.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from starlette.concurrency import run_in_threadpool

from comms_pipeline.pipeline.apikeys import split_key
from comms_pipeline.store.queries import key_system_code

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("comms_pipeline.web.access")
_CACHE_SIZE = 1024


class AccessLog:
    """Pure ASGI middleware (no body buffering): logs after the response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._systems: dict[str, str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            log.info("api.request", method=scope["method"],
                     route=getattr(route, "path", "(unrouted)"), status=status,
                     ms=round((time.perf_counter() - started) * 1000, 2),
                     system=await self._system(scope))

    async def _system(self, scope: Scope) -> str | None:
        """The external system whose key called (None: no key, not an external key)."""
        prefix = _key_prefix(scope)
        if prefix is None:
            return None
        if prefix not in self._systems:
            app = scope.get("app")
            engine = getattr(getattr(app, "state", None), "engine", None)
            if engine is None:
                return None
            try:
                code = await run_in_threadpool(_lookup, engine, prefix)
            except Exception:  # the log line must not fail the request
                return None
            if len(self._systems) >= _CACHE_SIZE:
                self._systems.clear()
            self._systems[prefix] = code
        return self._systems[prefix]


def _key_prefix(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            parts = split_key(key.strip()) if scheme.lower() == "bearer" else None
            return parts[0] if parts else None
    return None


def _lookup(engine: Any, prefix: str) -> str | None:
    with engine.connect() as conn:
        return key_system_code(conn, prefix)
