"""The notification types, their runs and the event rules as ``comms notifications`` and
``comms rules`` list them: named reads, so the CLI only parses, calls and prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from comms_pipeline.store.models import rules_t, runs_t, segments_t, skipped_t, types_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def notification_types(conn: Connection) -> list[Any]:
    """Each type (code, classification, entity, template_code, cron, active) with its last run."""
    last = (select(runs_t.c.type_id, func.max(runs_t.c.id).label("last_run"))
            .group_by(runs_t.c.type_id).subquery())
    return list(conn.execute(
        select(types_t.c.code, types_t.c.classification, types_t.c.entity,
               types_t.c.template_code, types_t.c.cron, types_t.c.active, last.c.last_run)
        .outerjoin(last, last.c.type_id == types_t.c.id).order_by(types_t.c.code)).all())


def recent_runs(conn: Connection, type_code: str | None = None, limit: int = 20) -> list[Any]:
    """The newest runs (of ``type_code``) with their counters and times."""
    q = (select(runs_t.c.id, types_t.c.code, runs_t.c.run_key, runs_t.c.status,
                runs_t.c.created,
                runs_t.c.skipped_consent, runs_t.c.skipped_condition, runs_t.c.errors,
                runs_t.c.started_at, runs_t.c.finished_at)
         .join(types_t, types_t.c.id == runs_t.c.type_id)
         .order_by(runs_t.c.id.desc()).limit(limit))
    if type_code:
        q = q.where(types_t.c.code == type_code)
    return list(conn.execute(q).all())


def run_with_type(conn: Connection, run_id: int) -> Any | None:
    """The run's row with its type's ``code``, or None when there is no such run."""
    return conn.execute(select(runs_t, types_t.c.code)
                        .join(types_t, types_t.c.id == runs_t.c.type_id)
                        .where(runs_t.c.id == run_id)).one_or_none()


def skipped_recipients(conn: Connection, run_id: int, limit: int) -> list[Any]:
    """The run's first ``limit`` skipped recipients, with their reasons."""
    return list(conn.execute(select(skipped_t).where(skipped_t.c.run_id == run_id)
                             .order_by(skipped_t.c.id).limit(limit)).all())


def event_rules(conn: Connection) -> list[Any]:
    """The event rules (code, entity, event, both templates, send_to, segment code, active)."""
    return list(conn.execute(
        select(rules_t.c.code, rules_t.c.entity, rules_t.c.event, rules_t.c.email_template,
               rules_t.c.sms_template, rules_t.c.send_to, segments_t.c.code,
               rules_t.c.active)
        .outerjoin(segments_t, segments_t.c.id == rules_t.c.segment_id)
        .order_by(rules_t.c.entity, rules_t.c.event, rules_t.c.code)).all())
