"""The communications log: every interaction with a contact, logged by an agent or sent.

Agents log interactions of any media (phone, face to face, letter, email, SMS, ...) and
either direction with a category, as Draft (to finish later) or Completed, and follow-ups that
refer to an earlier completed communication (the seeds' "Referring To" chain). Sends made by
the pipeline appear in the same log: :func:`log_sent` copies completed queue entries into it
(idempotent: one log entry per queue entry). The queues of details call it through
:func:`log_sends_on_change` in the very transaction that completes an entry, whoever completes
it (a daemon, an external system's acknowledgement); listing a contact's log also catches up
entries completed by hand in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import DetailState
from comms_pipeline.store.db import is_postgres, utcnow
from comms_pipeline.store.models import Communication, Contact, Template, details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

comms_t = Communication.__table__
contacts_t = Contact.__table__
templates_t = Template.__table__

MEDIA = ("phone", "face_to_face", "letter", "email", "sms", "push", "external", "web", "other")
DIRECTIONS = ("incoming", "outgoing")
DRAFT, COMPLETED = "draft", "completed"
SENT_STATES = (DetailState.COMPLETED, DetailState.COMPLETED_REMOVED)
PIPELINE = "pipeline"


class CommunicationError(CommsError):
    """The communication cannot be logged as asked."""


@dataclass
class Entry:
    id: int
    contact_ref: str
    media: str
    direction: str
    category: str | None
    subject: str | None
    content: str | None
    status: str
    follow_up_of_id: int | None
    detail_id: int | None
    created_by: str | None
    created_at: Any
    completed_at: Any


def _contact_id(conn: Connection, ref: str) -> int:
    found = conn.execute(select(contacts_t.c.id).where(contacts_t.c.ref == ref)
                         ).scalar_one_or_none()
    if found is None:
        raise CommunicationError(f"no contact with reference {ref!r}")
    return found


def _check(media: str, direction: str) -> None:
    if media not in MEDIA:
        raise CommunicationError(f"unknown media {media!r} (one of {', '.join(MEDIA)})")
    if direction not in DIRECTIONS:
        raise CommunicationError(f"direction must be incoming or outgoing, not {direction!r}")


def log_interaction(conn: Connection, *, contact_ref: str, media: str, direction: str,
                    category: str | None = None, subject: str | None = None,
                    content: str | None = None, draft: bool = False,
                    created_by: str | None = None, follow_up_of: int | None = None) -> int:
    """Record an interaction; return its id (its communication number)."""
    _check(media, direction)
    now = utcnow()
    return conn.execute(comms_t.insert().values(
        contact_id=_contact_id(conn, contact_ref), media=media, direction=direction,
        category=category, subject=subject, content=content,
        status=DRAFT if draft else COMPLETED, follow_up_of_id=follow_up_of,
        created_by=created_by, created_at=now, completed_at=None if draft else now,
    ).returning(comms_t.c.id)).scalar_one()


def follow_up(conn: Connection, of_id: int, *, media: str, direction: str,
              category: str | None = None, subject: str | None = None,
              content: str | None = None, draft: bool = False,
              created_by: str | None = None) -> int:
    """Log a communication referring to the completed communication ``of_id``."""
    original = get(conn, of_id)
    if original.status != COMPLETED:
        raise CommunicationError(f"communication {of_id} is a draft: complete it before "
                                 f"following it up")
    return log_interaction(conn, contact_ref=original.contact_ref, media=media,
                           direction=direction, category=category or original.category,
                           subject=subject or original.subject, content=content, draft=draft,
                           created_by=created_by, follow_up_of=of_id)


def complete(conn: Connection, comm_id: int, *, content: str | None = None) -> None:
    """Turn a draft into a completed communication."""
    entry = get(conn, comm_id)
    if entry.status != DRAFT:
        raise CommunicationError(f"communication {comm_id} is already completed")
    values: dict[str, Any] = {"status": COMPLETED, "completed_at": utcnow()}
    if content is not None:
        values["content"] = content
    conn.execute(update(comms_t).where(comms_t.c.id == comm_id, comms_t.c.status == DRAFT)
                 .values(values))


def _select() -> Any:
    return select(comms_t, contacts_t.c.ref.label("contact_ref")).join(
        contacts_t, contacts_t.c.id == comms_t.c.contact_id)


def _entry(r: Row) -> Entry:
    return Entry(r.id, r.contact_ref, r.media, r.direction, r.category, r.subject, r.content,
                 r.status, r.follow_up_of_id, r.detail_id, r.created_by, r.created_at,
                 r.completed_at)


def get(conn: Connection, comm_id: int) -> Entry:
    r = conn.execute(_select().where(comms_t.c.id == comm_id)).one_or_none()
    if r is None:
        raise CommunicationError(f"no communication {comm_id}")
    return _entry(r)


def chain(conn: Connection, comm_id: int) -> tuple[list[Entry], list[Entry]]:
    """The communications ``comm_id`` follows up (oldest first) and its own follow-ups."""
    earlier: list[Entry] = []
    current = get(conn, comm_id)
    seen = {current.id}
    while current.follow_up_of_id is not None and current.follow_up_of_id not in seen:
        current = get(conn, current.follow_up_of_id)
        seen.add(current.id)
        earlier.insert(0, current)
    later = [_entry(r) for r in conn.execute(
        _select().where(comms_t.c.follow_up_of_id == comm_id).order_by(comms_t.c.id))]
    return earlier, later


def list_for_contact(conn: Connection, contact_ref: str, limit: int = 100,
                     status: str | None = None) -> list[Entry]:
    """The contact's log, newest first (its pipeline sends are logged first)."""
    contact_id = _contact_id(conn, contact_ref)
    log_sent(conn, contact_id=contact_id)
    q = _select().where(comms_t.c.contact_id == contact_id)
    if status:
        q = q.where(comms_t.c.status == status)
    return [_entry(r) for r in conn.execute(
        q.order_by(comms_t.c.created_at.desc(), comms_t.c.id.desc()).limit(limit))]


def log_sends_on_change(conn: Connection, new_state: str, ids: list[int]) -> None:
    """A work queue's ``on_change`` hook: entries that became Completed enter the log."""
    if new_state in SENT_STATES:
        log_sent(conn, ids)


def log_sent(conn: Connection, detail_ids: Iterable[int] | None = None, *,
             contact_id: int | None = None, being_completed: bool = False) -> int:
    """Copy completed queue entries into the log (once each); return how many were added.

    Call it with the ids of details that became Completed (in the same transaction), or with
    ``contact_id`` to catch up one contact. ``being_completed`` skips the state check, for a
    hook that runs in the finishing transaction before the state is written (a handler's
    ``persist``: only rows still held reach it, and the transaction writes both or neither).
    """
    d = details_t
    where = [d.c.contact_id.isnot(None), ~exists().where(comms_t.c.detail_id == d.c.id)]
    if not being_completed:
        where.append(d.c.state.in_(SENT_STATES))
    if detail_ids is not None:
        ids = sorted(set(detail_ids))
        if not ids:
            return 0
        where.append(d.c.id.in_(ids))
    if contact_id is not None:
        where.append(d.c.contact_id == contact_id)
    source = (select(d.c.contact_id, d.c.media, d.c.direction, templates_t.c.category,
                     d.c.subject, d.c.body, literal(COMPLETED), d.c.id, literal(PIPELINE),
                     d.c.created_at,
                     func.coalesce(d.c.completed_at, d.c.updated_at, d.c.created_at))
              .select_from(d.outerjoin(templates_t, templates_t.c.id == d.c.template_id))
              .where(and_(*where)))
    dialect = postgresql if is_postgres(conn) else sqlite
    stmt = dialect.insert(comms_t).from_select(
        ["contact_id", "media", "direction", "category", "subject", "content", "status",
         "detail_id", "created_by", "created_at", "completed_at"], source
    ).on_conflict_do_nothing(index_elements=["detail_id"])
    return conn.execute(stmt).rowcount or 0
