"""A circuit breaker per gateway: stop sending to one that keeps failing, probe it later.

*Closed*: everything goes through; ``failures`` transient failures in a row open it.
*Open*: nothing goes through for ``open_seconds`` (the sends go to the next gateway).
*Half-open*: then one message at a time goes through as a probe; a success closes the
breaker, a failure opens it again for another ``open_seconds``. A permanent refusal counts
as the gateway answering (it is up), so it closes the breaker as a success does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import structlog

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One gateway's breaker (used by one thread: the daemon's batch loop)."""

    def __init__(self, name: str, failures: int, open_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failures = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._in_a_row = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.open_seconds:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allowance(self) -> int | None:
        """How many messages may go now: ``None`` any number, 1 a probe, 0 none."""
        state = self.state
        return None if state is BreakerState.CLOSED else 1 if \
            state is BreakerState.HALF_OPEN else 0

    def record(self, ok: bool) -> None:
        """The gateway's answer to one message: ``ok`` unless it failed transiently."""
        if ok:
            if self._opened_at is not None:
                log.info("gateway.breaker_closed", gateway=self.name)
            self._in_a_row, self._opened_at = 0, None
            return
        self._in_a_row += 1
        probing = self.state is BreakerState.HALF_OPEN
        if probing or (self._opened_at is None and self._in_a_row >= self.failures):
            self._opened_at = self._clock()
            log.warning("gateway.breaker_opened", gateway=self.name, failures=self._in_a_row,
                        open_seconds=self.open_seconds)
