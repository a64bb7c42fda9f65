"""A gateway's token bucket in PostgreSQL: one ``gateway_rates`` row, shared by every copy.

A lease is one ``UPDATE … RETURNING``: the row's tokens are refilled for the time since the
last lease at the current rate (capped at the burst), up to ``want`` whole tokens are taken,
and what was taken comes back. Every expression reads the row as the UPDATE locked it, so
two copies leasing at once queue on the row lock and never take the same tokens (the
second one's SET is evaluated again on the row the first one left). Times are the
database's clock (seconds since the epoch), so the machines' clocks do not matter.

A throttle halves the rate for ``slow_seconds`` (halved again by a throttle seen after half
that time, down to ``slowest`` of the maximum); the rate each copy is configured with holds
otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_NOW = "EXTRACT(EPOCH FROM now())::float8"
_RATE = f"(CASE WHEN slow_until > {_NOW} THEN slow_rate ELSE :rate END)"
_AVAILABLE = f"LEAST(:burst, tokens + GREATEST(0, {_NOW} - refilled_at) * {_RATE})"
_TAKEN = f"LEAST(:want, GREATEST(0, FLOOR({_AVAILABLE})))::integer"

_CREATE = text(f"""
    INSERT INTO gateway_rates (gateway, tokens, refilled_at, granted, slow_rate, slow_until,
                               slowed_at)
    VALUES (:gateway, 0, {_NOW}, 0, :rate, 0, 0)
    ON CONFLICT (gateway) DO NOTHING""")

_LEASE = text(f"""
    UPDATE gateway_rates
    SET tokens = {_AVAILABLE} - {_TAKEN}, granted = {_TAKEN},
        refilled_at = GREATEST(refilled_at, {_NOW})
    WHERE gateway = :gateway
    RETURNING granted, tokens, {_RATE} AS rate""")

_SLOW_DOWN = text(f"""
    UPDATE gateway_rates
    SET slow_rate = GREATEST(:rate * :slowest, {_RATE} / 2), slowed_at = {_NOW},
        slow_until = {_NOW} + :slow_seconds
    WHERE gateway = :gateway AND slowed_at < {_NOW} - :slow_seconds / 2
    RETURNING slow_rate""")


def create_bucket(conn: Connection, gateway: str, rate: float) -> None:
    """The gateway's row, empty, unless a copy made it already."""
    conn.execute(_CREATE, {"gateway": gateway, "rate": rate})


def lease_tokens(conn: Connection, gateway: str, want: int, rate: float,
                 burst: int) -> tuple[int, float, float] | None:
    """Take up to ``want`` tokens: (taken, tokens left, the rate now); None: no row yet."""
    row = conn.execute(_LEASE, {"gateway": gateway, "want": want, "rate": rate,
                                "burst": burst}).first()
    return None if row is None else (row.granted, row.tokens, row.rate)


def slow_down(conn: Connection, gateway: str, rate: float, slowest: float,
              slow_seconds: float) -> float | None:
    """Halve the current rate for ``slow_seconds``; the new rate, or None when it was
    halved less than ``slow_seconds / 2`` ago (the same throttling, seen by another copy)."""
    row = conn.execute(_SLOW_DOWN, {"gateway": gateway, "rate": rate, "slowest": slowest,
                                    "slow_seconds": slow_seconds}).first()
    return None if row is None else float(row[0])
