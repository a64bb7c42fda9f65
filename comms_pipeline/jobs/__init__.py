"""Batch jobs: each drains its backlog with the shared claim mechanism, then exits.

``comms job run NAME`` builds a job from this registry (modules imported lazily) and runs it
with :class:`comms_pipeline.worker.Runner` in ``once`` mode.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from comms_pipeline.errors import UnknownNameError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.config import Settings
    from comms_pipeline.worker import Handler

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

    from comms_pipeline.claims import backlog
    from comms_pipeline.worker import Runner

    handler = build_job(name, settings, engine)
    size = batch_size or (settings.monitor.batch_size if name == "monitor"
                          else settings.daemons.batch_size)
    if not progress:
        return Runner(settings, engine, handler, batch_size=size, once=True).run()
    with engine.connect() as conn:
        total = backlog(conn, handler.queue)
    with click.progressbar(length=total, label=name, file=sys.stderr,
                           show_pos=True, show_percent=True, show_eta=True) as bar:
        runner = Runner(settings, engine, handler, batch_size=size, once=True,
                        on_progress=bar.update)
        runner.install_signal_handlers()
        return runner.run()
