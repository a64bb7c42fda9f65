"""Notification runs: a type executed over its population, in batches, resumable.

``run_notifications(settings, engine, "LOW_WALLET_BALANCE")`` streams the population (see
:mod:`~comms_pipeline.notifications.population`) and, per batch of N recipients, in one
transaction: writes a notification and a request header per notified recipient, a
skipped-recipient record (with the reason) per skipped one, and moves the run's cursor
(``resume_after``) and counters forward. Memory holds one batch, whatever the population.
Who is notified is decided on read-only connections (population, segments, contacts' consent)
before the write transaction; the notifications go in by ``COPY`` on PostgreSQL and the
headers are derived from them by one ``INSERT … SELECT`` per batch (see
:mod:`~comms_pipeline.notifications.batch`), so each recipient's data crosses the wire once.

A run covers one period of its type, named by its *run key* (see
:mod:`~comms_pipeline.notifications.run_keys`: the day of a daily type, or an explicit key):
``UNIQUE(type_id, run_key)`` makes it one run per period, and a second ``run`` for a period
that already finished is refused (:class:`RunAlreadyDoneError`) — it never notifies again.
Runs of one type are serialised by a lock (:mod:`~comms_pipeline.store.locks`: an advisory
lock on PostgreSQL, a lock file on SQLite): a second process waits, then resumes or refuses;
``UNIQUE(type_id, run_key, recipient_key)`` on the notifications stands behind the lock.

A run that dies (SIGKILL, a crash, a lost database) stays ``running`` (or ``interrupted``
when it saw the error); the next ``run`` of the same type resumes it after the last committed
recipient. Nothing is written twice: a batch is all or nothing, the cursor moves in the same
transaction (compare-and-set on the counters, so two processes cannot both advance one run),
and ``UNIQUE(run_id, recipient_key)`` plus the headers' idempotency keys stand behind that.
``dry_run`` streams and decides the same way and writes nothing.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import click
import structlog
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.progress_line import progress_line
from comms_pipeline.notifications import batch as nb
from comms_pipeline.notifications import population as pop
from comms_pipeline.notifications.run_keys import MAX_KEY, current_key
from comms_pipeline.notifications.types import DefinitionError, load_type
from comms_pipeline.queue.births import record_births_where
from comms_pipeline.queue.machine import HEADERS
from comms_pipeline.settings.notifications import business_url
from comms_pipeline.store.dialect import lock_rows
from comms_pipeline.store.locks import NamedLock
from comms_pipeline.store.models import (
    headers_t,
    notifications_t,
    runs_t,
    skipped_t,
    templates_t,
    types_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.notifications.population import Recipient
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

RUNNING, INTERRUPTED, FINISHED = "running", "interrupted", "finished"
UNFINISHED = (RUNNING, INTERRUPTED)
COUNTERS = ("created", "skipped_consent", "skipped_condition", "errors")


class RunConflictError(CommsError):
    """Another process advanced this notification run at the same time."""


class RunAlreadyDoneError(CommsError):
    """The period (run key) of this run was notified already: nothing is sent again."""

    def __init__(self, type_code: str, run_key: str, run_id: int, created: int) -> None:
        super().__init__(f"{type_code}: run {run_id} for {run_key} already finished "
                         f"({created} notified); nothing is sent again (another period: "
                         f"--run-key)")
        self.run_id = run_id
        self.run_key = run_key


class RunState:
    """The cursor and counters of a run, as committed."""

    def __init__(self, run_id: int | None, after: Any, key_type: str | None,
                 counters: dict[str, int], summary: dict[str, Any], resumed: bool,
                 started_at: datetime | None = None, run_key: str | None = None) -> None:
        self.run_id = run_id
        #: The period the run covers (None for a run made before run keys).
        self.run_key = run_key
        #: When the run began: its communications expire counted from here, however long
        #: the run takes or however late it is resumed.
        self.started_at = started_at
        self.after = after
        self.key_type = key_type
        self.counters = counters
        self.summary = summary
        self.resumed = resumed


def _key_from_text(value: str | None, key_type: str | None) -> Any:
    if value is None:
        return None
    return int(value) if key_type == "int" else value


def _unfinished_run(conn: Connection, type_id: int, run_key: str | None = None) -> Any:
    """The type's latest real run that did not finish (of ``run_key`` when given)."""
    q = select(runs_t).where(runs_t.c.type_id == type_id, runs_t.c.status.in_(UNFINISHED),
                             runs_t.c.dry_run.is_(False))
    if run_key is not None:
        q = q.where(runs_t.c.run_key == run_key)
    return conn.execute(q.order_by(runs_t.c.id.desc()).limit(1)).one_or_none()


def _run_of_key(conn: Connection, type_id: int, run_key: str) -> Any:
    return conn.execute(select(runs_t).where(runs_t.c.type_id == type_id,
                                             runs_t.c.run_key == run_key)).one_or_none()


def _to_resume(conn: Connection, type_id: int, type_code: str, run_key: str,
               explicit: bool) -> Any:
    """The run to resume, or None to start one for ``run_key``; raise if that period is done.

    Without an explicit key the type's unfinished run (of whatever period) is resumed first,
    as before run keys: a run killed yesterday finishes what it started."""
    found = None if explicit else _unfinished_run(conn, type_id)
    if found is None:
        found = _run_of_key(conn, type_id, run_key)
        if found is not None and found.status not in UNFINISHED:
            raise RunAlreadyDoneError(type_code, run_key, found.id, found.created)
    return found


def _open_run(engine: Engine, type_id: int, type_code: str, dry_run: bool,
              run_key: str | None = None, explicit: bool = False) -> RunState:
    """Resume the run to resume, or start one for ``run_key``. A dry run starts and changes
    nothing: it counts from where the unfinished run stopped, as the next real run would."""
    zero = dict.fromkeys(COUNTERS, 0)
    run_key = run_key or f"{utcnow():%Y-%m-%d}"
    if dry_run:
        with engine.connect() as conn:
            found = _to_resume(conn, type_id, type_code, run_key, explicit)
        if found is None:
            return RunState(None, None, None, zero, {}, False, run_key=run_key)
        key_type = (found.summary or {}).get("key_type")
        return RunState(None, _key_from_text(found.resume_after, key_type), key_type, zero,
                        {"resumes_run": found.id}, False, run_key=found.run_key)
    now = utcnow()
    try:
        with engine.begin() as conn:
            # One opener per type at a time, also for callers without the run lock.
            lock_rows(conn, select(types_t.c.id).where(types_t.c.id == type_id))
            found = _to_resume(conn, type_id, type_code, run_key, explicit)
            if found is not None:
                summary = dict(found.summary or {})
                summary["resumed"] = summary.get("resumed", 0) + 1
                conn.execute(update(runs_t).where(runs_t.c.id == found.id)
                             .values(status=RUNNING, summary=summary))
                log.info("notification_run.resumed", run_id=found.id, type=type_code,
                         run_key=found.run_key, after=found.resume_after,
                         created=found.created)
                return RunState(found.id, _key_from_text(found.resume_after,
                                                         summary.get("key_type")),
                                summary.get("key_type"),
                                {c: getattr(found, c) for c in COUNTERS},
                                summary, True, found.started_at, run_key=found.run_key)
            summary = {"type": type_code, "run_key": run_key, "skip_reasons": {},
                       "batches": 0, "resumed": 0}
            run_id = conn.execute(insert(runs_t).values(
                type_id=type_id, run_key=run_key, status=RUNNING, dry_run=False,
                started_at=now, summary=summary, **zero).returning(runs_t.c.id)).scalar_one()
    except IntegrityError:
        # Another process (without the run lock) started this period's run first.
        with engine.connect() as conn:
            found = _run_of_key(conn, type_id, run_key)
        if found is None:
            raise
        raise RunAlreadyDoneError(type_code, run_key, found.id, found.created) from None
    log.info("notification_run.started", run_id=run_id, type=type_code, run_key=run_key)
    return RunState(run_id, None, None, zero, dict(summary), False, now, run_key=run_key)


def _batches(recipients: Iterable[Recipient], size: int) -> Iterator[list[Recipient]]:
    chunk: list[Recipient] = []
    for r in recipients:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write(conn: Connection, ctx: nb.RunContext, state: RunState, decisions: nb.Decisions,
           last_key: Any, priority: int) -> None:
    """Write one batch and advance the run, compare-and-set on the committed counters."""
    now = utcnow()
    run_id = state.run_id
    assert run_id is not None
    if decisions.notified:
        # The headers are derived in the database from the notifications just written: this
        # run's rows between the highest id before and after (only this process writes it).
        highest = select(func.max(notifications_t.c.id))
        after_id = conn.execute(highest).scalar() or 0
        nb.insert_notifications(conn, nb.notification_rows(
            ctx, run_id, state.counters["created"] + 1, decisions.notified, now,
            run_key=state.run_key))
        upto_id = conn.execute(highest).scalar_one()
        conn.execute(text(nb.headers_statement(conn)),
                     nb.header_params(ctx, run_id, after_id, upto_id, now, priority,
                                      started_at=state.started_at))
        record_births_where(conn, HEADERS, headers_t.c.notification_id.between(
            after_id + 1, upto_id), actor=f"notification-run:{run_id}")
    if decisions.skipped:
        conn.execute(insert(skipped_t), nb.skipped_rows(run_id, decisions.skipped, now))
    counts = decisions.counts()
    key_type = state.key_type or ("int" if isinstance(last_key, int) else "text")
    summary = dict(state.summary, key_type=key_type, batches=state.summary.get("batches", 0) + 1)
    reasons = Counter(summary.get("skip_reasons") or {})
    reasons.update(s.code for s in decisions.skipped)
    summary["skip_reasons"] = dict(reasons)
    new = {c: state.counters[c] + counts.get(c, 0) for c in COUNTERS}
    changed = conn.execute(
        update(runs_t)
        .where(runs_t.c.id == run_id, runs_t.c.status == RUNNING,
               *(runs_t.c[c] == state.counters[c] for c in COUNTERS))
        .values(resume_after=str(last_key)[:200], summary=summary, **new)).rowcount
    if changed != 1:
        raise RunConflictError(f"notification run {run_id} was advanced by another process; "
                               f"this one stops")
    state.counters, state.summary, state.key_type = new, summary, key_type
    state.after = last_key


def _finish(engine: Engine, state: RunState, status: str, extra: dict[str, Any]) -> None:
    if state.run_id is None:
        return
    with engine.begin() as conn:
        conn.execute(update(runs_t).where(runs_t.c.id == state.run_id).values(
            status=status, summary=dict(state.summary, **extra),
            finished_at=utcnow() if status == FINISHED else None))


def _context(engine: Engine, type_code: str, today: date | None) -> nb.RunContext:
    with engine.connect() as conn:
        t = load_type(conn, type_code)
        classification = conn.execute(
            select(templates_t.c.classification).where(templates_t.c.code == t.template_code,
                                                       templates_t.c.active.is_(True))
        ).scalar_one_or_none()
    if not t.active:
        raise DefinitionError(f"notification type {type_code} is not active")
    if classification is None:
        raise DefinitionError(f"notification type {type_code}: no active template "
                              f"{t.template_code!r} (load the templates first)")
    return nb.RunContext(t, classification, today or date.today())


def _decided(ctx: nb.RunContext, query: str, after: Any, size: int, chunk: int,
             population_url: str, comms_url: str
             ) -> Generator[tuple[Any, int, nb.Decisions], None, None]:
    """Batches of the population with the decision for each recipient (read-only)."""
    reader = pop.reader_engine(population_url)
    contacts = pop.reader_engine(comms_url)
    try:
        with reader.connect() as source, reader.connect() as lookups, \
                contacts.connect() as comms:
            for batch in _batches(pop.stream(source, query, after, chunk), size):
                decisions = nb.decide(ctx, batch, comms=comms, business=lookups)
                comms.rollback()  # no transaction (snapshot) held between batches
                yield batch[-1].key, len(batch), decisions
    finally:
        reader.dispose()
        contacts.dispose()


def _total(url: str, query: str, after: Any) -> int:
    reader = pop.reader_engine(url)
    try:
        with reader.connect() as conn:
            return pop.count(conn, query, after)
    finally:
        reader.dispose()


def run_notifications(settings: Settings, engine: Engine, type_code: str, *,
                      dry_run: bool = False, progress: bool = False,
                      batch_size: int | None = None, today: date | None = None,
                      on_batch: Callable[[int], None] | None = None,
                      run_key: str | None = None) -> dict[str, Any]:
    """Run (or resume) notification type ``type_code`` for the period ``run_key`` (default:
    the current period of the type); return the run's summary.

    Raises :class:`RunAlreadyDoneError` when that period's run already finished. A real run
    holds the type's run lock from start to end: a second process waits for it."""
    if run_key is not None and not (0 < len(run_key.strip()) <= MAX_KEY):
        raise CommsError(f"a run key is 1 to {MAX_KEY} characters")
    ctx = _context(engine, type_code, today)
    key = (run_key.strip() if run_key else
           current_key(ctx.type.cron, settings.scheduler.timezone, today))
    explicit = run_key is not None
    if dry_run:
        return _run(settings, engine, ctx, type_code, True, progress, batch_size, on_batch,
                    key, explicit)
    lock = NamedLock(engine, settings.var_dir, "notifications", type_code)
    lock.acquire(on_wait=lambda: log.info("notification_run.waiting", type=type_code,
                                          why="another run of the type holds its lock"))
    try:
        return _run(settings, engine, ctx, type_code, False, progress, batch_size, on_batch,
                    key, explicit)
    finally:
        lock.release()


def _run(settings: Settings, engine: Engine, ctx: nb.RunContext, type_code: str,
         dry_run: bool, progress: bool, batch_size: int | None,
         on_batch: Callable[[int], None] | None, key: str, explicit: bool) -> dict[str, Any]:
    ns = settings.notifications
    query = pop.base_query(ctx.type)
    url = settings.database_url if pop.reads_comms_database(ctx.type) else business_url(settings)
    state = _open_run(engine, ctx.type.id, type_code, dry_run, key, explicit)
    started = time.monotonic()
    seen = 0
    dry = Counter({c: 0 for c in COUNTERS})
    dry_reasons: Counter[str] = Counter()
    try:
        total = _total(url, query, state.after) if progress else None
        bar: AbstractContextManager[Any] = (
            click.progressbar(length=total, label=f"{type_code}", file=sys.stderr,
                              show_pos=True, show_eta=True) if progress else nullcontext())

        batches = _decided(ctx, query, state.after, batch_size or ns.batch_size,
                           ns.stream_chunk, url, settings.database_url)
        with closing(batches), bar as shown, progress_line(sys.stderr, shown):
            for n, (last_key, count, decisions) in enumerate(batches, start=1):
                if dry_run:
                    dry.update(decisions.counts())
                    dry_reasons.update(s.code for s in decisions.skipped)
                else:
                    with engine.begin() as conn:
                        _write(conn, ctx, state, decisions, last_key, ns.priority)
                seen += count
                if shown is not None:
                    shown.update(count)
                if on_batch is not None:
                    on_batch(n)
    except RunConflictError:
        raise  # the run belongs to the other process now: leave it as it is
    except BaseException as exc:
        _finish(engine, state, INTERRUPTED, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        log.warning("notification_run.interrupted", run_id=state.run_id, type=type_code,
                    error=type(exc).__name__)
        raise
    elapsed = time.monotonic() - started
    counters = dict(dry) if dry_run else state.counters
    summary = dict(state.summary, type=type_code, dry_run=dry_run, seen_this_time=seen,
                   elapsed_seconds=round(elapsed, 3), **counters)
    if dry_run:
        summary["skip_reasons"] = dict(dry_reasons)
    summary.pop("error", None)
    state.summary = summary
    _finish(engine, state, FINISHED, {})
    log.info("notification_run.finished", run_id=state.run_id, type=type_code,
             dry_run=dry_run, seen=seen, **counters)
    return dict(summary, run_id=state.run_id, run_key=state.run_key)
