"""The built-in scheduler: runs the batch jobs on the cron expressions of the configuration.

Each job runs in this process, one at a time per job (``max_instances=1``); a run that was
missed while the previous one was still going is coalesced into one.

One scheduler fires at a time. ``comms scheduler run`` first takes the leader lock (see
:mod:`~comms_pipeline.store.locks`: an advisory lock held on a connection of its own on
PostgreSQL, an ``flock`` file on SQLite). A second scheduler finds it held, logs
``scheduler.standby`` and waits as a hot standby, trying the lock every
``scheduler.standby_poll_seconds``; when the leader dies — even by SIGKILL — its lock goes
with its connection (or its file descriptor) and the standby takes over within about that
long. A leader that finds its lock lost (a database restart ends the session) stops firing
and stands by again, so that two never fire together.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from comms_pipeline.core.signals import on_stop_signals
from comms_pipeline.notifications.schedule import add_notification_jobs, add_refresh_job
from comms_pipeline.runtime.registry import JOBS
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.locks import NamedLock

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)
LEADER_CHECK_JOB = "leader-check"


def _run(name: str, settings: Settings, engine: Engine) -> None:
    try:
        handled = run_job(name, settings, engine)
        log.info("scheduler.job_done", job=name, handled=handled)
    except Exception:
        log.exception("scheduler.job_failed", job=name)


def build_scheduler(settings: Settings, engine: Engine,
                    skip: frozenset[str] = frozenset()) -> BlockingScheduler:
    """The jobs of ``[scheduler.jobs]`` but those in ``skip`` (run continuously elsewhere:
    ``comms run``), the notification types that have a cron, and their refresh."""
    scheduler = BlockingScheduler(timezone=settings.scheduler.timezone)
    intervals = settings.scheduler.intervals
    for name, expr in settings.scheduler.jobs.items():
        if (not expr and name not in intervals) or name in skip:
            continue
        if name not in JOBS:
            raise ValueError(f"scheduler.jobs: no job named {name!r}")
        trigger: Any = (IntervalTrigger(seconds=intervals[name]) if name in intervals else
                        CronTrigger.from_crontab(expr, timezone=settings.scheduler.timezone))
        scheduler.add_job(_run, trigger,
                          args=(name, settings, engine), id=name, name=name, max_instances=1,
                          coalesce=True, misfire_grace_time=60)
    add_notification_jobs(scheduler, settings, engine)
    add_refresh_job(scheduler, settings, engine)

    def fired(event: Any) -> None:  # one line per fire: what ran, for which scheduled time
        for at in event.scheduled_run_times:
            log.info("scheduler.job_fired", job=event.job_id, scheduled_for=at.isoformat())

    scheduler.add_listener(fired, EVENT_JOB_SUBMITTED)
    return scheduler


def run_scheduler(settings: Settings, engine: Engine,
                  skip: frozenset[str] = frozenset()) -> None:
    """Stand by until this process holds the leader lock, then fire the jobs (but ``skip``)
    until stopped (SIGTERM, SIGINT) or until the lock is lost, and then stand by again."""
    stop = threading.Event()
    current: list[BlockingScheduler] = []
    me = f"{socket.gethostname()}:{os.getpid()}"

    def _stop(signum: int) -> None:
        log.info("scheduler.stopping", signal=signum)
        stop.set()
        for scheduler in current:
            if scheduler.running:
                scheduler.shutdown(wait=False)

    on_stop_signals(_stop)
    cfg = settings.scheduler
    lock = NamedLock(engine, settings.var_dir, "scheduler", "leader")
    while not stop.is_set():
        if not lock.acquire(poll=cfg.standby_poll_seconds, stop=stop, on_wait=lambda: log.info(
                "scheduler.standby", scheduler=me,
                why="another scheduler holds the leader lock; taking over when it stops")):
            break
        try:
            _lead(settings, engine, lock, current, stop, me, skip)
        finally:
            lock.release()
    log.info("scheduler.stopped", scheduler=me)


def _lead(settings: Settings, engine: Engine, lock: NamedLock,
          current: list[BlockingScheduler], stop: threading.Event, me: str,
          skip: frozenset[str] = frozenset()) -> None:
    scheduler = build_scheduler(settings, engine, skip)

    def check() -> None:
        if not lock.alive():
            log.error("scheduler.leader_lost", scheduler=me,
                      why="the leader lock's connection was lost; standing by again")
            if scheduler.running:
                scheduler.shutdown(wait=False)

    scheduler.add_job(check, "interval", seconds=settings.scheduler.leader_check_seconds,
                      id=LEADER_CHECK_JOB, name=LEADER_CHECK_JOB, max_instances=1,
                      coalesce=True, replace_existing=True)
    log.info("scheduler.leader", scheduler=me)
    for job in scheduler.get_jobs():
        if job.id != LEADER_CHECK_JOB:
            log.info("scheduler.job_scheduled", job=job.id, trigger=str(job.trigger))
    current[:] = [scheduler]
    if stop.is_set():
        return
    try:
        scheduler.start()
    finally:
        current.clear()
