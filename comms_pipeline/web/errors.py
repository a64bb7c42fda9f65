"""Every error the Web API answers has one shape: ``{"code", "message", "details"}``.

Our own :class:`ApiError`, FastAPI's request validation (422), Starlette's 404/405 for unknown
routes, database errors caused by input the database refuses, and anything unexpected (500,
logged, with no internals in the answer) all go through the handlers here, so a client parses
one format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from comms_pipeline.core.request_values import InvalidValue, printable

if TYPE_CHECKING:
    from collections.abc import Mapping

log = structlog.get_logger(__name__)


class ErrorBody(BaseModel):
    """An error: a stable machine-readable ``code``, a readable ``message``, and details."""

    code: str
    message: str
    details: Any = None


class ApiError(Exception):
    """An error answered to the caller with ``status`` and the stable shape."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def conflict(message: str, **details: Any) -> ApiError:
    return ApiError(409, "conflict", message, details or None)


def invalid(message: str, code: str = "invalid_request", **details: Any) -> ApiError:
    return ApiError(422, code, message, details or None)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
                 410: "gone", 413: "too_large", 415: "unsupported_media_type",
                 422: "invalid_request", 429: "too_many_requests"}

#: The error responses every operation may answer, for the OpenAPI document.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {400: "Malformed request", 401: "Missing, unknown or revoked API key",
                 403: "The key's role may not do this", 404: "Not found (or not yours)",
                 409: "Conflict: the entry is not in a state this action may leave",
                 410: "Gone: the link has expired",
                 422: "Validation error: the details say which field and why",
                 429: "A rate limit (rate_limited) or daily quota (quota_exceeded) is used "
                      "up: try again after Retry-After seconds"}
    return {s: {"model": ErrorBody, "description": described.get(s, "Error")}
            for s in statuses}


def _json(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
          ) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in exc.errors():
        loc = [printable(str(p)) for p in err.get("loc", ())]
        problem = printable(str(err.get("msg", "invalid")).removeprefix("Value error, "))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidValue):  # the exact place inside entity data or params
            loc += [p for p in cause.path.split(".") if p]
            problem = cause.problem
        elif err.get("type") == "string_unicode":
            problem = "is not valid Unicode text (it holds an unpaired surrogate)"
        if loc[-1:] == ["[key]"]:
            loc, problem = loc[:-1], f"the name {problem}"
        if err.get("type") == "json_invalid":  # where and why the body is not JSON
            loc = loc[:1]
            why = (err.get("ctx") or {}).get("error", "")
            problem = printable(f"not valid JSON at character {err['loc'][-1]}: {why}")
        details.append({"field": ".".join(loc), "problem": problem,
                        "type": err.get("type", "invalid")})
    first = details[0] if details else {"field": "", "problem": "invalid request"}
    message = f"{first['field']}: {first['problem']}" if first["field"] else first["problem"]
    if len(details) > 1:
        message += f" (and {len(details) - 1} more problem(s))"
    return message, details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe_validation(exc)
        return _json(422, {"code": "invalid_request", "message": message, "details": details})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return _json(exc.status_code, {"code": code, "message": message, "details": None},
                     getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # Values the database itself refuses (out of range, NUL characters, ...).
        log.info("api.data_error", path=_route_path(request), error=type(exc.orig).__name__)
        return _json(422, {"code": "invalid_value",
                           "message": "a value in the request is not acceptable to the database",
                           "details": None})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unexpected_error", path=_route_path(request),
                  error=type(exc).__name__, exc_info=exc)
        return _json(500, {"code": "internal_error",
                           "message": "an unexpected error occurred; it has been logged",
                           "details": None})


def _route_path(request: Request) -> str:
    """The route's template (``/t/o/{token}.gif``), never the concrete path with tokens."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(unrouted)"
