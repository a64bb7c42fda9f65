"""Retry policies: how long a row waits before its next attempt, and when it is given up.

A policy is a value the handler's work queue carries (:attr:`WorkQueue.retry`); the claimer
applies it to every ``Outcome.retry`` and to rows whose claimants kept dying. No handler
writes ``attempts`` or ``next_attempt_at`` itself. ``attempts`` counts the claims of a row in
its current stage (the claim adds one), so the first retry of a row is attempt 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from comms_pipeline.settings.config import ClaimSettings


class RetryPolicy(Protocol):
    """When to try a row again after ``attempts`` tries, or ``None`` to give it up."""

    def delay(self, attempts: int) -> float | None:
        """Seconds to wait before the next attempt; ``None`` when the row is given up."""
        ...

    def gives_up(self, attempts: int) -> bool:
        """Whether a row claimed for the ``attempts``-th time has used up its tries."""
        ...


@dataclass(frozen=True)
class ExponentialBackoff:
    """base, 2·base, 4·base, … capped at ``cap``; given up after ``max_attempts`` tries."""

    base: float
    cap: float
    max_attempts: int

    @classmethod
    def from_settings(cls, claims: ClaimSettings) -> ExponentialBackoff:
        return cls(claims.backoff_base_seconds, claims.backoff_max_seconds, claims.max_attempts)

    def delay(self, attempts: int) -> float | None:
        if attempts >= self.max_attempts:
            return None
        return min(self.base * (2 ** max(attempts - 1, 0)), self.cap)

    def gives_up(self, attempts: int) -> bool:
        return attempts > self.max_attempts


@dataclass(frozen=True)
class FixedSchedule:
    """The n-th retry waits ``delays[n-1]`` (the last delay repeats); at most ``max_attempts``.

    The webhook schedule of Standard Webhooks style senders: 5 s, 5 min, 30 min, 2 h, …
    """

    delays: tuple[float, ...]
    max_attempts: int

    def delay(self, attempts: int) -> float | None:
        if attempts >= self.max_attempts or not self.delays:
            return None
        return self.delays[min(max(attempts, 1) - 1, len(self.delays) - 1)]

    def gives_up(self, attempts: int) -> bool:
        return attempts > self.max_attempts


@dataclass(frozen=True)
class NeverGiveUp:
    """Exponential backoff capped at ``cap``, for ever: for work that must not be dropped
    (a document to keep in long-term storage waits for its store to come back)."""

    base: float
    cap: float
    floor: float = 0.0

    @classmethod
    def from_settings(cls, claims: ClaimSettings, floor: float = 0.0) -> NeverGiveUp:
        return cls(claims.backoff_base_seconds, claims.backoff_max_seconds, floor)

    def delay(self, attempts: int) -> float:
        exponent = min(max(attempts - 1, 0), 32)  # no overflow, however long it waits
        return max(min(self.base * (2 ** exponent), self.cap), self.floor)

    def gives_up(self, attempts: int) -> bool:
        return False
