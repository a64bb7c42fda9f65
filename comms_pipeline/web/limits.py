"""Rate limits and daily quotas at the Web API's door (see :mod:`comms_pipeline.pipeline.quotas`).

:func:`rate_limit` is a dependency of every route: a call presenting a key that has a rate
limit (its own or its system's) is counted in its own short transaction before any work, and
answered 429 ``rate_limited`` with ``Retry-After`` when over. Which keys have limits is read
once per ``web.limits_refresh_seconds`` per process, so a call whose key has none costs no
query at all. :func:`count_request` counts an accepted request against the daily limits, in
the transaction that writes it. The key itself is checked by :mod:`.auth` as before: a key
that does not match its prefix's hash is not counted here (it is refused there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from comms_pipeline.pipeline import quotas
from comms_pipeline.pipeline.apikeys import hash_key, split_key
from comms_pipeline.store.dialect import commit_without_waiting
from comms_pipeline.web.errors import ApiError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.pipeline.apikeys import Principal


class LimitsCache:
    """This process's copy of the keys with limits, refreshed every ``refresh_seconds``."""

    def __init__(self, engine: Engine, refresh_seconds: float) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._by_prefix: dict[str, quotas.KeyLimits] = {}

    def get(self, prefix: str, conn: Connection | None = None) -> quotas.KeyLimits | None:
        """The key's limits; read again, when due, on ``conn`` if the caller is inside a
        transaction (on SQLite a second connection would wait for the caller's lock)."""
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.refresh_seconds:
                if conn is not None:
                    self._by_prefix = quotas.load_key_limits(conn)
                else:
                    with self.engine.connect() as own:
                        self._by_prefix = quotas.load_key_limits(own)
                self._loaded_at = time.monotonic()
            return self._by_prefix.get(prefix)

    @property
    def fresh(self) -> bool:
        """Whether :meth:`get` would answer from memory, without reading the database."""
        return time.monotonic() - self._loaded_at < self.refresh_seconds


def too_many(exc: quotas.LimitExceeded) -> ApiError:
    return ApiError(429, exc.code, exc.message, exc.details,
                    headers={"Retry-After": str(exc.retry_after)})


def _limits_of(request: Request, key: str,
               conn: Connection | None = None) -> quotas.KeyLimits | None:
    parts = split_key(key.strip())
    cache: LimitsCache | None = getattr(request.app.state, "limits", None)
    if parts is None or cache is None:
        return None
    found = cache.get(parts[0], conn)
    return found if found is not None and found.matches(hash_key(key.strip())) else None


def _bearer(request: Request) -> str | None:
    scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
    return key if scheme.lower() == "bearer" and key else None


async def rate_limit(request: Request) -> None:
    """Count the call against its key's and system's rate limits; 429 when over. A call
    whose key has no limits costs no thread hop and no query (the cache answers)."""
    key = _bearer(request)
    if not key:
        return
    cache: LimitsCache | None = getattr(request.app.state, "limits", None)
    if cache is not None and cache.fresh:
        limits = _limits_of(request, key)
    else:
        limits = await run_in_threadpool(_limits_of, request, key)
    if limits is None or not limits.rate_scopes():
        return
    await run_in_threadpool(_count_call, request.app.state.engine, limits)


def _count_call(engine: Engine, limits: quotas.KeyLimits) -> None:
    try:
        with engine.begin() as conn:
            commit_without_waiting(conn)  # a lost count of this second harms nothing
            quotas.check_rate(conn, limits)
    except quotas.LimitExceeded as exc:
        raise too_many(exc) from None


def count_request(conn: Connection, request: Request, principal: Principal,
                  media: Iterable[str]) -> None:
    """Count an accepted request against the daily limits (raises 429 ``quota_exceeded``)."""
    if principal.is_test:
        return
    key = _bearer(request)
    limits = _limits_of(request, key, conn) if key else None
    try:
        quotas.count_accepted(conn, limits, media)
    except quotas.LimitExceeded as exc:
        raise too_many(exc) from None
