"""The one claim / lease / retry / transition mechanism used by every job and daemon.

A worker *claims* a batch of rows by stamping them with its id and a lease deadline. On
PostgreSQL the candidates are chosen with ``FOR UPDATE SKIP LOCKED``, so any number of workers
on any number of machines claim disjoint batches; on SQLite every transaction is
``BEGIN IMMEDIATE`` (see :mod:`comms_pipeline.store.db`), which makes the claim a single writer's.
A row whose lease has passed is claimable again: that is how the work of a worker killed with
SIGKILL is taken over. Finishing a row is compare-and-set: it only applies to rows the worker
still holds, and a completion that arrives after a takeover is refused. Every state change is
written to ``state_transitions`` in the same transaction.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import (
    JSON,
    DateTime,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import ErrorCode
from comms_pipeline.queue.lanes import fair_candidates, fair_ids, lane_values
from comms_pipeline.queue.machine import IllegalTransition, StateMachine
from comms_pipeline.queue.retry import ExponentialBackoff, RetryPolicy
from comms_pipeline.store.dialect import analyze_if_stale, bulk_insert, is_postgres, reading
from comms_pipeline.store.models import transitions_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.elements import ColumnElement

    from comms_pipeline.settings.config import ClaimSettings

log = structlog.get_logger(__name__)

#: How often a claimer looks whether its queue's table statistics went stale.
STATS_CHECK_SECONDS = 5.0

#: Test hook (never set in production): the first finish that holds rows stops the process
#: with SIGSTOP while its row locks are held, as a frozen VM would. The file named by the
#: variable is written first so that the test knows the moment.
FREEZE_IN_FINISH = os.environ.get("COMMS_TEST_FREEZE_IN_FINISH", "")


def _freeze_once() -> None:
    global FREEZE_IN_FINISH
    marker, FREEZE_IN_FINISH = FREEZE_IN_FINISH, ""
    with open(marker, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGSTOP)


@dataclass(frozen=True)
class WorkQueue:
    """A claimable selection of one state machine's rows: the pending work of one stage.

    ``pending`` is called at every claim, so it may depend on the clock (send-after times).
    The machine says where the state is kept and what may happen to it; ``retry`` is the
    handler's retry policy (default: exponential backoff from the ``[claims]`` settings);
    ``give_up_state`` replaces the machine's failed state for this stage (the expiry sweep
    ends rows Expired). ``channel`` is the PostgreSQL notification channel that says rows
    may have become pending (see :mod:`~comms_pipeline.queue.wake`; none: poll only).
    """

    machine: StateMachine
    pending: Callable[[], ColumnElement[bool]]
    order_by: tuple[Any, ...] = ()
    retry: RetryPolicy | None = None
    give_up_state: str | None = None
    #: Fair queueing (:mod:`.lanes`): the column whose values (``lane_domain``'s, and no
    #: value) share the queue round-robin within each priority; None: one lane, as ordered.
    lane: Any = None
    lane_domain: Any = None
    channel: str | None = None
    #: False: a claim is not an attempt at the row's work (the retention sweep clears the
    #: content of finished entries: their attempts stay the sends' count).
    counts_attempts: bool = True

    @property
    def kind(self) -> str:
        return self.machine.kind

    @property
    def table(self) -> Table:
        return self.machine.table

    @property
    def state_column(self) -> str | None:
        return self.machine.state_column

    @property
    def failed_state(self) -> str | None:
        return self.give_up_state or self.machine.failed_state

    def policy(self, claims: ClaimSettings) -> RetryPolicy:
        return self.retry or ExponentialBackoff.from_settings(claims)


@dataclass
class Outcome:
    """What happened to one claimed row.

    ``action`` is ``done`` (set ``state`` and ``values``), ``retry`` (transient failure: try
    again after a backoff, or fail for good after the last attempt) or ``release`` (not
    processed: give it back untouched, e.g. on shutdown).
    """

    id: int
    action: str = "done"
    state: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    description: str | None = None
    #: What the handler produced for this row (details to insert, a document), written by the
    #: handler's ``persist`` hook in the finishing transaction, only if the row is still held.
    payload: Any = None
    #: With ``retry``: wait this long instead of what the queue's policy says (``None``).
    delay: float | None = None

    @classmethod
    def done(cls, id: int, state: str | None = None, code: str | None = None,
             description: str | None = None, payload: Any = None, **values: Any) -> Outcome:
        """Set ``state`` (and ``values``); ``code``/``description`` explain a failure."""
        return cls(id, "done", state, values, code, description, payload)

    @classmethod
    def retry(cls, id: int, code: str, description: str,
              delay: float | None = None) -> Outcome:
        """Try again later: after ``delay`` seconds, else when the queue's policy says."""
        return cls(id, "retry", code=code, description=description, delay=delay)

    @classmethod
    def release(cls, id: int) -> Outcome:
        return cls(id, "release")


def record_transitions(conn: Connection, kind: str, changes: Iterable[tuple[int, str | None, str]],
                       actor: str | None, code: str | None = None, at=None) -> None:
    """Write ``(row_id, from_state, to_state)`` changes to the transition history."""
    at = at or utcnow()
    rows = [{"kind": kind, "row_id": rid, "from_state": old, "to_state": new, "actor": actor,
             "code": code, "at": at} for rid, old, new in changes]
    if rows:
        conn.execute(insert(transitions_t), rows)


def insert_with_history(conn: Connection, machine: StateMachine,
                        rows: Sequence[dict[str, Any]], actor: str | None) -> list[int]:
    """Create rows and record the state each one is born in, in one pass each.

    The ids come back from the insert itself, so the history is written from what is in
    hand (``COPY`` on PostgreSQL): no query has to find the new rows again, which on a
    table that grows during a long run would hang on statistics gathered when it was small.
    """
    state_key, code_key = machine.state_column or "state", machine.error_columns[0]
    machine.check((None, row[state_key]) for row in rows)
    ids = bulk_insert(conn, machine.table, rows, return_ids=True)
    at = utcnow()
    bulk_insert(conn, transitions_t, [
        {"kind": machine.kind, "row_id": i, "from_state": None, "to_state": row[state_key],
         "actor": actor, "code": row.get(code_key), "at": at}
        for i, row in zip(ids, rows, strict=True)])
    births_moved(conn, machine, zip(ids, (row[state_key] for row in rows), strict=True))
    return ids


def births_moved(conn: Connection, machine: StateMachine,
                  born: Iterable[tuple[int, str]]) -> None:
    """Run the machine's move hooks for rows just born, one call per birth state."""
    if not machine.on_move:
        return
    by_state: dict[str, list[int]] = {}
    for row_id, state in born:
        by_state.setdefault(state, []).append(row_id)
    for state, ids in by_state.items():
        machine.moved(conn, None, state, ids)


def record_transitions_from(conn: Connection, kind: str, table: Table,
                            where: ColumnElement[bool], from_state: str | None,
                            to_state: Any, actor: str | None, code: Any = None,
                            at=None) -> None:
    """Record the transitions of every row of ``table`` matching ``where`` in one statement.

    ``to_state`` and ``code`` may be columns of ``table`` (e.g. the state a row was created
    in), so a whole batch is recorded server-side without shipping rows back and forth.
    """
    def value(v: Any) -> Any:
        return v if hasattr(v, "table") else literal(v, String)

    source = select(literal(kind, String), table.c.id, literal(from_state, String),
                    value(to_state), literal(actor, String), value(code),
                    literal(at or utcnow(), DateTime)).where(where)
    conn.execute(insert(transitions_t).from_select(
        ["kind", "row_id", "from_state", "to_state", "actor", "code", "at"], source))


class Claimer:
    """Claims, extends, and finishes rows of :class:`WorkQueue` s for one worker."""

    def __init__(self, engine: Engine, worker_id: str, settings: ClaimSettings) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.settings = settings
        self._pg = is_postgres(engine)
        self._stats_checked: dict[str, float] = {}

    # -- claiming -------------------------------------------------------------------------
    def _refresh_statistics(self, table: Table) -> None:
        """Every few seconds per table: keep the planner's picture of the queue current."""
        now = time.monotonic()
        if now - self._stats_checked.get(table.name, -STATS_CHECK_SECONDS) < STATS_CHECK_SECONDS:
            return
        self._stats_checked[table.name] = now
        with self.engine.begin() as conn:
            if analyze_if_stale(conn, table):
                log.info("claims.analyzed", table=table.name)

    def claim(self, queue: WorkQueue, limit: int) -> list[Row]:
        """Claim up to ``limit`` rows; rows that used up their attempts are failed instead."""
        t = queue.table
        if self._pg:
            self._refresh_statistics(t)
        now = utcnow()
        claimable = [
            queue.pending(),
            or_(t.c.lease_until.is_(None), t.c.lease_until < now),
            or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now),
        ]
        with self.engine.begin() as conn:
            lanes = lane_values(conn, queue)
            chosen: ColumnElement[bool]
            if len(lanes) > 1 and self._pg:  # several systems: interleaved (queue.lanes)
                chosen = self._chosen(t, fair_candidates(queue, claimable, limit), lock=False)
            elif len(lanes) > 1:
                chosen = t.c.id.in_(fair_ids(conn, queue, claimable, lanes, limit))
            else:
                chosen = self._chosen(t, select(t.c.id).where(*claimable)
                                      .order_by(*(queue.order_by or (t.c.id,))).limit(limit),
                                      lock=self._pg)
            stmt = (
                update(t)
                .where(chosen)
                .values(claimed_by=self.worker_id,
                        lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                        attempts=t.c.attempts + (1 if queue.counts_attempts else 0))
                .returning(*t.c)
            )
            rows = sorted(conn.execute(stmt).all(), key=lambda r: r.id)
            policy = queue.policy(self.settings)
            spent = [r for r in rows if policy.gives_up(r.attempts)]
            if spent:
                self._fail_spent(conn, queue, spent)
        if spent:
            spent_ids = {r.id for r in spent}
            rows = [r for r in rows if r.id not in spent_ids]
        return rows

    def outranked(self, queue: WorkQueue, priority: int) -> bool:
        """Whether a claimable row of ``queue`` has a better (lower) priority than
        ``priority``: a worker in the middle of a bulk batch gives the rest back for it."""
        t = queue.table
        if "priority" not in t.c:
            return False
        now = utcnow()
        probe = (select(t.c.id)
                 .where(queue.pending(), t.c.priority < priority,
                        or_(t.c.lease_until.is_(None), t.c.lease_until < now),
                        or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now))
                 .limit(1))
        with reading(self.engine) as conn:
            return conn.execute(probe).first() is not None

    def _chosen(self, t: Table, candidates: Select, *, lock: bool) -> ColumnElement[bool]:
        """The claim's ``WHERE``: the rows whose ids ``candidates`` selects (``lock``: taken
        ``FOR UPDATE SKIP LOCKED``, PostgreSQL)."""
        if not self._pg:
            return t.c.id.in_(candidates.scalar_subquery())
        # ``id = ANY(ARRAY(subquery))``: the locking subquery runs once, as an InitPlan,
        # and the update probes the primary key; ``IN (subquery)`` lets the planner
        # hash-join a sequential scan of the whole table against the batch instead.
        if lock:
            candidates = candidates.with_for_update(skip_locked=True)
        return t.c.id == func.any(func.array(candidates.scalar_subquery()))

    def _fail_spent(self, conn: Connection, queue: WorkQueue, rows: Sequence[Row]) -> None:
        """Rows whose claimants kept dying: fail them rather than loop forever."""
        outcomes = [
            Outcome.done(r.id, queue.failed_state, ErrorCode.MAX_ATTEMPTS,
                         f"gave up after {r.attempts - 1} attempts (claimant lost each time)")
            for r in rows
        ]
        self._apply(conn, queue, outcomes, {r.id: r for r in rows})
        log.warning("claims.gave_up", kind=queue.kind, ids=[r.id for r in rows])

    def extend(self, queue: WorkQueue, ids: Sequence[int]) -> set[int]:
        """Push the lease of rows still held further out; returns the ids still held."""
        if not ids:
            return set()
        t = queue.table
        until = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        with self.engine.begin() as conn:
            held = conn.execute(
                update(t)
                .where(t.c.id.in_(list(ids)), t.c.claimed_by == self.worker_id)
                .values(lease_until=until)
                .returning(t.c.id)
            ).scalars().all()
        return set(held)

    def held(self, queue: WorkQueue, ids: Sequence[int]) -> set[int]:
        """The ids of ``ids`` this worker still holds (a read: nothing is extended).

        A daemon asks before every chunk it sends, so this is one driver-level ``SELECT``
        (a Core statement built and compiled for its 20 ids cost 0.6-0.75 ms inside a run;
        this costs about half of that)."""
        if not ids:
            return set()
        t = queue.table
        with reading(self.engine) as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            prep = conn.dialect.identifier_preparer
            sql = (f"SELECT {prep.quote('id')} FROM {prep.format_table(t)} "
                   f"WHERE {prep.quote('claimed_by')} = {mark} "
                   f"AND {prep.quote('id')} IN ({', '.join([mark] * len(ids))})")
            return {r[0] for r in conn.exec_driver_sql(sql, (self.worker_id, *map(int, ids)))}

    # -- finishing ------------------------------------------------------------------------
    def finish(self, queue: WorkQueue, outcomes: Sequence[Outcome],
               conn: Connection | None = None,
               persist: Callable[[Connection, list[Outcome]], None] | None = None,
               known_lost: set[int] | frozenset[int] = frozenset()) -> set[int]:
        """Apply outcomes to rows this worker still holds; return the ids that were refused.

        ``known_lost``: rows whose loss was already reported (``claims.lease_lost`` is logged
        once per batch, not again when the batch is finished).

        ``persist(conn, held_outcomes)`` runs first in the same transaction, so what a handler
        produced (request details, documents) is written if and only if its row was still held.
        """
        if not outcomes:
            return set()
        if conn is None:
            with self.engine.begin() as own:
                return self.finish(queue, outcomes, own, persist, known_lost)
        t = queue.table
        cols = [t.c.id, t.c.attempts]
        if queue.state_column:
            cols.append(t.c[queue.state_column])
        held_q = select(*cols).where(t.c.id.in_([o.id for o in outcomes]),
                                     t.c.claimed_by == self.worker_id)
        if self._pg:
            held_q = held_q.with_for_update()
        held = {r.id: r for r in conn.execute(held_q)}
        if FREEZE_IN_FINISH and held:
            _freeze_once()
        refused = {o.id for o in outcomes} - set(held)
        if refused - known_lost:
            news = refused - known_lost
            log.warning("claims.lease_lost", kind=queue.kind, worker=self.worker_id,
                        ids=sorted(news)[:20], count=len(news))
        kept = [o for o in outcomes if o.id in held]
        if persist is not None and kept:
            persist(conn, kept)
        self._apply(conn, queue, kept, held)
        return refused

    def _apply(self, conn: Connection, queue: WorkQueue, outcomes: Sequence[Outcome],
               held: dict[int, Row]) -> None:
        now = utcnow()
        same: dict[tuple, list[int]] = {}  # identical new values: one UPDATE ... WHERE id IN
        varied: dict[tuple, list[dict]] = {}  # per-row values: one executemany per key set
        changes: dict[tuple, list[int]] = {}
        for o in outcomes:
            values, new_state = self._values_for(queue, o, held[o.id], now)
            if new_state is not None and queue.state_column:
                old = held[o.id]._mapping.get(queue.state_column)
                if old != new_state:
                    changes.setdefault((old, new_state, o.code), []).append(o.id)
            try:
                same.setdefault(tuple(sorted(values.items())), []).append(o.id)
            except TypeError:  # unhashable values (JSON): row by row
                varied.setdefault(tuple(sorted(values)), []).append({"_id": o.id, **values})
        queue.machine.check((old, new) for old, new, _ in changes)
        t = queue.table
        for items, ids in same.items():
            if len(ids) == 1:
                varied.setdefault(tuple(k for k, _ in items), []).append(
                    {"_id": ids[0], **dict(items)})
            else:
                conn.execute(update(t).where(t.c.id.in_(ids)).values(dict(items)))
        for keys, params in varied.items():
            plain = len(params) > 1 and not any(isinstance(t.c[k].type, JSON) for k in keys)
            if self._pg and plain:
                _update_from_values(conn, t, keys, params)
            elif plain and conn.dialect.paramstyle == "qmark":  # SQLite
                _update_many_driver(conn, t, keys, params)
            else:
                stmt = update(t).where(t.c.id == bindparam("_id"))
                conn.execute(stmt.values({k: bindparam(k) for k in keys}), params)
        for (old, new, code), ids in changes.items():
            record_transitions_from(conn, queue.kind, t, t.c.id.in_(ids), old, new,
                                    self.worker_id, code, now)
            queue.machine.changed(conn, new, ids, old)

    def _values_for(self, queue: WorkQueue, o: Outcome, row: Row, now) -> tuple[dict, str | None]:
        values: dict[str, Any] = {"claimed_by": None, "lease_until": None}
        new_state = None
        cols = queue.machine.error_columns
        if o.action == "release":
            values["attempts"] = max(row.attempts - 1, 0)
        elif o.action == "retry":
            description = o.description
            delay = o.delay if o.delay is not None else queue.policy(self.settings).delay(
                row.attempts)
            if delay is None:
                new_state = queue.failed_state
                description = f"{o.description} (gave up after {row.attempts} attempts)"
            else:
                values["next_attempt_at"] = now + timedelta(seconds=delay)
            if cols:
                values.update({cols[0]: o.code, cols[1]: description})
        else:
            new_state = o.state
            if cols and o.code is not None:
                values.update({cols[0]: o.code, cols[1]: o.description})
            _check_values(queue, o.values)
            values.update(o.values)
            old = row._mapping.get(queue.state_column) if queue.state_column else None
            if queue.machine.starts_stage(old, new_state):
                # A new stage counts its own attempts: a merge is not a send, so with
                # max_attempts = N a merged email gets N sends, the first retry after the
                # base delay.
                values["attempts"] = 0
                values["next_attempt_at"] = None
        if new_state is not None and queue.state_column:
            values[queue.state_column] = new_state
        if "updated_at" in queue.table.c:
            values["updated_at"] = now
        return values, new_state


def _update_from_values(conn: Connection, t: Table, keys: tuple[str, ...],
                        params: list[dict]) -> None:
    """Per-row values in one statement: ``UPDATE t SET ... FROM unnest(arrays) v WHERE ...``.

    PostgreSQL only (SQLite's executemany is in-process and already cheap). The statement's
    text depends only on the columns, so it is compiled once; the rows travel as one typed
    array per column.
    """
    arrays = ", ".join(f"CAST(:{k} AS {t.c[k].type.compile(dialect=conn.dialect)}[])"
                       for k in keys)
    sets = ", ".join(f"{k} = v.{k}" for k in keys)
    sql = text(f"UPDATE {t.name} SET {sets} "
               f"FROM unnest(CAST(:_id AS BIGINT[]), {arrays}) AS v(_id, {', '.join(keys)}) "
               f"WHERE {t.name}.id = v._id")
    conn.execute(sql, {"_id": [p["_id"] for p in params],
                       **{k: [p[k] for p in params] for k in keys}})


#: Columns only the claim mechanism writes: the state (through the machine) and the claim.
_CLAIM_COLUMNS = frozenset({"claimed_by", "lease_until", "attempts", "next_attempt_at"})


def _check_values(queue: WorkQueue, values: dict[str, Any]) -> None:
    """An outcome's values are the row's own data: never its state, claim or retry counters
    (those follow from the outcome's action and the queue's policy), never a column the
    table does not have."""
    reserved = (set(values) & _CLAIM_COLUMNS) | (set(values) & {queue.state_column})
    unknown = set(values) - set(queue.table.c.keys())
    if reserved or unknown:
        raise IllegalTransition(
            f"a {queue.kind}'s outcome may not set {', '.join(sorted(reserved | unknown))}")


def _update_many_driver(conn: Connection, t: Table, keys: tuple[str, ...],
                        params: list[dict]) -> None:
    """Per-row values as one driver-level ``executemany`` (SQLite).

    The same statement as SQLAlchemy's executemany, but the values go to the driver as
    tuples through each column's bind processor: SQLAlchemy's own per-row parameter handling
    cost more than the update itself (~15 us a row, a sixth of an email's send).
    """
    dialect = conn.dialect
    processors = [t.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys]
    id_processor = t.c.id.type.dialect_impl(dialect).bind_processor(dialect)
    prep = dialect.identifier_preparer
    sets = ", ".join(f"{prep.quote(k)} = ?" for k in keys)
    sql = f"UPDATE {prep.format_table(t)} SET {sets} WHERE {prep.quote('id')} = ?"
    rows = []
    for p in params:
        row = [p[k] if proc is None or p[k] is None else proc(p[k])
               for k, proc in zip(keys, processors, strict=True)]
        row.append(p["_id"] if id_processor is None else id_processor(p["_id"]))
        rows.append(tuple(row))
    conn.exec_driver_sql(sql, rows)


def transition_rows(conn: Connection, queue: WorkQueue, where: ColumnElement[bool],
                    new_state: str, actor: str, code: str | None = None,
                    values: dict[str, Any] | None = None, limit: int | None = None) -> list[int]:
    """Move unclaimed rows matching ``where`` to ``new_state`` (compare-and-set on ``where``).

    Used for transitions that are not a worker's claim: expiry sweeps, cancellations,
    acknowledgements by external systems. Returns the ids that changed.
    """
    t = queue.table
    if queue.state_column is None:
        raise IllegalTransition(f"a {queue.kind} has no state to move")
    state_col = t.c[queue.state_column]
    sel = select(t.c.id, state_col).where(where).where(
        or_(t.c.claimed_by.is_(None), t.c.lease_until < utcnow()))
    if limit:
        sel = sel.order_by(t.c.id).limit(limit)
    if is_postgres(conn):
        sel = sel.with_for_update(skip_locked=True)
    rows = conn.execute(sel).all()
    if not rows:
        return []
    queue.machine.check((r[1], new_state) for r in rows)
    ids = [r.id for r in rows]
    now = utcnow()
    vals: dict[str, Any] = {queue.state_column: new_state, "claimed_by": None,
                            "lease_until": None}
    if queue.machine.starts_stage(None, new_state):  # e.g. an operator's retry
        vals.update(attempts=0, next_attempt_at=None)
    vals.update(values or {})
    if "updated_at" in t.c:
        vals["updated_at"] = now
    conn.execute(update(t).where(and_(t.c.id.in_(ids))).values(vals))
    record_transitions(conn, queue.kind, [(r.id, r[1], new_state) for r in rows], actor, code,
                       now)
    by_old: dict[str | None, list[int]] = {}
    for r in rows:
        by_old.setdefault(r[1], []).append(r.id)
    for old, moved in by_old.items():
        queue.machine.changed(conn, new_state, moved, old)
    return ids


def backlog(conn: Connection, queue: WorkQueue) -> int:
    """How many rows of ``queue`` are pending (claimed or not): the work left to do."""
    return conn.execute(select(func.count()).select_from(queue.table)
                        .where(queue.pending())).scalar_one()
