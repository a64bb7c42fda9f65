"""Retention sweep: removes message bodies, documents and tracking data past their retention.

The ``[retention]`` section says, per media and classification, how many days after a queue
entry was created its subject and body (and the communications log entry it made), its merged
document (the copy in the database and the one in S3 / SFTP / the local store) and its tracking
data (the tracked links and the reader's browser of each open or click) are kept. The sweep
claims finished entries (Completed, Rejected, Expired…: never one still to send) with something
past its retention, removes it, and records ``purged_at`` / ``purged_by = 'retention'`` on the
entry, document and log entry, so that agents are told the content was removed and when.
States, codes, transitions, timestamps and the open and click counts stay.

A document not yet in the store is removed once the Storage daemon has stored it (it may be
holding it meanwhile). A store that fails is not tried again in the same run: the entries
whose documents are kept there are left for the next run, and their documents stay in the
database until then. With no rule configured (the default), nothing is ever removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, case, exists, false, literal, or_, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import DETAIL_TERMINAL
from comms_pipeline.pipeline.purging import close_stores, delete_stored, remove_tracking
from comms_pipeline.queue.claims import Outcome, WorkQueue
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.queue.retry import NeverGiveUp
from comms_pipeline.settings.retention import RetentionSettings
from comms_pipeline.store.models import (
    comms_t,
    details_t,
    documents_t,
    tracking_events_t,
    tracking_links_t,
)
from comms_pipeline.store.outage import is_db_unavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row
    from sqlalchemy.sql.elements import ColumnElement

    from comms_pipeline.gateways.protocols import DocumentStore
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)
PURGED_BY = "retention"


def _specificity(rule: str) -> int:
    media, _, classification = rule.partition(".")
    return (2 if classification else 0) + (1 if media != "*" else 0)


def cutoff(rules: dict[str, float], now: datetime) -> ColumnElement[Any] | None:
    """The creation time before which an entry's content is past retention, per entry: a
    CASE over the rules, most specific first (None: no rule, kept for ever)."""
    if not rules:
        return None
    d = details_t.c
    whens = []
    for rule in sorted(rules, key=_specificity, reverse=True):
        media, _, classification = rule.partition(".")
        conds = []
        if media != "*":
            conds.append(d.media == media)
        if classification:
            conds.append(d.classification == classification)
        whens.append((and_(*conds) if conds else literal(True),
                      literal(now - timedelta(days=rules[rule]))))
    return case(*whens, else_=None)


def tracked(detail_id: Any) -> ColumnElement[bool]:
    """The entry still has tracking data to remove (links, or a reader's browser)."""
    e = tracking_events_t.c
    return or_(exists().where(tracking_links_t.c.detail_id == detail_id),
               exists().where(e.detail_id == detail_id,
                              or_(e.user_agent.isnot(None), e.link_id.isnot(None))))


def unpurged_document(detail_id: Any) -> ColumnElement[bool]:
    """The entry's document is stored and not removed yet (one still waiting for the Storage
    daemon, which may hold it, is removed once it is stored)."""
    return exists().where(documents_t.c.detail_id == detail_id,
                          documents_t.c.stored_at.isnot(None),
                          documents_t.c.purged_at.is_(None))


def past_retention(policy: RetentionSettings, now: datetime) -> ColumnElement[bool]:
    """Finished entries with a body, a document or tracking data past its retention."""
    d = details_t.c
    parts = []
    bodies = cutoff(policy.bodies, now)
    if bodies is not None:
        parts.append(and_(d.purged_at.is_(None), d.created_at < bodies))
    documents = cutoff(policy.documents, now)
    if documents is not None:
        parts.append(and_(d.created_at < documents, unpurged_document(d.id)))
    tracking = cutoff(policy.tracking, now)
    if tracking is not None:
        parts.append(and_(d.created_at < tracking, tracked(d.id)))
    if not parts:
        return false()
    return and_(d.state.in_([s.value for s in DETAIL_TERMINAL]), or_(*parts))


@dataclass
class Purge:
    """What to remove of one entry besides its own columns (written in ``persist``)."""

    documents: list[int] = field(default_factory=list)
    tracking: bool = False
    communications: bool = False


class RetentionSweepJob:
    name = "retention-sweep"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = settings.retention
        self.stores: dict[str, DocumentStore] = {}
        #: Entries left for the next run (their store failed in this one).
        self.left: set[int] = set()
        # A retention sweep must never end a finished entry in another state: it never
        # gives up (and so never fails an entry), and it only clears content.
        self.queue = WorkQueue(machine=DETAILS, pending=self._pending,
                               order_by=(details_t.c.id,), counts_attempts=False,
                               retry=NeverGiveUp.from_settings(settings.claims))

    def _pending(self) -> ColumnElement[bool]:
        where = past_retention(self.policy, utcnow())
        if self.left:
            where = and_(where, details_t.c.id.notin_(sorted(self.left)))
        return where

    def _due(self, kind: str, row: Row, now: datetime) -> bool:
        days = self.policy.days(kind, row.media, row.classification)
        return days is not None and row.created_at < now - timedelta(days=days)

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        """The batch's removals; a batch that fails is given back untouched and left for the
        next run (the Runner would write INTERNAL_ERROR over the entries' own codes)."""
        try:
            return self._handle(rows, ctx)
        except Exception as exc:
            if is_db_unavailable(exc):
                raise
            log.error("retention.batch_failed", error=type(exc).__name__,
                      ids=[r.id for r in rows][:20])
            self.left.update(r.id for r in rows)
            return [Outcome.release(r.id) for r in rows]

    def _handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        now = utcnow()
        with_docs = [r.id for r in rows if self._due("documents", r, now)]
        docs: list[Row] = []
        if with_docs:
            with self.engine.connect() as conn:
                docs = list(conn.execute(
                    select(documents_t.c.id, documents_t.c.detail_id,
                           documents_t.c.storage_backend, documents_t.c.location)
                    .where(documents_t.c.detail_id.in_(with_docs),
                           documents_t.c.stored_at.isnot(None),
                           documents_t.c.purged_at.is_(None))))
        removed, failed = delete_stored(self.stores, self.settings, docs)
        by_detail: dict[int, list[int]] = {}
        for doc in docs:
            if doc.id in removed:
                by_detail.setdefault(doc.detail_id, []).append(doc.id)
            else:
                self.left.add(doc.detail_id)
        ctx.keep_alive()
        outcomes = []
        for r in rows:
            values: dict[str, Any] = {}
            body = r.purged_at is None and self._due("bodies", r, now)
            if body:
                values = {"subject": None, "body": None, "purged_at": now,
                          "purged_by": PURGED_BY}
            purge = Purge(documents=by_detail.get(r.id, []),
                          tracking=self._due("tracking", r, now), communications=body)
            if not (body or purge.documents or purge.tracking):
                self.left.add(r.id)  # nothing of it is due after all: never claim it again
            outcomes.append(Outcome.done(r.id, None, payload=purge, **values))
        return outcomes

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        now = utcnow()
        purges = [(o.id, o.payload) for o in outcomes if isinstance(o.payload, Purge)]
        doc_ids = [i for _, p in purges for i in p.documents]
        if doc_ids:
            conn.execute(update(documents_t).where(documents_t.c.id.in_(doc_ids))
                         .values(content=None, purged_at=now, purged_by=PURGED_BY))
        remove_tracking(conn, [i for i, p in purges if p.tracking])
        logged = [i for i, p in purges if p.communications]
        if logged:
            conn.execute(update(comms_t).where(comms_t.c.detail_id.in_(logged),
                                               comms_t.c.purged_at.is_(None))
                         .values(subject=None, content=None, purged_at=now,
                                 purged_by=PURGED_BY))
        log.info("retention.swept", entries=len(purges), bodies=len(logged),
                 documents=len(doc_ids))

    def close(self) -> None:
        close_stores(self.stores)
        if self.left:
            log.warning("retention.left_for_next_run", entries=len(self.left))
