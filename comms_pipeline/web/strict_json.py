"""Request bodies parsed as JSON is written (RFC 8259): no ``NaN`` or ``Infinity``, UTF-8 only.

Python's :func:`json.loads` accepts ``NaN``, ``Infinity`` and ``-Infinity`` as numbers; a
request carrying one would be stored and fail later, far from the caller. Every route of the
Web API uses :class:`StrictJsonRoute`, so such a body is answered 422 with the place and the
reason (a :class:`json.JSONDecodeError`, which FastAPI turns into a validation error).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

NON_FINITE = "NaN and Infinity are not JSON numbers; send a finite number"


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def strict_loads(body: bytes) -> Any:
    """The JSON value of ``body``; :class:`json.JSONDecodeError` (with a readable message)
    for non-UTF-8 bytes or a non-finite number."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not valid UTF-8 text", "", exc.start) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        pos = text.find(str(exc))
        raise json.JSONDecodeError(NON_FINITE, text, max(pos, 0)) from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """An API route whose JSON bodies are parsed by :func:`strict_loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
