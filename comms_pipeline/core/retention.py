"""How a removal on purpose (the retention policy, an erasure) is told to whoever looks."""

from __future__ import annotations

from datetime import datetime

_BY = {"retention": "the retention policy", "erasure": "an erasure of the person's data"}


def removal_notice(purged_at: datetime | None, purged_by: str | None) -> str | None:
    """``removed by the retention policy on 2026-12-02`` (None: nothing was removed)."""
    if purged_at is None:
        return None
    return f"removed by {_BY.get(purged_by or '', 'the retention policy')} on {purged_at:%Y-%m-%d}"
