"""Backlog and outcome counts for every stage of the pipeline (``comms status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

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


def pipeline_status(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        header_counts = dict(conn.execute(
            select(headers_t.c.status, func.count()).group_by(headers_t.c.status)).all())
        detail_rows = conn.execute(
            select(details_t.c.state, details_t.c.media, details_t.c.external_system_id.isnot(None),
                   func.count())
            .group_by(details_t.c.state, details_t.c.media,
                      details_t.c.external_system_id.isnot(None))).all()
        doc_counts = dict(conn.execute(
            select(documents_t.c.stored_at.isnot(None), func.count())
            .group_by(documents_t.c.stored_at.isnot(None))).all())
        failing = dict(conn.execute(
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
    backlog["monitor"] = headers[HeaderStatus.AWAITING_PROCESSING]
    backlog["storage"] = doc_counts.get(False, 0)
    return {
        "headers": headers,
        "headers_total": sum(headers.values()),
        "details": details,
        "details_total": sum(details.values()),
        "details_by_state": by_state,
        "details_by_media": by_media,
        "documents": {"stored": doc_counts.get(True, 0),
                      "awaiting_storage": doc_counts.get(False, 0),
                      "failing_storage": failing},
        "backlog": backlog,
    }
