"""A circuit breaker per gateway: stop sending to one that keeps failing, probe it later.

*Closed*: everything goes through; ``failures`` transient failures in a row open it, and so
does a failure rate of ``rate`` or more over the last ``window_seconds`` (once at least
``min_calls`` answers fell in the window: a gateway failing every other message never has
``failures`` in a row, and is still not one to keep sending to).
*Open*: nothing goes through for ``open_seconds`` (the sends go to the next gateway).
*Half-open*: then one message at a time goes through as a probe; a success closes the
breaker, a failure opens it again for another ``open_seconds``. A permanent refusal counts
as the gateway answering (it is up), so it closes the breaker as a success does.
"""

from __future__ import annotations

import time
from collections import deque
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
                 clock: Callable[[], float] = time.monotonic, *, rate: float | None = None,
                 window_seconds: float = 60.0, min_calls: int = 20) -> None:
        self.name = name
        self.failures = failures
        self.open_seconds = open_seconds
        self.rate = rate
        self.window_seconds = window_seconds
        self.min_calls = min_calls
        self._clock = clock
        self._in_a_row = 0
        self._opened_at: float | None = None
        self._recent: deque[tuple[float, bool]] = deque()  # (when, failed) in the window

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

    def _failure_rate(self, failed: bool) -> float | None:
        """The share of failures in the window, with this answer (None: too few answers)."""
        if self.rate is None:
            return None
        now = self._clock()
        self._recent.append((now, failed))
        while self._recent and now - self._recent[0][0] > self.window_seconds:
            self._recent.popleft()
        if len(self._recent) < self.min_calls:
            return None
        return sum(1 for _, f in self._recent if f) / len(self._recent)

    def record(self, ok: bool) -> None:
        """The gateway's answer to one message: ``ok`` unless it failed transiently."""
        if self._opened_at is not None:  # a probe's answer: close, or open again
            if ok:
                log.info("gateway.breaker_closed", gateway=self.name)
                self._in_a_row, self._opened_at = 0, None
                self._recent.clear()
            else:
                self._open(None)
            return
        share = self._failure_rate(not ok)
        self._in_a_row = 0 if ok else self._in_a_row + 1
        if self._in_a_row >= self.failures or (
                share is not None and self.rate is not None and share >= self.rate):
            self._open(share)

    def _open(self, share: float | None) -> None:
        self._opened_at = self._clock()
        self._recent.clear()
        log.warning("gateway.breaker_opened", gateway=self.name, failures=self._in_a_row,
                    failure_rate=share, open_seconds=self.open_seconds)
