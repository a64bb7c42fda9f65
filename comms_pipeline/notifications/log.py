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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.retention import removal_notice
from comms_pipeline.queue.hooks import log_sent
from comms_pipeline.store.models import (
    comms_t,
    contacts_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row


MEDIA = ("phone", "face_to_face", "letter", "email", "sms", "push", "external", "web", "other")
DIRECTIONS = ("incoming", "outgoing")
DRAFT, COMPLETED = "draft", "completed"


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
    #: Why the subject and content are gone (the retention policy, an erasure), if they are.
    removed: str | None = None


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
                 r.completed_at, removal_notice(r.purged_at, r.purged_by))


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
