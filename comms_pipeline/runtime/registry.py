"""One registry of the pipeline's stages: every batch job and delivery daemon, by name.

A stage's class is imported only when it is built, so a daemon's optional libraries (smpplib,
paramiko, WeasyPrint…) are needed only where it runs. Jobs and daemons differ in nothing but
their default batch size and how they are usually run (a job drains its backlog for cron;
a daemon polls until stopped); both are run by :func:`comms_pipeline.runtime.run.run_stage`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from comms_pipeline.core.errors import UnknownNameError
from comms_pipeline.core.stages import DAEMON_NAMES, JOB_NAMES

if TYPE_CHECKING:
    import threading

    from sqlalchemy.engine import Engine

    from comms_pipeline.queue.runner import Handler
    from comms_pipeline.settings.config import Settings


class Listener(Protocol):
    """A daemon that serves a port instead of claiming rows (the bounce receiver)."""

    name: str

    def serve(self, stop: threading.Event, once: bool = False) -> int:
        """Serve until ``stop`` is set; what it received."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Stage:
    name: str
    kind: Literal["job", "daemon"]
    #: ``module:Class`` of the handler; the class takes ``(settings, engine)``.
    target: str
    #: A listener (:class:`Listener`): it serves a port and claims no rows.
    listens: bool = False

    def build(self, settings: Settings, engine: Engine) -> Handler:
        module, _, attr = self.target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), attr)(settings, engine)
        return handler

    def build_listener(self, settings: Settings, engine: Engine) -> Listener:
        module, _, attr = self.target.partition(":")
        listener: Listener = getattr(importlib.import_module(module), attr)(settings, engine)
        return listener

    def batch_size(self, settings: Settings) -> int:
        """Rows claimed per transaction: the monitor's own setting, else the daemons'."""
        return settings.monitor.batch_size if self.name == "monitor" \
            else settings.daemons.batch_size


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("monitor", "job", "comms_pipeline.jobs.monitor:MonitorJob"),
    Stage("email-monitor", "job", "comms_pipeline.jobs.email_monitor:EmailMonitorJob"),
    Stage("letter-monitor", "job", "comms_pipeline.jobs.letter_monitor:LetterMonitorJob"),
    Stage("expiry-sweep", "job", "comms_pipeline.jobs.expiry:ExpirySweepJob"),
    Stage("retention-sweep", "job", "comms_pipeline.jobs.retention:RetentionSweepJob"),
    Stage("sms", "daemon", "comms_pipeline.daemons.sms:SmsDaemon"),
    Stage("email", "daemon", "comms_pipeline.daemons.email:EmailDaemon"),
    Stage("letter", "daemon", "comms_pipeline.daemons.letter:LetterDaemon"),
    Stage("storage", "daemon", "comms_pipeline.daemons.storage:StorageDaemon"),
    Stage("push-handset", "daemon", "comms_pipeline.daemons.push_handset:PushHandsetDaemon"),
    Stage("push-external", "daemon", "comms_pipeline.daemons.push_external:PushExternalDaemon"),
    Stage("bounces", "daemon", "comms_pipeline.daemons.bounces:BounceDaemon", listens=True),
    Stage("callbacks", "daemon", "comms_pipeline.daemons.callbacks:CallbacksDaemon"),
)}
JOBS = {n: s for n, s in STAGES.items() if s.kind == "job"}
DAEMONS = {n: s for n, s in STAGES.items() if s.kind == "daemon"}
assert tuple(JOBS) == JOB_NAMES and tuple(DAEMONS) == DAEMON_NAMES


def stage(name: str, kind: str | None = None) -> Stage:
    """The stage called ``name`` (of ``kind``, when given); a clear error when unknown."""
    found = STAGES.get(name)
    if found is None or (kind is not None and found.kind != kind):
        known = sorted(n for n, s in STAGES.items() if kind is None or s.kind == kind)
        raise UnknownNameError(f"no {kind or 'stage'} named {name!r}; known: {', '.join(known)}")
    return found


def build_job(name: str, settings: Settings, engine: Engine) -> Handler:
    return stage(name, "job").build(settings, engine)


def build_daemon(name: str, settings: Settings, engine: Engine) -> Handler:
    return stage(name, "daemon").build(settings, engine)
