"""The callback outbox: status events for client systems, written with the change itself.

A client system (an external system with a registered callback endpoint) is told about its
communications: the requests its key made over the Web API (``requested_by_system_id``).
Every change of state of one of them is turned into an outbox row *in the transaction that
changes the state* (:func:`on_move`, a state machine hook), so a crash can lose no event and
a rolled-back change sends none. The callbacks daemon (:mod:`comms_pipeline.daemons.callbacks`)
delivers the rows, in ``seq`` order per entry.

The hook is on every hot path (the Comms Monitor's births, every daemon's finish), so it is
cheap when there is nothing to do: the registered endpoints are read once per process every
:data:`CACHE_SECONDS` and a batch whose event no endpoint wants costs no statement; when one
does, the whole batch is one ``INSERT … SELECT``. An endpoint registered in another process
is seen by a running one within :data:`CACHE_SECONDS`.

Events carry ids, states, codes and timestamps only: never a body or an address.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    select,
)

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import PENDING_STATES, DetailState, HeaderStatus, public_state
from comms_pipeline.store.dialect import is_postgres
from comms_pipeline.store.models import (
    callback_endpoints_t,
    callback_outbox_t,
    details_t,
    headers_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

#: The events a client system may ask for.
EVENTS = ("accepted", "rejected", "delivered", "bounced", "complained", "opened", "clicked",
          "expired", "completed", "removed")
#: How long a process trusts its list of registered endpoints.
CACHE_SECONDS = 2.0
#: The outbox rows' states (the machine in :mod:`.machine` declares the moves).
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_HEADER_REJECTED = frozenset({HeaderStatus.NOT_SENT, HeaderStatus.OPTED_OUT, HeaderStatus.ERROR,
                              HeaderStatus.CANCELLED})
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+|\+?\d[\d \-]{6,}\d")


class UnknownEvent(CommsError):
    """An event name that is not one of the callback events."""


def parse_events(events: Iterable[str] | str) -> list[str]:
    """The events named (a list or ``a,b,c``; ``all`` for every one), checked and in order."""
    names = events.split(",") if isinstance(events, str) else list(events)
    wanted = {n.strip().lower() for n in names if n.strip()}
    if "all" in wanted:
        wanted = set(EVENTS)
    unknown = sorted(wanted - set(EVENTS))
    if unknown or not wanted:
        raise UnknownEvent(f"unknown callback event(s): {', '.join(unknown) or '(none)'}; "
                           f"known: {', '.join(EVENTS)} (or all)")
    return [e for e in EVENTS if e in wanted]


def detail_event(old: str | None, new: str) -> str | None:
    """The callback event of a detail moving ``old`` -> ``new`` (None: not one)."""
    if new in PENDING_STATES:
        return "accepted" if old is None or old not in PENDING_STATES else None
    return {DetailState.REJECTED: "rejected", DetailState.COMPLETED: "completed",
            DetailState.COMPLETED_REMOVED: "removed",
            DetailState.EXPIRED: "expired"}.get(DetailState(new))


def header_event(old: str | None, new: str) -> str | None:
    """A request that ends without any communication (not sent, opted out, an error,
    cancelled) is ``rejected`` with its status code; its details speak for the rest."""
    return "rejected" if new in _HEADER_REJECTED and old != new else None


# -- the endpoints, cached per process ----------------------------------------------------
@dataclass(frozen=True)
class _Endpoint:
    id: int
    system_id: int
    events: frozenset[str]


_cache: dict[str, tuple[float, tuple[_Endpoint, ...]]] = {}
_cache_lock = threading.Lock()


def forget_endpoints() -> None:
    """Drop this process's cached endpoints (after registering or removing one)."""
    with _cache_lock:
        _cache.clear()


def _endpoints(conn: Connection) -> tuple[_Endpoint, ...]:
    key = str(conn.engine.url)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    e = callback_endpoints_t
    # Disabled endpoints too: their events wait in the outbox, and are sent from where they
    # stopped once the endpoint is enabled again (removing an endpoint drops them).
    rows = conn.execute(select(e.c.id, e.c.system_id, e.c.events)).all()
    found = tuple(_Endpoint(r.id, r.system_id, frozenset(r.events.split(","))) for r in rows)
    with _cache_lock:
        _cache[key] = (now, found)
    return found


def _wanting(conn: Connection, event: str) -> list[int]:
    return [ep.id for ep in _endpoints(conn) if event in ep.events]


# -- writing events -----------------------------------------------------------------------
def _next_seq(kind: str, entry_id: Any) -> ColumnElement[Any]:
    o = callback_outbox_t.alias("prior")
    e = callback_endpoints_t
    return func.coalesce(
        select(func.max(o.c.seq)).where(o.c.endpoint_id == e.c.id, o.c.entry_kind == kind,
                                        o.c.entry_id == entry_id).scalar_subquery(),
        0) + 1


def _of_requester(conn: Connection, e: Any, h: Any) -> ColumnElement[bool]:
    """The endpoints of the system that made the request. On SQLite, ``+ 0`` keeps the
    planner from reading the requests from the endpoint's side (every request the system
    ever made, through the index on ``requested_by_system_id``) instead of from the batch's
    ids: that plan made a batch of 1,000 take seconds. PostgreSQL plans it well as it is
    (and would hash-join a scan of every request with the ``+ 0``)."""
    if is_postgres(conn):
        return e.c.system_id == h.c.requested_by_system_id
    return e.c.system_id == h.c.requested_by_system_id + 0


def _seq(born: bool, kind: str, entry_id: Any) -> ColumnElement[Any]:
    """A row just born has no earlier event: its first is 1 (no lookup on the hot path)."""
    return literal(1, Integer) if born else _next_seq(kind, entry_id)


_COLUMNS = ["endpoint_id", "entry_kind", "entry_id", "header_id", "detail_id", "event",
            "entry_state", "code", "payload", "seq", "state", "attempts", "created_at"]


def _insert(conn: Connection, source: Any) -> int:
    return conn.execute(insert(callback_outbox_t).from_select(_COLUMNS, source)).rowcount or 0


def on_move(conn: Connection, kind: str, old: str | None, new: str, ids: list[int]) -> int:
    """A state machine's move hook: the events of ``ids`` (headers or details) that moved
    ``old`` -> ``new``, for every endpoint of their system that wants them.
    Returns the rows written (0 without a statement when no endpoint wants the event)."""
    event = (detail_event if kind == "detail" else header_event)(old, new)
    if event is None or not ids:
        return 0
    wanted = _wanting(conn, event)
    if not wanted:
        return 0
    e, h, d = callback_endpoints_t, headers_t, details_t
    at = literal(utcnow(), DateTime)
    born = old is None
    if kind == "detail":
        code = d.c.error_code if event in ("rejected", "expired") else null()
        source = (select(e.c.id, literal("detail", String), d.c.id, d.c.header_id, d.c.id,
                         literal(event, String), literal(public_state(new).value, String),
                         code, cast(null(), JSON), _seq(born, "detail", d.c.id),
                         literal(PENDING, String), literal(0, Integer), at)
                  .select_from(d.join(h, h.c.id == d.c.header_id)
                               .join(e, _of_requester(conn, e, h)))
                  .where(d.c.id.in_(ids), e.c.id.in_(wanted)))
    else:
        source = (select(e.c.id, literal("header", String), h.c.id, h.c.id,
                         cast(null(), BigInteger), literal(event, String),
                         literal(new, String), func.coalesce(h.c.status_code, func.upper(
                             h.c.status)), cast(null(), JSON),
                         _seq(born, "header", h.c.id),
                         literal(PENDING, String), literal(0, Integer), at)
                  .select_from(h.join(e, _of_requester(conn, e, h)))
                  .where(h.c.id.in_(ids), e.c.id.in_(wanted)))
    return _insert(conn, source)


def detail_moves_hook(conn: Connection, old: str | None, new: str, ids: list[int]) -> None:
    on_move(conn, "detail", old, new, ids)


def header_moves_hook(conn: Connection, old: str | None, new: str, ids: list[int]) -> None:
    on_move(conn, "header", old, new, ids)


def scrub(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An event's extra fields as sent: scalars only, with anything that reads as an email
    address or a phone number taken out (a DSN's diagnostic often quotes the recipient)."""
    if not details:
        return None
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, datetime):
            value = value.isoformat() + "Z"
        if isinstance(value, str):
            value = _ADDRESS.sub("[address]", value)[:500]
        if value is None or isinstance(value, (str, int, float, bool)):
            out[str(key)[:64]] = value
    return out or None


def enqueue_event(conn: Connection, *, detail_id: int, event: str, code: str | None = None,
                  details: Mapping[str, Any] | None = None, at: datetime | None = None) -> int:
    """Write one event of a detail (``delivered``, ``bounced``, ``complained``, ``opened``,
    ``clicked``…) for every endpoint of its system that wants it, in the caller's
    transaction. ``details``: extra fields (ids, codes, timestamps; addresses are taken
    out). Returns the rows written."""
    return enqueue_events(conn, [detail_id], event, code=code, details=details, at=at)


def enqueue_events(conn: Connection, detail_ids: Iterable[int], event: str, *,
                   code: str | None = None, details: Mapping[str, Any] | None = None,
                   at: datetime | None = None) -> int:
    """:func:`enqueue_event` for many details at once (one ``INSERT … SELECT``)."""
    if event not in EVENTS:
        raise UnknownEvent(f"unknown callback event {event!r}; known: {', '.join(EVENTS)}")
    ids = sorted(set(detail_ids))
    if not ids:
        return 0
    wanted = _wanting(conn, event)
    if not wanted:
        return 0
    e, h, d = callback_endpoints_t, headers_t, details_t
    if is_postgres(conn):
        # Events written outside a change of state (an open, a receipt, a bounce) take the
        # entry's row lock first, as every change of state does: two of them at once would
        # otherwise number their events alike.
        conn.execute(select(d.c.id).where(d.c.id.in_(ids)).order_by(d.c.id)
                     .with_for_update())
    public = case({s.value: public_state(s).value for s in DetailState}, value=d.c.state)
    source = (select(e.c.id, literal("detail", String), d.c.id, d.c.header_id, d.c.id,
                     literal(event, String), public, literal(code, String),
                     literal(scrub(details), JSON), _next_seq("detail", d.c.id),
                     literal(PENDING, String), literal(0, Integer),
                     literal(at or utcnow(), DateTime))
              .select_from(d.join(h, h.c.id == d.c.header_id)
                           .join(e, _of_requester(conn, e, h)))
              .where(d.c.id.in_(ids), e.c.id.in_(wanted)))
    return _insert(conn, source)


def blocked_by_earlier() -> ColumnElement[bool]:
    """An outbox row waits while an earlier event of its entry, for its endpoint, is still
    pending: seq n+1 is never sent before n is delivered (or given up)."""
    o = callback_outbox_t
    prior = o.alias("earlier")
    return exists().where(prior.c.endpoint_id == o.c.endpoint_id,
                          prior.c.entry_kind == o.c.entry_kind,
                          prior.c.entry_id == o.c.entry_id, prior.c.seq < o.c.seq,
                          prior.c.state == PENDING)


def deliverable() -> ColumnElement[bool]:
    """Pending outbox rows of enabled endpoints whose earlier events are settled."""
    o, e = callback_outbox_t, callback_endpoints_t
    enabled = select(e.c.id).where(e.c.enabled.is_(True))
    return and_(o.c.state == PENDING, o.c.endpoint_id.in_(enabled), ~blocked_by_earlier())
