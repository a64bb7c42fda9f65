"""Request bodies are bounded, and read only for a caller with a valid key.

:class:`BodyGuard` is a pure ASGI middleware in front of the whole application:

* on ``/v1/`` (every endpoint that takes an API key), a request that carries a body is
  authenticated from its headers first: without a valid key it is answered 401 and its body
  is never read (the server stops reading the socket, so a huge upload costs nothing);
* a body larger than ``[web] max_body_bytes`` (default 1 MiB) is answered 413: at once when
  ``Content-Length`` says so, else as soon as the bytes received pass the limit (chunked
  uploads), before anything is parsed or stored.

The endpoint still checks the key and its role in its own transaction (see ``auth.py``);
this check only decides whether the body is worth reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from comms_pipeline.pipeline.apikeys import ApiKeyError, authenticate

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

PROTECTED = "/v1/"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the {limit:,} bytes this "
                              f"API accepts")


def _refusal(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": None},
                        status_code=status, headers={**(headers or {}), "Connection": "close"})


def _check_key(engine: Engine, key: str) -> str | None:
    """Why ``key`` is not a valid API key, or None."""
    try:
        with engine.begin() as conn:
            authenticate(conn, key)
    except ApiKeyError as exc:
        return str(exc)
    return None


class BodyGuard:
    def __init__(self, app: ASGIApp, *, engine: Engine, max_bytes: int) -> None:
        self.app = app
        self.engine = engine
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        has_body = bool(headers.get("transfer-encoding")) or (length not in (None, "0"))
        if has_body and scope["path"].startswith(PROTECTED):
            refused = await self._unauthenticated(headers)
            if refused is not None:
                log.info("api.body_refused", status=401)
                await _refusal(401, "unauthorized", refused, _CHALLENGE)(scope, receive, send)
                return
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            log.info("api.body_refused", status=413)
            await self._too_large(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _unauthenticated(self, headers: Headers) -> str | None:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "send the API key as 'Authorization: Bearer <key>'"
        return await run_in_threadpool(_check_key, self.engine, key.strip())

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = BodyTooLarge(self.max_bytes)
        await _refusal(413, "too_large", str(exc.detail))(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)  # FastAPI answers it (errors.py)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except BodyTooLarge:
            if started:
                raise
            log.info("api.body_refused", status=413)
            await self._too_large(scope, receive, send)
