"""One way to run a stage: once (drain the backlog and exit, for cron) or as a daemon (poll
until SIGTERM), in this process or in N processes claiming side by side.

The CLI and the scheduler call :func:`run_stage`; it returns a :class:`RunReport`, and the
same rule turns every report into an exit code: a run with failed batches exits 1
(its rows carry the error and are retried), whether the stage is a job or a daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from comms_pipeline.core.errors import CommsError
from comms_pipeline.queue.claims import backlog
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import stage

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings


class JobFailed(CommsError):
    """A batch of the stage failed: its rows carry the error and are retried, or failed."""


@dataclass
class RunReport:
    """What one run of a stage did (summed over its processes)."""

    name: str
    #: Rows finished (sent, merged, rejected, expired…): everything but rows given back.
    handled: int = 0
    #: Rows deferred for another attempt later (a transient failure).
    retried: int = 0
    #: Rows whose completion was refused because another worker had taken them over.
    refused: int = 0
    #: Batches whose handler raised: their rows carry the error (INTERNAL_ERROR).
    failed_batches: int = 0
    processes: int = 1
    #: What became of the rows: sent, to retry later, rejected… (see the metrics' outcomes).
    outcomes: dict[str, int] = field(default_factory=dict)
    #: The run ended because it was asked to stop (SIGTERM, SIGINT), not because it was done.
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed_batches == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def problem(self) -> str | None:
        """A one-line explanation when the run did not go well."""
        if self.ok:
            return None
        return (f"{self.name}: {self.failed_batches} batch(es) failed; their entries carry the "
                f"error (INTERNAL_ERROR) and are retried, then failed after "
                f"claims.max_attempts ({self.handled} handled)")

    def checked(self) -> RunReport:
        """This report, or :class:`JobFailed` when a batch failed."""
        problem = self.problem()
        if problem:
            raise JobFailed(problem)
        return self

    def add(self, other: RunReport) -> None:
        self.handled += other.handled
        self.retried += other.retried
        self.refused += other.refused
        self.failed_batches += other.failed_batches
        for name, count in other.outcomes.items():
            self.outcomes[name] = self.outcomes.get(name, 0) + count


def stage_backlog(name: str, settings: Settings, engine: Engine) -> int:
    """Rows waiting for stage ``name`` (what a progress bar counts down)."""
    if stage(name).listens:
        return 0  # a listener has no backlog: what it takes comes over the network
    handler = stage(name).build(settings, engine)
    try:
        with engine.connect() as conn:
            return backlog(conn, handler.queue)
    finally:
        handler.close()


def run_stage(name: str, settings: Settings, engine: Engine, *, once: bool = True,
              batch_size: int | None = None,
              on_progress: Callable[[int], None] | None = None,
              signals: bool = True) -> RunReport:
    """Run stage ``name`` in this process until its backlog is done (``once``) or SIGTERM.

    Not ``once`` (a daemon, or a job run with ``--follow``), the worker drains its backlog and
    then waits for new work: woken by its queue's notifications on PostgreSQL (``[daemons]
    listen``), else every ``poll_interval``."""
    found = stage(name)
    if found.listens:
        return _listen(name, settings, engine, once=once, signals=signals)
    handler = found.build(settings, engine)
    runner = Runner(settings, engine, handler, batch_size=batch_size or found.batch_size(settings),
                    once=once, on_progress=on_progress, listen=not once)
    if signals:
        runner.install_signal_handlers()
    if not once:  # a worker that stays: its start-up heap is not walked by every collection
        from comms_pipeline.runtime.heap import settle

        settle()
    runner.run()
    return RunReport(name, handled=runner.processed, retried=runner.retried,
                     refused=runner.refused, failed_batches=runner.failed_batches,
                     outcomes=dict(runner.outcomes), interrupted=runner.stop_event.is_set())


def _listen(name: str, settings: Settings, engine: Engine, *, once: bool,
            signals: bool) -> RunReport:
    """Run a listener (the bounce receiver) until SIGTERM; ``once``: bind and return."""
    import threading

    from comms_pipeline.core.signals import on_stop_signals

    listener = stage(name).build_listener(settings, engine)
    stop = threading.Event()
    if signals:
        on_stop_signals(lambda _signum: stop.set())
    try:
        received = listener.serve(stop, once=once)
    finally:
        listener.close()
    return RunReport(name, handled=received, outcomes={"received": received} if received else {})


def run_job(name: str, settings: Settings, engine: Engine, *, batch_size: int | None = None,
            on_progress: Callable[[int], None] | None = None) -> int:
    """Drain job ``name``'s backlog once; the rows handled, or :class:`JobFailed`."""
    return run_stage(name, settings, engine, once=True, batch_size=batch_size,
                     on_progress=on_progress).checked().handled


def _run_in_child(name: str, settings: Settings, batch_size: int | None) -> dict:
    from comms_pipeline.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        return asdict(run_stage(name, settings, engine, once=True, batch_size=batch_size))
    finally:
        engine.dispose()


def run_stage_workers(name: str, settings: Settings, engine: Engine, workers: int, *,
                      batch_size: int | None = None,
                      on_progress: Callable[[int], None] | None = None) -> RunReport:
    """Drain stage ``name`` with ``workers`` processes claiming side by side.

    The claim mechanism makes the copies safe: each claims its own batches. ``on_progress``
    is told how many rows the shared backlog went down by, every half second.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    total = stage_backlog(name, settings, engine)
    report = RunReport(name, processes=workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_run_in_child, name, settings, batch_size)
                   for _ in range(workers)]
        shown = 0
        while not all(f.done() for f in futures):
            time.sleep(0.5)
            if on_progress is not None:
                finished = total - stage_backlog(name, settings, engine)
                if finished > shown:
                    on_progress(finished - shown)
                    shown = finished
        for f in futures:
            try:
                child = f.result()
            except Exception as exc:  # a worker process died: its rows go to lease takeover
                raise CommsError(f"a {name} worker process failed ({type(exc).__name__}); "
                                 "its claimed rows are taken over when their lease passes") \
                    from None
            child.pop("processes", None)
            child.pop("interrupted", None)
            report.add(RunReport(**child))
    return report
