"""The one clock every timestamp in the database is written with."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC now (the database columns hold naive UTC on both backends)."""
    return datetime.now(UTC).replace(tzinfo=None)
