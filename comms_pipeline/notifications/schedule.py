"""Notification types that carry a cron expression, run by ``comms scheduler run``.

:func:`add_notification_jobs` adds one APScheduler job per active type with a ``cron``
(e.g. the unsettled-subscriptions type on "0 8 1 * *", the 1st of the month at 08:00), each
running :func:`~comms_pipeline.notifications.runs.run_notifications` — which resumes an
unfinished run of the type rather than starting a second one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from comms_pipeline.store.models import types_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)
JOB_PREFIX = "notifications:"


def scheduled_types(engine: Engine) -> list[tuple[str, str]]:
    """``(code, cron)`` of every active notification type that has a cron expression."""
    with engine.connect() as conn:
        rows = conn.execute(select(types_t.c.code, types_t.c.cron)
                            .where(types_t.c.active.is_(True), types_t.c.cron.isnot(None))
                            .order_by(types_t.c.code)).all()
    return [(r.code, r.cron) for r in rows if (r.cron or "").strip()]


def run_scheduled(code: str, settings: Settings, engine: Engine) -> None:
    from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications

    try:
        summary = run_notifications(settings, engine, code)
        log.info("scheduler.notification_run_done", type=code, run_id=summary.get("run_id"),
                 run_key=summary.get("run_key"), created=summary.get("created"))
    except RunAlreadyDoneError as exc:  # this period was notified already (a re-fire)
        log.info("scheduler.notification_run_skipped", type=code, run_id=exc.run_id,
                 run_key=exc.run_key)
    except Exception:
        log.exception("scheduler.notification_run_failed", type=code)


def add_notification_jobs(scheduler: Any, settings: Settings, engine: Engine) -> list[str]:
    """Schedule a job per active notification type with a cron; return their ids.

    Called again (every ``REFRESH_SECONDS`` by ``comms scheduler run``) it follows the types
    as they are now: new and re-timed types are (re)scheduled, deactivated ones dropped.
    """
    from apscheduler.triggers.cron import CronTrigger

    wanted: dict[str, tuple[str, Any]] = {}
    for code, cron in scheduled_types(engine):
        try:  # types saved before their cron was checked must not stop the other jobs
            trigger = CronTrigger.from_crontab(cron, timezone=settings.scheduler.timezone)
        except ValueError as exc:
            log.error("scheduler.bad_cron", type=code, cron=cron, error=str(exc))
            continue
        wanted[f"{JOB_PREFIX}{code}"] = (code, trigger)
    for job in scheduler.get_jobs():
        if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
            scheduler.remove_job(job.id)
            log.info("scheduler.notification_job_removed", job=job.id)
    for job_id, (code, trigger) in wanted.items():
        job = scheduler.get_job(job_id)
        if job is not None:
            if str(job.trigger) == str(trigger):
                continue
            scheduler.remove_job(job_id)  # (a scheduler not started yet keeps duplicates)
        scheduler.add_job(run_scheduled, trigger, args=(code, settings, engine), id=job_id,
                          name=job_id, max_instances=1, coalesce=True,
                          misfire_grace_time=3600, replace_existing=True)
    return list(wanted)


#: How often a running scheduler looks at the notification types again.
REFRESH_SECONDS = 60
REFRESH_JOB = "refresh-notification-types"


def add_refresh_job(scheduler: Any, settings: Settings, engine: Engine) -> None:
    """Keep the notification jobs in step with the types without a restart."""
    def refresh() -> None:
        try:
            add_notification_jobs(scheduler, settings, engine)
        except Exception:
            log.exception("scheduler.notification_refresh_failed")

    scheduler.add_job(refresh, "interval", seconds=REFRESH_SECONDS, id=REFRESH_JOB,
                      name=REFRESH_JOB, max_instances=1, coalesce=True,
                      replace_existing=True)
