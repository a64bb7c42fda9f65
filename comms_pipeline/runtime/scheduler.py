"""The built-in scheduler: runs the batch jobs on the cron expressions of the configuration.

Each job runs in this process, one at a time per job (``max_instances=1``); a run that was
missed while the previous one was still going is coalesced into one.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from comms_pipeline.notifications.schedule import add_notification_jobs, add_refresh_job
from comms_pipeline.runtime.registry import JOBS
from comms_pipeline.runtime.run import run_job

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)


def _run(name: str, settings: Settings, engine: Engine) -> None:
    try:
        handled = run_job(name, settings, engine)
        log.info("scheduler.job_done", job=name, handled=handled)
    except Exception:
        log.exception("scheduler.job_failed", job=name)


def build_scheduler(settings: Settings, engine: Engine) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone=settings.scheduler.timezone)
    for name, expr in settings.scheduler.jobs.items():
        if not expr:
            continue
        if name not in JOBS:
            raise ValueError(f"scheduler.jobs: no job named {name!r}")
        trigger = CronTrigger.from_crontab(expr, timezone=settings.scheduler.timezone)
        scheduler.add_job(_run, trigger,
                          args=(name, settings, engine), id=name, name=name, max_instances=1,
                          coalesce=True, misfire_grace_time=60)
    add_notification_jobs(scheduler, settings, engine)
    add_refresh_job(scheduler, settings, engine)
    return scheduler


def run_scheduler(settings: Settings, engine: Engine) -> None:
    scheduler = build_scheduler(settings, engine)

    def _stop(signum: int, _frame: object) -> None:
        log.info("scheduler.stopping", signal=signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for job in scheduler.get_jobs():
        log.info("scheduler.job_scheduled", job=job.id, trigger=str(job.trigger))
    scheduler.start()
