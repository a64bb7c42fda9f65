"""A gateway's maximum rate for the sum of all copies: which bucket a daemon takes from.

On PostgreSQL the bucket is the gateway's ``gateway_rates`` row, shared by every copy on
every machine (:class:`SharedBucket`); on SQLite (one machine, usually one copy) it is the
process's own. Either way the sender gets a :class:`~comms_pipeline.gateways.rate.RateGate`
that leases tokens a few at a time. If the database cannot be asked, a copy falls back to a
bucket of its own (at the full rate) until it can again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from comms_pipeline.gateways.rate import (
    SLOWEST,
    Lease,
    RateGate,
    TokenBucket,
    default_burst,
    retry_in,
)
from comms_pipeline.store import gateway_rates
from comms_pipeline.store.dialect import is_postgres

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.gateways import EmailGateway, SmsGateway

log = structlog.get_logger(__name__)


class SharedBucket:
    """:class:`~comms_pipeline.gateways.rate.RateSource` on a ``gateway_rates`` row."""

    #: After a failed look at the database, use the local bucket this long.
    RETRY_DB_SECONDS = 5.0

    def __init__(self, engine: Engine, gateway: str, rate: float, burst: int | None = None,
                 slow_seconds: float = 10.0) -> None:
        self.engine = engine
        self.gateway = gateway
        self.rate = rate
        self.burst = burst or default_burst(rate)
        self.slow_seconds = slow_seconds
        self._local = TokenBucket(rate, burst, slow_seconds)
        self._db_back_at = 0.0

    def _usable(self) -> bool:
        return time.monotonic() >= self._db_back_at

    def _failed(self, exc: Exception) -> None:
        log.warning("gateway_rate.shared_unavailable", gateway=self.gateway,
                    error=type(exc).__name__, fallback="this process's own bucket")
        self._db_back_at = time.monotonic() + self.RETRY_DB_SECONDS

    def lease(self, want: int) -> Lease:
        if not self._usable():
            return self._local.lease(want)
        try:
            with self.engine.begin() as conn:
                got = gateway_rates.lease_tokens(conn, self.gateway, want, self.rate,
                                                 self.burst)
                if got is None:
                    gateway_rates.create_bucket(conn, self.gateway, self.rate)
                    got = (0, 0.0, self.rate)
        except SQLAlchemyError as exc:
            self._failed(exc)
            return self._local.lease(want)
        granted, left, rate = got
        return Lease(granted, retry_in(want, left, rate))

    def slow_down(self) -> None:
        self._local.slow_down()
        if not self._usable():
            return
        try:
            with self.engine.begin() as conn:
                slowed = gateway_rates.slow_down(conn, self.gateway, self.rate, SLOWEST,
                                                 self.slow_seconds)
        except SQLAlchemyError as exc:
            self._failed(exc)
            return
        if slowed is not None:
            log.info("gateway_rate.slowed", gateway=self.gateway, rate=round(slowed, 2),
                     seconds=self.slow_seconds)


def rate_gate(engine: Engine | None, key: str, cfg: EmailGateway | SmsGateway
              ) -> RateGate | None:
    """The gate for gateway ``key`` (``media:name``), or None when it has no maximum rate."""
    rate = cfg.max_rate_per_second
    if rate is None:
        return None
    slow = getattr(cfg, "throttle_slow_seconds", 10.0)
    if engine is not None and is_postgres(engine):
        return RateGate(SharedBucket(engine, key, rate, cfg.max_rate_burst, slow), rate)
    return RateGate(TokenBucket(rate, cfg.max_rate_burst, slow), rate)
