"""Per-system and per-key limits: Web API requests per second, communications per media per day.

Limits live on the external system and on the API key (``rate_limit_per_second``,
``daily_limits`` = ``{"email": 250000, "letter": 20000}``); NULL is unlimited, the default, and
nothing is counted for a scope without limits. Counts are rows of ``usage_counters``,
incremented by one ``INSERT … ON CONFLICT DO UPDATE … RETURNING count`` (both dialects), so
a limit holds across any number of API processes and machines sharing the database:

- **Requests per second**: a fixed one-second window per scope, in one row that moves with the
  clock (period ``second``). It is counted in its own short transaction before the call does
  its work; over the limit the call is answered 429 ``rate_limited`` with ``Retry-After: 1``.
- **Daily limits per media**: counted *at acceptance*, in the transaction that writes the
  request header, once for each media the request may produce (a template's media, or the
  media of the templates of the event rules it may set off): a request sent to all of a
  contact's addresses counts once, however many entries the monitor makes of it. A request
  that would pass a limit is refused 429 ``quota_exceeded`` (``Retry-After`` = seconds to
  the next UTC midnight) and writes nothing, so a day's count is exactly what was accepted.

A system's limits count its live keys' traffic together; a key's own limits count that key.
Test keys' traffic (:attr:`~comms_pipeline.pipeline.apikeys.Principal.is_test`) counts
against no system limit and no daily limit; only a rate limit set on the test key itself.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, or_, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import audit
from comms_pipeline.store.dialect import insert_for
from comms_pipeline.store.models import keys_t, systems_t, usage_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

MEDIA = ("email", "sms", "push", "letter", "external")
REQUESTS = "requests"
SECOND = "second"
RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"


class LimitExceeded(CommsError):
    """A rate limit or a daily quota is used up."""

    def __init__(self, code: str, message: str, retry_after: int,
                 details: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = dict(details)


class LimitsError(CommsError):
    """The limits given are not valid."""


@dataclass(frozen=True)
class Scope:
    """Whose use is counted (``system:<id>`` or ``key:<id>``) and its limits."""

    name: str
    label: str
    rate: int | None = None
    daily: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyLimits:
    """A key with limits (its own or its system's), as the Web API's cache holds it."""

    key_id: int
    key_hash: str
    is_test: bool
    scopes: tuple[Scope, ...]

    def matches(self, key_hash: str) -> bool:
        return hmac.compare_digest(self.key_hash, key_hash)

    def rate_scopes(self) -> list[Scope]:
        return [s for s in self.scopes if s.rate is not None]

    def daily_scopes(self) -> list[Scope]:
        """None for a test key: its traffic is not counted against daily limits."""
        return [] if self.is_test else [s for s in self.scopes if s.daily]


def system_scope(system_id: int) -> str:
    return f"system:{system_id}"


def key_scope(key_id: int) -> str:
    return f"key:{key_id}"


def parse_daily(items: Iterable[str]) -> dict[str, int | None]:
    """``["email=250000", "sms=off"]`` -> ``{"email": 250000, "sms": None}`` (None removes)."""
    out: dict[str, int | None] = {}
    for item in items:
        media, sep, value = item.partition("=")
        media = media.strip().lower()
        if not sep or media not in MEDIA:
            raise LimitsError(f"a daily limit reads MEDIA=N (media one of {', '.join(MEDIA)}),"
                              f" not {item!r}")
        value = value.strip().lower()
        if value in ("off", "none", "unlimited", ""):
            out[media] = None
            continue
        if not value.isdigit() or int(value) < 1:
            raise LimitsError(f"daily limit for {media}: a whole number of at least 1, or "
                              f"'off', not {value!r}")
        out[media] = int(value)
    return out


def set_limits(conn: Connection, *, system_id: int | None = None, key_id: int | None = None,
               rate: int | None = None, clear_rate: bool = False,
               daily: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """Change a system's (or a key's) limits; return them as they are now."""
    table, row_id = (systems_t, system_id) if system_id is not None else (keys_t, key_id)
    current = conn.execute(select(table.c.rate_limit_per_second, table.c.daily_limits)
                           .where(table.c.id == row_id)).one()
    values: dict[str, Any] = {}
    if clear_rate:
        values["rate_limit_per_second"] = None
    elif rate is not None:
        if rate < 1:
            raise LimitsError("a rate limit is at least 1 request per second")
        values["rate_limit_per_second"] = rate
    if daily:
        merged = dict(current.daily_limits or {})
        for media, limit in daily.items():
            if limit is None:
                merged.pop(media, None)
            else:
                merged[media] = limit
        values["daily_limits"] = merged or None
    if values:
        conn.execute(update(table).where(table.c.id == row_id).values(values))
        before = {"rate_limit_per_second": current.rate_limit_per_second,
                  "daily_limits": current.daily_limits}
        audit.record(conn, action="external_system.limits" if system_id is not None
                     else "api_key.limits", target_kind="external_system"
                     if system_id is not None else "api_key", target_id=row_id,
                     change=audit.changed_fields(before, {**before, **values}))
    return {"rate_limit_per_second": values.get("rate_limit_per_second",
                                                current.rate_limit_per_second),
            "daily_limits": values.get("daily_limits", current.daily_limits) or {}}


def load_key_limits(conn: Connection) -> dict[str, KeyLimits]:
    """Every active key that has limits, its own or its system's, by prefix."""
    k, s = keys_t, systems_t
    rows = conn.execute(
        select(k.c.id, k.c.prefix, k.c.key_hash, k.c.kind, k.c.name,
               k.c.rate_limit_per_second, k.c.daily_limits, s.c.id.label("system_id"),
               s.c.code, s.c.rate_limit_per_second.label("system_rate"),
               s.c.daily_limits.label("system_daily"))
        .outerjoin(s, s.c.id == k.c.external_system_id)
        .where(k.c.revoked_at.is_(None),
               or_(k.c.rate_limit_per_second.isnot(None), k.c.daily_limits.isnot(None),
                   s.c.rate_limit_per_second.isnot(None), s.c.daily_limits.isnot(None))))
    found: dict[str, KeyLimits] = {}
    for r in rows:
        is_test = r.kind == "test"
        scopes = []
        if r.rate_limit_per_second is not None or r.daily_limits:
            scopes.append(Scope(key_scope(r.id), f"key {r.prefix}", r.rate_limit_per_second,
                                dict(r.daily_limits or {})))
        if r.system_id is not None and not is_test and (
                r.system_rate is not None or r.system_daily):
            scopes.append(Scope(system_scope(r.system_id), f"external system {r.code}",
                                r.system_rate, dict(r.system_daily or {})))
        if scopes:
            found[r.prefix] = KeyLimits(r.id, r.key_hash, is_test, tuple(scopes))
    return found


_BUMPS: dict[tuple[str, bool], Any] = {}


def _bump_statement(conn: Connection, rolling: bool) -> Any:
    """The counter's upsert for ``conn``'s dialect, built once (it runs on every limited
    call: building and keying it anew cost more than the statement itself)."""
    found = _BUMPS.get((conn.dialect.name, rolling))
    if found is None:
        t = usage_t
        stmt = insert_for(conn, t).values(
            scope=bindparam("scope"), metric=bindparam("metric"), period=bindparam("period"),
            window_start=bindparam("window_start"), count=bindparam("n"),
            updated_at=bindparam("now"))
        new = stmt.excluded
        count = (case((t.c.window_start == new.window_start, t.c.count + new.count),
                      else_=new.count) if rolling else t.c.count + new.count)
        found = stmt.on_conflict_do_update(
            index_elements=["scope", "metric", "period"],
            set_={"count": count, "window_start": new.window_start,
                  "updated_at": new.updated_at},
        ).returning(t.c.count)
        _BUMPS[(conn.dialect.name, rolling)] = found
    return found


def _bump(conn: Connection, scope: str, metric: str, period: str, window_start: datetime,
          n: int, now: datetime, rolling: bool) -> int:
    """Add ``n`` to a counter atomically and return its new value. A ``rolling`` counter
    (one row per scope and metric) starts again from ``n`` when its window has moved on."""
    return int(conn.execute(_bump_statement(conn, rolling), {
        "scope": scope, "metric": metric, "period": period, "window_start": window_start,
        "n": n, "now": now}).scalar_one())


def check_rate(conn: Connection, limits: KeyLimits, now: datetime | None = None) -> None:
    """Count one request against each rate-limited scope; :class:`LimitExceeded` if over."""
    now = now or utcnow()
    window = now.replace(microsecond=0)
    for scope in limits.rate_scopes():
        assert scope.rate is not None
        count = _bump(conn, scope.name, REQUESTS, SECOND, window, 1, now, rolling=True)
        if count > scope.rate:
            raise LimitExceeded(
                RATE_LIMITED, f"{scope.label} may make {scope.rate} request(s) per second; "
                f"wait a second and try again", 1,
                {"limit": scope.rate, "per": "second", "scope": scope.label})


def seconds_to_midnight(now: datetime) -> int:
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    return max(1, math.ceil((midnight - now).total_seconds()))


def count_accepted(conn: Connection, limits: KeyLimits | None, media: Iterable[str],
                   now: datetime | None = None) -> None:
    """Count an accepted request once for each media it may produce, against every daily
    limit of its key and system (in the caller's transaction, which writes the header);
    :class:`LimitExceeded` when one would be passed: the caller rolls back."""
    if limits is None:
        return
    now = now or utcnow()
    day = now.date()
    wanted = sorted(set(media))
    for scope in limits.daily_scopes():
        for m in wanted:
            limit = scope.daily.get(m)
            count = _bump(conn, scope.name, m, day.isoformat(),
                          datetime.combine(day, datetime.min.time()), 1, now, rolling=False)
            if limit is not None and count > limit:
                raise LimitExceeded(
                    QUOTA_EXCEEDED, f"{scope.label} has used its daily limit of {limit} "
                    f"{m} communication(s) (UTC day {day}); try again after midnight UTC",
                    seconds_to_midnight(now),
                    {"limit": limit, "media": m, "per": "day", "scope": scope.label})


def usage(conn: Connection, scopes: Iterable[str], now: datetime | None = None
          ) -> dict[str, dict[str, int]]:
    """Each scope's counts: today's per media, and ``requests`` in the current second."""
    now = now or utcnow()
    today, second = now.date().isoformat(), now.replace(microsecond=0)
    t = usage_t
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(select(t.c.scope, t.c.metric, t.c.period, t.c.window_start,
                               t.c.count.label("n"))
                        .where(t.c.scope.in_(list(scopes)), t.c.period.in_([today, SECOND])))
    for r in rows:
        if r.period == SECOND:
            out.setdefault(r.scope, {})[REQUESTS] = int(r.n) if r.window_start == second else 0
        else:
            out.setdefault(r.scope, {})[r.metric] = int(r.n)
    return out


def system_overview(conn: Connection, system_id: int) -> dict[str, Any]:
    """A system's row, its active keys with their kinds and limits, and today's usage of
    the system and of each key (what ``comms external-systems show`` prints)."""
    system = conn.execute(select(systems_t).where(systems_t.c.id == system_id)).one()
    keys = [dict(r._mapping) for r in conn.execute(
        select(keys_t.c.id, keys_t.c.prefix, keys_t.c.kind, keys_t.c.name,
               keys_t.c.rate_limit_per_second, keys_t.c.daily_limits, keys_t.c.last_used_at)
        .where(keys_t.c.external_system_id == system_id, keys_t.c.revoked_at.is_(None))
        .order_by(keys_t.c.id))]
    scopes = [system_scope(system_id), *(key_scope(k["id"]) for k in keys)]
    used = usage(conn, scopes)
    return {"system": dict(system._mapping), "keys": keys,
            "usage": used.get(system_scope(system_id), {}),
            "key_usage": {k["prefix"]: used.get(key_scope(k["id"]), {}) for k in keys}}


def key_id(conn: Connection, prefix: str) -> int | None:
    """The id of the active key with ``prefix``."""
    return conn.execute(select(keys_t.c.id).where(keys_t.c.prefix == prefix,
                                                  keys_t.c.revoked_at.is_(None))
                        ).scalar_one_or_none()
