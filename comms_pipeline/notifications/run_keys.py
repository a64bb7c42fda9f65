"""Run keys: the period a notification run covers, so that a period is notified once.

A type's run key is its period as text: the day (``2026-12-01``) by default and for a type
whose cron fires once a day; the month (``2026-12``) for a cron on a fixed day of the month;
the ISO week (``2026-W49``) for a fixed weekday; the hour or the minute for crons that fire
more often than daily. An explicit key (``comms notifications run TYPE --run-key KEY``) names
any other period, or a deliberate second run ("2026-12-01-again").
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

MAX_KEY = 100


def _single(field: str) -> bool:
    return field.isdigit()


def period_of(cron: str | None) -> str:
    """``"minute"``, ``"hour"``, ``"day"``, ``"week"`` or ``"month"``: the longest period in
    which ``cron`` fires at most once (``"day"`` without a cron)."""
    fields = (cron or "").split()
    if len(fields) != 5:
        return "day"
    minute, hour, dom, month, dow = fields
    if not _single(minute):
        return "minute"
    if not _single(hour):
        return "hour"
    if _single(dom) and month == "*" and dow == "*":
        return "month"
    if _single(dow) and dom == "*" and month == "*":
        return "week"
    return "day"


def period_key(cron: str | None, now: datetime) -> str:
    """The run key of the period ``now`` falls in, for a type with ``cron``."""
    period = period_of(cron)
    if period == "month":
        return f"{now:%Y-%m}"
    if period == "week":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "hour":
        return f"{now:%Y-%m-%dT%H}"
    if period == "minute":
        return f"{now:%Y-%m-%dT%H:%M}"
    return f"{now:%Y-%m-%d}"


def current_key(cron: str | None, timezone: str, today: date | None = None) -> str:
    """The run key of now in the scheduler's time zone (``today`` replaces the date)."""
    now = datetime.now(ZoneInfo(timezone))
    if today is not None:
        now = now.replace(year=today.year, month=today.month, day=today.day)
    return period_key(cron, now)
