"""The loop shared by every daemon and batch job: claim a batch, handle it, finish it.

A :class:`Handler` says which queue it works and what happened to each claimed row; the
:class:`Runner` does the rest: claiming with a lease, extending the lease on long batches,
heartbeats, graceful SIGTERM (rows not yet handled are released, the rest finished) and
``once`` mode (drain the backlog, then exit) for cron-style runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.signals import on_stop_signals
from comms_pipeline.core.states import ErrorCode
from comms_pipeline.queue import metrics
from comms_pipeline.queue.claims import Claimer, Outcome, WorkQueue
from comms_pipeline.queue.heartbeat import Heartbeat
from comms_pipeline.queue.ports import ClaimStore, Liveness
from comms_pipeline.queue.wake import PollWaker, Waker, make_waker
from comms_pipeline.store.outage import DbWaiter, is_db_unavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: How long a batch trusts its last "nothing better waits" (see BatchContext.outranked).
OUTRANK_PROBE_SECONDS = 0.1


class Handler(Protocol):
    """Processes claimed rows of one queue."""

    name: str
    queue: WorkQueue

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        """Return one outcome per handled row; rows left out are released."""
        ...

    def close(self) -> None: ...


class PersistingHandler(Handler, Protocol):
    """A handler whose outcomes carry products (``Outcome.payload``) to write atomically."""

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Write the products of ``outcomes`` (rows still held) in the finishing transaction."""
        ...


Persist = Callable[["Connection", list[Outcome]], None]


class BatchContext:
    """What a handler may ask of the runner while it works through a batch.

    A worker frozen past its lease (SIGSTOP, a paused VM, a partitioned host) wakes up holding
    a batch another copy has taken over. ``lost`` says so as soon as the lease keeper or a
    send boundary (:meth:`still_ours`) learns it from the database, and ``stopping`` is then
    true: a handler stops sending at its next chunk or message boundary, and the runner
    finishes only the rows still held (compare-and-set), so nothing that is no longer ours is
    released or reported done. ``claims.lease_lost`` is logged once per batch.
    """

    def __init__(self, runner: Runner, rows: Sequence[Row]) -> None:
        self._runner = runner
        #: The rows held and not yet finished, by id (a batch may grow: :meth:`claim_more`).
        self.rows: dict[int, Row] = {r.id: r for r in rows}
        self._ids = list(self.rows)
        self._extended = time.monotonic()  # when the lease was last set (claim or extension)
        self._lock = threading.Lock()
        #: Batches claimed into this one while it was in flight, and rows claimed in all.
        self.more_claims = 0
        self.claimed = len(self.rows)
        #: Rows of this batch the database says another worker holds now.
        self.lost_ids: set[int] = set()
        #: The lease ran out while the database could not be asked: assume it is lost.
        self.unconfirmed = False
        self._probed: float | None = None  # when outranked() last asked, and for what
        self._probed_priority = 0

    @property
    def batch_size(self) -> int:
        """Rows the runner claims at a time (what a handler finishes at a time, too)."""
        return self._runner.batch_size

    @property
    def lost(self) -> bool:
        """The claim on (part of) this batch is gone, or can no longer be vouched for."""
        return bool(self.lost_ids) or self.unconfirmed

    @property
    def stopping(self) -> bool:
        """Stop sending: a shutdown was asked for, or the batch is no longer ours."""
        return self._runner.stop_event.is_set() or self.lost

    def keep_alive(self) -> bool:
        """Extend the batch's lease when a third of it has passed (long batches); cheap
        otherwise. Returns whether the batch is still ours as far as is known."""
        lease = self._runner.settings.claims.lease_seconds
        if time.monotonic() - self._extended > lease / 3:
            self._ask(extend=True)
        self._beat()
        return not self.lost

    def still_ours(self, ids: Sequence[int] | None = None) -> bool:
        """Ask the database whether the rows of the batch are still held (one read), before
        the next chunk goes out: ``ids``, those of that chunk (a batch that grew while in
        flight is not read in full at every chunk), else all. Extends the whole batch's
        lease too when that is due."""
        lease = self._runner.settings.claims.lease_seconds
        self._ask(extend=time.monotonic() - self._extended > lease / 3, only=ids)
        return not self.lost

    def claim_more(self) -> list[Row]:
        """Claim the next batch into this one while it is in flight, so that a gateway with a
        window (SMPP) keeps it full across batches instead of draining it at every batch and
        its commit. At most ``daemons.prefetch_batches`` times per batch, never once the batch
        is stopping; the new rows are held, kept alive and finished with the rest. Returns
        the rows claimed (none when nothing waits)."""
        runner = self._runner
        if self.stopping or self.more_claims >= runner.settings.daemons.prefetch_batches:
            return []
        self.more_claims += 1
        rows = runner.claimer.claim(runner.handler.queue, runner.batch_size)
        with self._lock:
            for row in rows:
                self.rows[row.id] = row
            self._ids = list(self.rows)
            self.claimed += len(rows)
        return list(rows)

    def finish(self, outcomes: Sequence[Outcome]) -> None:
        """Finish these rows now (commit), while the rest of the batch is still in flight:
        what was sent is recorded without waiting for the last answer of the window."""
        with self._lock:  # no longer kept alive: finished rows are no one's to extend
            rows = [self.rows.pop(o.id) for o in outcomes if o.id in self.rows]
            self._ids = list(self.rows)
        done = {r.id for r in rows}
        outcomes = [o for o in outcomes if o.id in done]
        if outcomes:
            self._runner._finish_part(rows, outcomes, self)

    def outranked(self, priority: int) -> bool:
        """Whether work of a better priority than ``priority`` waits in this queue (a probe
        of the index; False when the claim store cannot tell): a handler at a chunk boundary
        stops there, and the rows it did not handle go back for the next claim.

        The first boundary of a batch always probes; after that a "no" stands for
        ``OUTRANK_PROBE_SECONDS`` (a probe per 20-message chunk cost a tenth of the email
        daemon's time; a better priority waits at most that much longer)."""
        probe = getattr(self._runner.claimer, "outranked", None)
        if not probe:
            return False
        now = time.monotonic()
        if self._probed is not None and now - self._probed < OUTRANK_PROBE_SECONDS \
                and priority <= self._probed_priority:
            return False  # nothing better than the last probe's priority, so than this one
        better = bool(probe(self._runner.handler.queue, priority))
        if not better:  # only a "no" stands: a "yes" is asked again, never assumed away
            self._probed, self._probed_priority = now, priority
        return better

    def _ask(self, *, extend: bool, only: Sequence[int] | None = None) -> None:
        runner = self._runner
        queue = runner.handler.queue
        with self._lock:
            if self.lost:
                return
            asked = time.monotonic()
            asking = self._ids if extend or only is None else \
                [i for i in only if i in self.rows]
            try:
                if extend:
                    held = runner.claimer.extend(queue, self._ids)
                else:
                    held = runner.claimer.held(queue, asking)
            except Exception as exc:
                if not is_db_unavailable(exc):
                    raise
                # The database is away: go on only while the last lease surely holds.
                if time.monotonic() - self._extended >= runner.settings.claims.lease_seconds:
                    self.unconfirmed = True
                    log.warning("claims.lease_unconfirmed", kind=queue.kind,
                                worker=runner.heartbeat.instance, count=len(self._ids))
                return
            if extend:
                self._extended = asked
            lost = set(asking) - set(held)
            if lost:
                self.lost_ids = lost
                log.warning("claims.lease_lost", kind=queue.kind,
                            worker=runner.heartbeat.instance, ids=sorted(lost)[:20],
                            count=len(lost))

    def _beat(self) -> None:
        try:
            self._runner.heartbeat.beat()
        except Exception as exc:
            if not is_db_unavailable(exc):
                raise


class LeaseKeeper:
    """Extends a batch's lease (and beats the heartbeat) from a side thread while the handler
    works, so that a slow gateway call (SMPP throttling, a slow webhook) cannot let another
    copy take over a batch that is being sent. It gives up after ``MAX_LEASES`` leases: a
    handler stuck for that long loses its claim to the next worker, as a dead one would."""

    MAX_LEASES = 10

    def __init__(self, ctx: BatchContext, lease_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.interval = lease_seconds / 3
        self._clock = clock
        self.deadline = clock() + lease_seconds * self.MAX_LEASES
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval) and self._clock() < self.deadline:
            try:
                if self.ctx.keep_alive() is False:
                    break  # the batch is no longer ours: nothing left to keep
            except Exception:  # the database is away: the finish will say whether we held on
                log.warning("worker.keep_alive_failed", exc_info=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


class Runner:
    """Works one handler's queue: claim a batch, handle it under a lease, finish it.

    ``claims`` and ``heartbeat`` default to the database adapters on ``engine``; the
    in-memory twins of :mod:`comms_pipeline.testing` stand in for them in unit tests.

    With nothing to claim, a worker that is not ``once`` waits on its ``waker`` (see
    :mod:`~comms_pipeline.queue.wake`): with ``listen``, on PostgreSQL, until its queue's
    channel is notified or ``daemons.poll_interval`` passes; else for the poll interval.
    """

    def __init__(self, settings: Settings, engine: Engine | None, handler: Handler, *,
                 batch_size: int | None = None, once: bool = False,
                 on_progress: Callable[[int], None] | None = None,
                 claims: ClaimStore | None = None, heartbeat: Liveness | None = None,
                 waker: Waker | None = None, listen: bool = False) -> None:
        self.settings = settings
        self.engine = engine
        self.handler = handler
        self.batch_size = batch_size or settings.daemons.batch_size
        self.once = once
        self.on_progress = on_progress
        if (claims is None or heartbeat is None) and engine is None:
            raise ValueError("a Runner needs an engine, or both a claim store and a heartbeat")
        # The pidfiles' folder (supervise.run_dir), where "waiting for the database" shows.
        self.heartbeat: Liveness = heartbeat or Heartbeat(
            engine, handler.name, settings.daemons.heartbeat_seconds,  # type: ignore[arg-type]
            settings.var_dir / "run")
        self.claimer: ClaimStore = claims or Claimer(
            engine, self.heartbeat.instance, settings.claims)  # type: ignore[arg-type]
        self.stop_event = threading.Event()
        #: What an idle worker waits on; listening starts here, before the first claim, so
        #: that work arriving between an empty claim and the wait is not missed.
        self.waker: Waker = waker or (
            make_waker(engine, [handler.queue.channel], self.stop_event,
                       listen=settings.daemons.listen)
            if listen and not once else PollWaker(self.stop_event))
        limit = (settings.database.outage_wait_once_seconds if once
                 else settings.database.outage_wait_seconds)
        #: Paces the retries while the database is away; gives up after the limit.
        self.db_wait = DbWaiter(self.heartbeat.instance, limit_seconds=limit or None,
                                on_wait=self.heartbeat.waiting, stop=self.stop_event)
        #: Rows finished (sent, merged, rejected…); rows deferred for a retry are counted apart.
        self.processed = 0
        self.retried = 0
        self.refused = 0
        #: Batches whose handler raised: their rows were retried (or failed) with the error.
        self.failed_batches = 0
        #: Rows handled, by what became of them (a state, "retry", "gave_up").
        self.outcomes: dict[str, int] = {}

    def stop(self) -> None:
        """Stop after the current batch (safe from a signal handler)."""
        self.stop_event.set()
        self.waker.interrupt()

    def install_signal_handlers(self) -> None:
        def _stop(signum: int) -> None:
            log.info("worker.stopping", worker=self.heartbeat.instance, signal=signum)
            self.stop()

        # Not in the main thread (a job run by the scheduler's thread pool): the scheduler
        # stops it. The stop runs off the handler (core.signals: an Event set from a handler
        # can deadlock the thread it interrupted).
        on_stop_signals(_stop)

    def run(self) -> int:
        """Work until stopped (or, with ``once``, until nothing is left); return the rows
        worked on: finished (``processed``) or deferred for a retry (``retried``).

        A database that goes away (a restart, a failover, a blip) is waited for, with
        backoff, for ``database.outage_wait_seconds`` (``outage_wait_once_seconds`` with
        ``once``; :class:`DatabaseUnavailable` past it): nothing is claimed meanwhile, and
        work resumes where the claims say once it answers again.
        """
        log.info("worker.started", worker=self.heartbeat.instance, once=self.once)
        self.heartbeat.beat(force=True)
        try:
            while not self.stop_event.is_set():
                try:
                    claimed = self.run_batch()
                except Exception as exc:
                    if not is_db_unavailable(exc):
                        raise
                    self.db_wait.failed(exc)
                    continue
                self.db_wait.recovered()
                if not claimed:
                    if self.once:
                        break
                    self._idle()
                self.heartbeat.beat()
        finally:
            self.heartbeat.waiting(False)
            self.waker.close()
            self.handler.close()
            self.heartbeat.processed = self.processed
            self.heartbeat.stopped()
            log.info("worker.stopped", worker=self.heartbeat.instance,
                     processed=self.processed, refused=self.refused)
        return self.processed + self.retried

    def _idle(self) -> None:
        """Wait for new work: a hint from the waker, else the poll interval; the heartbeat
        stays fresh meanwhile, however long the fallback interval."""
        deadline = time.monotonic() + self.settings.daemons.poll_interval
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.waker.wait(min(left, self.settings.daemons.heartbeat_seconds)):
                return
            self.heartbeat.beat()

    def _after_failure(self, rows: Sequence[Row], ctx: BatchContext,
                       exc: Exception) -> list[Outcome]:
        """A handler raised. A handler without side effects (``isolates_failures``: the
        merge jobs) is run again row by row, so that only the rows that fail again fail;
        a daemon's batch may have been partly sent, so it is not run again: every row is
        retried later, and fails for good after ``claims.max_attempts``. Either way the
        error is on the row (code INTERNAL_ERROR), not only in a log."""
        self.failed_batches += 1
        log.error("worker.batch_failed", worker=self.heartbeat.instance, rows=len(rows),
                  error=type(exc).__name__, ids=[r.id for r in rows][:20])
        if len(rows) == 1 or not getattr(self.handler, "isolates_failures", False):
            return [_failed(r.id, exc) for r in rows]
        outcomes: list[Outcome] = []
        for row in rows:
            try:
                outcomes.extend(self.handler.handle([row], ctx))
            except Exception as again:  # invalid text can never succeed: no retries
                outcomes.append(self._unstorable(row.id, again) if isinstance(again, UnicodeError)
                                else _failed(row.id, again))
        return outcomes

    def _finish_one_by_one(self, outcomes: Sequence[Outcome], persist: Persist | None,
                           exc: Exception) -> tuple[set[int], list[Outcome]]:
        """The batch's finishing transaction failed (a value the database refuses, such as
        invalid Unicode in a request a workflow wrote by SQL). Finish each row alone, so
        that only the rows that fail again fail: with ``INVALID_REQUEST`` and the reason,
        in the queue's failed state (a daemon's row is retried instead: it may be sent)."""
        self.failed_batches += 1
        log.error("worker.finish_failed", worker=self.heartbeat.instance, rows=len(outcomes),
                  error=type(exc).__name__)
        queue = self.handler.queue
        refused: set[int] = set()
        final: list[Outcome] = []
        for outcome in outcomes:
            try:
                refused |= self.claimer.finish(queue, [outcome], persist=persist)
                final.append(outcome)
                continue
            except Exception as again:
                if _transient(again):
                    raise
                failed = self._unstorable(outcome.id, again)
                log.warning("worker.row_unstorable", worker=self.heartbeat.instance,
                            row_id=outcome.id, error=type(again).__name__)
            refused |= self.claimer.finish(queue, [failed])
            final.append(failed)
        return refused, final

    def _unstorable(self, row_id: int, exc: Exception) -> Outcome:
        reason = f"the result could not be stored: {storage_problem(exc)}"
        failed_state = self.handler.queue.failed_state
        if failed_state and getattr(self.handler, "isolates_failures", False):
            return Outcome.done(row_id, failed_state, ErrorCode.INVALID_REQUEST, reason)
        return Outcome.retry(row_id, ErrorCode.INTERNAL_ERROR, reason)

    def _finish(self, outcomes: list[Outcome], ctx: BatchContext) -> set[int]:
        """Finish the batch, waiting for the database if it is away: the rows still held
        when it answers are finished (compare-and-set), the others belong to whoever took
        them over. Nothing counts as done before its commit. If the wait runs out
        (:class:`DatabaseUnavailable`), the batch is left to lease takeover."""
        persist = getattr(self.handler, "persist", None)
        while True:
            try:
                # A loss already reported (claims.lease_lost, once per batch) is not again.
                known = ctx.lost_ids | {o.id for o in outcomes} if ctx.lost else ctx.lost_ids
                refused = self.claimer.finish(self.handler.queue, outcomes, persist=persist,
                                              known_lost=known)
            except Exception as exc:
                if not is_db_unavailable(exc):
                    raise
                self.db_wait.failed(exc)
                if self.stop_event.is_set():
                    raise  # stopping: the lease hands the batch over
                continue
            self.db_wait.recovered()
            return refused

    def run_batch(self) -> int:
        """Claim and handle one batch; return how many rows were claimed (with the batches a
        handler claimed into it while it was in flight)."""
        queue = self.handler.queue
        stage = self.handler.name
        with metrics.timed(metrics.CLAIM_SECONDS, stage):
            rows = self.claimer.claim(queue, self.batch_size)
        if not rows:
            return 0
        started = time.perf_counter()
        ctx = BatchContext(self, rows)
        try:
            with LeaseKeeper(ctx, self.settings.claims.lease_seconds):
                try:
                    outcomes = self.handler.handle(rows, ctx)
                except Exception as exc:
                    if is_db_unavailable(exc):
                        # Not the rows' fault: what was done is kept, the rest given back
                        # (or left to the lease) once the database is back.
                        log.warning("worker.batch_interrupted", worker=self.heartbeat.instance,
                                    rows=len(ctx.rows), error=type(exc).__name__)
                        outcomes = []
                    else:  # bad data or a bug: explained on the rows
                        outcomes = self._after_failure(list(ctx.rows.values()), ctx, exc)
        except BaseException:
            # Give the batch back at once rather than waiting for the lease to pass.
            with contextlib.suppress(Exception):  # the database may be away: the lease ends it
                self.claimer.finish(queue, [Outcome.release(i) for i in ctx.rows])
            raise
        claimed = ctx.claimed
        rows = list(ctx.rows.values())  # what is still held: finished below
        held = set(ctx.rows)
        outcomes = [o for o in outcomes if o.id in held]
        handled = {o.id for o in outcomes}
        outcomes = outcomes + [Outcome.release(r.id) for r in rows if r.id not in handled]
        persist = getattr(self.handler, "persist", None)
        try:
            refused = self._finish(outcomes, ctx)
        except Exception as exc:  # a row's products cannot be stored: one by one, as above
            if _transient(exc) or is_db_unavailable(exc):
                raise
            with LeaseKeeper(ctx, self.settings.claims.lease_seconds):
                refused, outcomes = self._finish_one_by_one(outcomes, persist, exc)
        metrics.BATCH_SECONDS.labels(stage).observe(time.perf_counter() - started)
        self._count(rows, outcomes, refused)
        return claimed

    def _finish_part(self, rows: Sequence[Row], outcomes: Sequence[Outcome],
                     ctx: BatchContext) -> None:
        """Finish part of a batch in flight (:meth:`BatchContext.finish`)."""
        refused = self._finish(list(outcomes), ctx)
        self._count(rows, outcomes, refused)

    def _count(self, rows: Sequence[Row], outcomes: Sequence[Outcome],
               refused: set[int]) -> None:
        stage = self.handler.name
        self.refused += len(refused)
        for outcome, count in metrics.record_outcomes(
                stage, rows, outcomes, refused, self.settings.claims.max_attempts).items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        done = sum(1 for o in outcomes if o.action == "done")
        self.retried += sum(1 for o in outcomes if o.action == "retry")
        self.processed += done
        self.heartbeat.processed = self.processed
        if self.on_progress:
            self.on_progress(done)


def _transient(exc: BaseException) -> bool:
    """A lost or busy database, not a value it refuses: the batch is tried again later."""
    from sqlalchemy import exc as sa

    return isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError,
                            sa.TimeoutError)) or bool(getattr(exc, "connection_invalidated",
                                                              False))


def storage_problem(exc: BaseException) -> str:
    """What made the database refuse a row, in the product's words (never Python's)."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, CommsError):  # our own refusal (e.g. a move the machine forbids)
        return str(cause)
    text = str(cause)
    if isinstance(cause, UnicodeError) or "surrogate" in text:
        return "a value is not valid Unicode text (it holds an unpaired surrogate)"
    if "NUL" in text or "\\x00" in text or "0x00" in text:
        return "a value contains a NUL character, which text may not hold"
    if isinstance(cause, (OverflowError,)) or "out of range" in text:
        return "a number is out of the range the database can store"
    return "a value is not acceptable to the database"


def _failed(row_id: int, exc: Exception) -> Outcome:
    return Outcome.retry(row_id, ErrorCode.INTERNAL_ERROR,
                         f"{type(exc).__name__}: {exc}"[:500])
