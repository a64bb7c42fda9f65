"""Who is calling: ``Authorization: Bearer <key>`` on every endpoint but health, tracking and
dynamic links (those carry their own signed tokens).

An ``external`` key sees only its system's entries; ``agent`` keys read contacts'
communications and documents; ``admin`` keys may do everything.

Two ways in. :func:`require` is a dependency that checks the key in its own transaction
(agents' reads). The queue and trigger endpoints, which external systems call thousands of
times, take the key with :data:`BearerKey` and check it with :class:`Gate` inside the
transaction that does the work: one connection and one commit per call instead of two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from comms_pipeline.pipeline.apikeys import ApiKeyError, Principal, authenticate
from comms_pipeline.web.errors import ApiError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_bearer = HTTPBearer(auto_error=False, description="An API key: cp_<prefix>_<secret>")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def bearer_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
                     ) -> str:
    """The presented key (not yet checked: see :class:`Gate`)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized",
                       "send the API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    return credentials.credentials


BearerKey = Annotated[str, Depends(bearer_key)]


def check(conn: Connection, key: str, roles: tuple[str, ...]) -> Principal:
    """The key's principal if it is valid and has one of ``roles``; else 401 / 403."""
    try:
        principal = authenticate(conn, key)
    except ApiKeyError as exc:
        raise ApiError(401, "unauthorized", str(exc), headers=_CHALLENGE) from None
    if principal.role not in roles:
        raise ApiError(403, "forbidden",
                       f"a key of role {principal.role!r} may not do this "
                       f"(needs {' or '.join(roles)})")
    return principal


@dataclass(frozen=True)
class Gate:
    """A presented key and the roles an endpoint admits, checked in the caller's transaction."""

    key: str
    roles: tuple[str, ...]

    def __call__(self, conn: Connection) -> Principal:
        return check(conn, self.key, self.roles)


def _check_alone(engine: Engine, key: str, roles: tuple[str, ...]) -> Principal:
    with engine.begin() as conn:
        return check(conn, key, roles)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only keys of ``roles`` (checked in its own transaction)."""

    async def dependency(request: Request, key: BearerKey) -> Principal:
        principal = await run_in_threadpool(_check_alone, request.app.state.engine, key, roles)
        request.state.principal = principal
        return principal

    return dependency


def system_scope(principal: Principal) -> int | None:
    """The external system whose entries the caller may see; None for an admin (all)."""
    return principal.external_system_id if principal.role == "external" else None
