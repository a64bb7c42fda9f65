"""Cron expressions, checked once where they are written (configuration, notification types)
by the parser that will run them, so that one bad line cannot stop the scheduler later."""

from __future__ import annotations


def check_cron(expr: str) -> str:
    """``expr`` if APScheduler reads it as a five-field crontab line; else a ValueError that
    says what is wrong (``"61 * * * *"``: the minute is out of range)."""
    from apscheduler.triggers.cron import CronTrigger

    if len(expr.split()) != 5:
        raise ValueError(f"cron expression must have 5 fields, got {expr!r}")
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    return expr
