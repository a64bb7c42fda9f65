"""An external system's queue as the Web API shows it: its entries with their system's code
and their contact's ref, in the order to process them, and their stored documents.

The reads behind ``GET /v1/queue`` and the agents' contact history; the routes only parse,
call and shape the answer. ``scope_id`` is the caller's external system (``None``: an admin,
who sees every system's entries).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from comms_pipeline.core.states import DetailState
from comms_pipeline.queue.actions import owner_clause
from comms_pipeline.store.models import (
    contacts_t,
    details_t,
    documents_t,
    systems_t,
    templates_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

ENTRY_COLUMNS = ("id", "state", "media", "address", "language", "subject", "priority",
                 "error_code", "error_description", "created_at", "updated_at", "completed_at",
                 "expires_at", "purged_at", "purged_by")


def entry_select(*extra: Any):
    """Queue entries with their external system's code and their contact's ref."""
    d = details_t.c
    return (select(*(d[name] for name in ENTRY_COLUMNS),
                   systems_t.c.code.label("external_system"),
                   contacts_t.c.ref.label("contact_ref"), *extra)
            .select_from(details_t)
            .outerjoin(systems_t, systems_t.c.id == d.external_system_id)
            .outerjoin(contacts_t, contacts_t.c.id == d.contact_id))


def internal_states(public: str) -> list[DetailState]:
    """The stored states behind a queue filter (Pending: ready for the external system)."""
    return {
        "Pending": [DetailState.AWAITING_EXTERNAL],
        "Completed": [DetailState.COMPLETED],
        "Rejected": [DetailState.REJECTED],
        "Completed and Removed": [DetailState.COMPLETED_REMOVED],
    }[public]


def list_queue(conn: Connection, scope_id: int | None, state: str, *, now: datetime,
               media: str | None = None, contact: str | None = None,
               after: list[int] | None = None, limit: int = 100) -> list[Any]:
    """One page (plus one row, to tell whether there is a next) of entries in public ``state``
    after the ``(priority, id)`` cursor; Pending leaves out entries past their expiry."""
    d = details_t.c
    q = entry_select().where(owner_clause(scope_id), d.state.in_(internal_states(state)))
    if state == "Pending":
        q = q.where(or_(d.expires_at.is_(None), d.expires_at > now))
    if media is not None:
        q = q.where(d.media == media)
    if contact is not None:
        q = q.where(d.contact_id.in_(select(contacts_t.c.id).where(contacts_t.c.ref == contact)))
    if after is not None:
        q = q.where(or_(d.priority > after[0], and_(d.priority == after[0], d.id > after[1])))
    return list(conn.execute(q.order_by(d.priority, d.id).limit(limit + 1)).all())


def queue_entry(conn: Connection, entry_id: int, scope_id: int | None = None,
                *, with_body: bool = False) -> Any | None:
    """The entry, if the caller's system owns it (any entry for ``scope_id=None``)."""
    q = entry_select(details_t.c.body) if with_body else entry_select()
    return conn.execute(q.where(details_t.c.id == entry_id, owner_clause(scope_id))).first()


def contact_history(conn: Connection, contact_id: int, *, media: str | None = None,
                    before: int | None = None, limit: int = 100) -> list[Any]:
    """One page (plus one row) of the contact's entries, newest first, before entry ``before``,
    each with its template's code."""
    d = details_t.c
    q = (entry_select(templates_t.c.code.label("template_code"))
         .outerjoin(templates_t, templates_t.c.id == d.template_id)
         .where(d.contact_id == contact_id))
    if media is not None:
        q = q.where(d.media == media)
    if before is not None:
        q = q.where(d.id < before)
    return list(conn.execute(q.order_by(d.id.desc()).limit(limit + 1)).all())


def document_rows(conn: Connection, detail_ids: list[int]) -> list[Any]:
    """The stored documents (id, detail_id, kind, content_type, size) of these entries."""
    if not detail_ids:
        return []
    q = select(documents_t.c.id, documents_t.c.detail_id, documents_t.c.kind,
               documents_t.c.content_type, documents_t.c.size).where(
        documents_t.c.detail_id.in_(detail_ids))
    return list(conn.execute(q).all())


def document_content(conn: Connection, entry_id: int) -> bytes | None:
    """The bytes of the entry's stored document (``None``: it has none)."""
    content = conn.execute(select(documents_t.c.content).where(
        documents_t.c.detail_id == entry_id)).scalar_one_or_none()
    return None if content is None else bytes(content)


def entry_document_id(conn: Connection, entry_id: int, scope_id: int | None) -> int | None:
    """The stored document's id of an entry the caller's system owns."""
    return conn.execute(
        select(documents_t.c.id).join(details_t, details_t.c.id == documents_t.c.detail_id)
        .where(details_t.c.id == entry_id, owner_clause(scope_id))).scalar_one_or_none()
