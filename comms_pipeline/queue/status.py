"""Backlog and outcome counts for every stage of the pipeline (``comms status``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, literal, or_, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import DetailState, HeaderStatus, PublicState, public_state
from comms_pipeline.store.models import details_t, documents_t, headers_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: Which stage works which rows: (table, state, media or None).
STAGES = [
    ("monitor", "headers", HeaderStatus.AWAITING_PROCESSING, None),
    ("email-monitor", "details", DetailState.AWAITING_MERGE, "email"),
    ("letter-monitor", "details", DetailState.AWAITING_MERGE, "letter"),
    ("email", "details", DetailState.AWAITING_SEND, "email"),
    ("sms", "details", DetailState.AWAITING_SEND, "sms"),
    ("push-handset", "details", DetailState.AWAITING_SEND, "push"),
    ("letter", "details", DetailState.AWAITING_SEND, "letter"),
    ("external systems", "details", DetailState.AWAITING_EXTERNAL, None),
]


def _stage_rows(name: str):
    """(table, condition) of the rows stage ``name`` has left to work."""
    if name == "storage":
        return documents_t, and_(documents_t.c.stored_at.is_(None),
                                 documents_t.c.purged_at.is_(None))
    for stage, table, state, media in STAGES:
        if stage != name:
            continue
        if table == "headers":
            return headers_t, headers_t.c.status == state
        d = details_t.c
        where = d.state == state
        if media is not None:
            where = and_(where, d.media == media, d.external_system_id.is_(None))
        return details_t, where
    raise KeyError(name)


def stage_timings(engine: Engine, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per stage: rows ready now, rows scheduled for later (a send-after time or a retry's
    backoff not yet come), and the age in seconds of the oldest ready row (None: none).

    Rows scheduled for later are not backlog: a stage with only those is keeping up."""
    now = now or utcnow()
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for name in [*(s[0] for s in STAGES), "storage"]:
            table, where = _stage_rows(name)
            c = table.c
            later = c.next_attempt_at > now
            if "send_after" in c:
                later = or_(later, c.send_after > now)
            later = func.coalesce(later, literal(False))
            ready_count, later_count, oldest = conn.execute(
                select(func.sum(case((later, 0), else_=1)), func.sum(case((later, 1), else_=0)),
                       func.min(case((later, None), else_=c.created_at)))
                .where(where)).one()
            age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else None
            out[name] = {"ready": int(ready_count or 0), "later": int(later_count or 0),
                         "oldest_pending_age_seconds": age}
    return out


RATE_WINDOWS_MINUTES = (5, 60)


def send_rates(engine: Engine, now: datetime | None = None) -> dict[str, dict[str, float]]:
    """Entries completed per minute over the last 5 and 60 minutes, by media."""
    from datetime import timedelta

    now = now or utcnow()
    d = details_t.c
    rates: dict[str, dict[str, float]] = {}
    with engine.connect() as conn:
        for minutes in RATE_WINDOWS_MINUTES:
            rows = conn.execute(select(d.media, func.count())
                                .where(d.completed_at >= now - timedelta(minutes=minutes),
                                       d.is_test.is_(False),
                                       d.state.in_((DetailState.COMPLETED,
                                                    DetailState.COMPLETED_REMOVED)))
                                .group_by(d.media)).all()
            for media, count in rows:
                rates.setdefault(media, {f"{m}m": 0.0 for m in RATE_WINDOWS_MINUTES})
                rates[media][f"{minutes}m"] = round(count / minutes, 2)
    return rates


def pipeline_status(engine: Engine) -> dict[str, Any]:
    """The counts of the pipeline's rows. Test traffic (test API keys') is left out of the
    header and entry counts and the send rates, and counted apart (``test_details``); the
    backlog and its ages include it, as the daemons work it like any other."""
    with engine.connect() as conn:
        header_counts: dict[str, int] = dict(conn.execute(
            select(headers_t.c.status, func.count()).where(headers_t.c.is_test.is_(False))
            .group_by(headers_t.c.status)).all())
        detail_rows = conn.execute(
            select(details_t.c.state, details_t.c.media, details_t.c.external_system_id.isnot(None),
                   func.count())
            .where(details_t.c.is_test.is_(False))
            .group_by(details_t.c.state, details_t.c.media,
                      details_t.c.external_system_id.isnot(None))).all()
        test_details = conn.execute(select(func.count()).select_from(details_t)
                                    .where(details_t.c.is_test.is_(True))).scalar_one()
        doc_counts = dict(conn.execute(
            select(documents_t.c.stored_at.isnot(None), func.count())
            .group_by(documents_t.c.stored_at.isnot(None))).all())
        failing: dict[str, int] = dict(conn.execute(
            select(documents_t.c.error_code, func.count())
            .where(documents_t.c.stored_at.is_(None), documents_t.c.error_code.isnot(None))
            .group_by(documents_t.c.error_code)).all())
    headers = {s.value: header_counts.get(s.value, 0) for s in HeaderStatus}
    details = {p.value: 0 for p in PublicState}
    by_state = {s.value: 0 for s in DetailState}
    by_media: dict[str, dict[str, int]] = {}
    backlog = {name: 0 for name, *_ in STAGES}
    for state, media, external, count in detail_rows:
        details[public_state(state).value] += count
        by_state[state] += count
        media_counts = by_media.setdefault(media, {p.value: 0 for p in PublicState})
        media_counts[public_state(state).value] += count
        for name, table, stage_state, stage_media in STAGES:
            if table != "details" or state != stage_state:
                continue
            if stage_media is None or (stage_media == media and not external):
                backlog[name] += count
    timings = stage_timings(engine)
    backlog = {name: t["ready"] for name, t in timings.items()}  # not what waits for later
    return {
        "headers": headers,
        "headers_total": sum(headers.values()),
        "details": details,
        "details_total": sum(details.values()),
        "details_by_state": by_state,
        "details_by_media": by_media,
        "test_details": int(test_details),
        "documents": {"stored": doc_counts.get(True, 0),
                      "awaiting_storage": doc_counts.get(False, 0),
                      "failing_storage": failing},
        "backlog": backlog,
        "scheduled_later": {name: t["later"] for name, t in timings.items()},
        "oldest_pending_age_seconds": {name: t["oldest_pending_age_seconds"]
                                       for name, t in timings.items()},
        "sent_per_minute": send_rates(engine),
    }
