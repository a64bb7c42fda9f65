"""Batch jobs: each drains its backlog with the shared claim mechanism, then exits.

``comms job run NAME`` builds a job from this registry (modules imported lazily) and runs it
with :class:`comms_pipeline.queue.runner.Runner` in ``once`` mode.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from comms_pipeline.core.errors import CommsError, UnknownNameError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.queue.runner import Handler
    from comms_pipeline.settings.config import Settings

JOBS: dict[str, str] = {
    "monitor": "comms_pipeline.jobs.monitor:MonitorJob",
    "email-monitor": "comms_pipeline.jobs.email_monitor:EmailMonitorJob",
    "letter-monitor": "comms_pipeline.jobs.letter_monitor:LetterMonitorJob",
    "expiry-sweep": "comms_pipeline.jobs.expiry:ExpirySweepJob",
}


def build_job(name: str, settings: Settings, engine: Engine) -> Handler:
    try:
        target = JOBS[name]
    except KeyError:
        raise UnknownNameError(
            f"no job named {name!r}; known: {', '.join(sorted(JOBS))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)(settings, engine)


def run_job(name: str, settings: Settings, engine: Engine, *, batch_size: int | None = None,
            progress: bool = False) -> int:
    """Drain job ``name``'s backlog once; return the number of rows handled."""
    import sys

    import click

    from comms_pipeline.queue.claims import backlog
    from comms_pipeline.queue.runner import Runner

    handler = build_job(name, settings, engine)
    size = batch_size or (settings.monitor.batch_size if name == "monitor"
                          else settings.daemons.batch_size)
    if not progress:
        runner = Runner(settings, engine, handler, batch_size=size, once=True)
        runner.install_signal_handlers()
        return _checked(name, runner, runner.run())
    with engine.connect() as conn:
        total = backlog(conn, handler.queue)
    with click.progressbar(length=total, label=name, file=sys.stderr,
                           show_pos=True, show_percent=True, show_eta=True) as bar:
        runner = Runner(settings, engine, handler, batch_size=size, once=True,
                        on_progress=bar.update)
        runner.install_signal_handlers()
        handled = runner.run()
    return _checked(name, runner, handled)


class JobFailed(CommsError):
    """A batch of the job failed: its rows carry the error and are retried, or failed."""


def _checked(name: str, runner: Any, handled: int) -> int:
    """The rows handled; a job that had failing batches ends with an error (exit code 1)."""
    if runner.failed_batches:
        raise JobFailed(f"{name}: {runner.failed_batches} batch(es) failed; their entries "
                        f"carry the error (INTERNAL_ERROR) and are retried, then failed after "
                        f"claims.max_attempts ({handled} handled)")
    return handled


def run_job_workers(name: str, settings: Settings, engine: Engine, workers: int, *,
                    argv_prefix: list[str], batch_size: int | None = None,
                    progress: bool = False) -> int:
    """Drain job ``name`` with ``workers`` processes claiming side by side; return the
    number of rows handled, or raise if a worker failed.

    The claim mechanism makes the copies safe: each claims its own batches. The progress bar
    follows the shared backlog.
    """
    import re
    import subprocess
    import sys
    import time

    import click

    from comms_pipeline.core.errors import CommsError
    from comms_pipeline.queue.claims import backlog

    queue = build_job(name, settings, engine).queue
    with engine.connect() as conn:
        total = backlog(conn, queue)
    cmd = [*argv_prefix, "job", "run", name, "--workers", "1", "--no-progress"]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    with click.progressbar(length=total, label=f"{name} x{workers}", file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        shown = 0
        while any(p.poll() is None for p in procs):
            time.sleep(0.5)
            if progress:
                with engine.connect() as conn:
                    finished = total - backlog(conn, queue)
                if finished > shown:
                    bar.update(finished - shown)
                    shown = finished
    outputs = [p.stdout.read() if p.stdout else "" for p in procs]
    handled = sum(int(m.group(1)) for out in outputs
                  for m in [re.search(r"(\d+) handled", out)] if m)
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        raise CommsError(f"{len(failed)} of {workers} {name} workers failed "
                         f"(exit codes {failed}); see their logs above")
    return handled
