"""A gateway's maximum rate: tokens taken in small leases from a bucket, spent locally.

The bucket (a :class:`RateSource`) may be this process's own (:class:`TokenBucket`: SQLite,
or no database at hand) or one row in PostgreSQL shared by every copy of a daemon on every
machine (``comms_pipeline.store.gateway_rates``). Asking the database for every message
would cost a round trip each, so a :class:`RateGate` takes a few tokens at a time (a
*lease*, a fiftieth of a second's worth) and hands them out itself. A lease's tokens are
spent within moments or dropped (``lease_ttl``), so the sends of all copies over any one
second stay under the rate plus the bucket's burst plus the tokens the copies hold.

``ESME_RTHROTTLED`` from an SMSC calls :meth:`RateGate.throttled`: the source lowers the
rate for everyone taking from it (halved, for ``slow_seconds``; halved again by a throttle
seen after half that time), not only for the copy that saw it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: A lease is this many seconds' worth of the rate (at least one token).
LEASE_SECONDS = 0.02
#: Tokens of a lease not spent within this long are dropped.
LEASE_TTL = 0.5
#: The lowest a throttle brings the rate to, as a fraction of the maximum.
SLOWEST = 1 / 16


@dataclass(frozen=True)
class Lease:
    """What a bucket gave: ``granted`` tokens, and when asking again is worth it."""

    granted: int
    retry_in: float = 0.0


class RateSource(Protocol):
    """A token bucket, this process's or shared; ``lease`` never blocks."""

    def lease(self, want: int) -> Lease: ...

    def slow_down(self) -> None: ...


def default_burst(rate: float) -> int:
    return max(1, math.ceil(rate / 20))


def lease_size(rate: float) -> int:
    return max(1, math.ceil(rate * LEASE_SECONDS))


def slowed_rate(current: float, maximum: float) -> float:
    return max(maximum * SLOWEST, current / 2)


class TokenBucket:
    """An in-process token bucket (thread-safe), with the same slow-down as the shared one."""

    def __init__(self, rate: float, burst: int | None = None, slow_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst or default_burst(rate)
        self.slow_seconds = slow_seconds
        self._clock = clock
        self._tokens = 0.0
        self._at = clock()
        self._slow_rate = rate
        self._slow_until = 0.0
        self._slowed_at = -math.inf
        self._lock = threading.Lock()

    def current_rate(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        return self._slow_rate if now < self._slow_until else self.rate

    def lease(self, want: int) -> Lease:
        with self._lock:
            now = self._clock()
            rate = self.current_rate(now)
            tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * rate)
            granted = max(0, min(want, math.floor(tokens)))
            self._tokens, self._at = tokens - granted, max(self._at, now)
            return Lease(granted, retry_in(want, self._tokens, rate))

    def slow_down(self) -> None:
        with self._lock:
            now = self._clock()
            if now - self._slowed_at < self.slow_seconds / 2:
                return  # one throttling episode, seen by several sends: halve once
            self._slow_rate = slowed_rate(self.current_rate(now), self.rate)
            self._slowed_at, self._slow_until = now, now + self.slow_seconds


def retry_in(want: int, left: float, rate: float) -> float:
    """Seconds until the bucket holds a whole lease of ``want`` again (asking sooner would
    find it short, or empty, and cost a round trip for nothing)."""
    if left >= want:
        return 0.0
    return min(1.0, max(0.001, (want - left) / rate + 0.0005))


class RateGate:
    """Hands out tokens of a :class:`RateSource`, leased a few at a time (thread-safe)."""

    def __init__(self, source: RateSource, rate: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.lease_size = lease_size(rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0
        self._expires = 0.0
        self._next_ask = 0.0
        self._lock = threading.Lock()

    def take(self, want: int) -> int:
        """Up to ``want`` tokens now (perhaps none: then see :meth:`wait_seconds`)."""
        if want <= 0:
            return 0
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._tokens = 0
            if self._tokens < want and now >= self._next_ask:
                lease = self.source.lease(self.lease_size)
                if lease.granted:
                    self._tokens += lease.granted
                    self._expires = now + LEASE_TTL
                self._next_ask = now + lease.retry_in
            given = min(want, self._tokens)
            self._tokens -= given
            return given

    def wait_seconds(self) -> float:
        """How long until :meth:`take` may give something again (0: try now)."""
        with self._lock:
            return 0.0 if self._tokens else max(0.0, self._next_ask - self._clock())

    def acquire(self, stop: Callable[[], bool] | None = None) -> bool:
        """Block until one token is ours (False: ``stop()`` said to give up waiting)."""
        while not self.take(1):
            if stop is not None and stop():
                return False
            self._sleep(max(self.wait_seconds(), 0.001))
        return True

    def throttled(self) -> None:
        """The gateway said we are too fast: lower the rate of every copy sharing it."""
        self.source.slow_down()
