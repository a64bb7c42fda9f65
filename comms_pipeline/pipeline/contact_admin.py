"""Contacts after ``contacts add``: list, show, update (consent changes recorded with who and
when, in the shared ``state_transitions`` history, kind ``contact``), remove."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update

from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import audit
from comms_pipeline.queue.claims import record_transitions
from comms_pipeline.store.models import (
    addresses_t,
    contacts_t,
    details_t,
    transitions_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: Consent columns and the code their changes are recorded under.
CONSENTS = {"opt_in_direct_marketing": "DIRECT_MARKETING",
            "opt_in_affiliate_marketing": "AFFILIATE_MARKETING"}


class UnknownContact(CommsError):
    """No contact with that reference."""


def _contact(conn: Connection, ref: str) -> Any:
    row = conn.execute(select(contacts_t).where(contacts_t.c.ref == ref)).mappings().first()
    if row is None:
        raise UnknownContact(f"no contact {ref!r}")
    return row


def list_contacts(conn: Connection, *, search: str | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
    c, a = contacts_t.c, addresses_t.c
    q = (select(c.ref, c.name, c.preferred_language, c.opt_in_direct_marketing,
                c.opt_in_affiliate_marketing, func.count(a.id).label("addresses"))
         .outerjoin(addresses_t, a.contact_id == c.id).group_by(c.id).order_by(c.ref)
         .limit(limit))
    if search:
        pattern = f"%{search}%"
        q = q.where(or_(c.ref.like(pattern), c.name.like(pattern)))
    return [dict(r) for r in conn.execute(q).mappings()]


def show_contact(conn: Connection, ref: str) -> dict[str, Any]:
    row = _contact(conn, ref)
    addresses = conn.execute(
        select(addresses_t.c.kind, addresses_t.c.address_type, addresses_t.c.value,
               addresses_t.c.is_primary, addresses_t.c.invalid_reason)
        .where(addresses_t.c.contact_id == row["id"])
        .order_by(addresses_t.c.kind, addresses_t.c.is_primary.desc(), addresses_t.c.id)
    ).mappings().all()
    history = conn.execute(
        select(transitions_t.c.from_state, transitions_t.c.to_state, transitions_t.c.code,
               transitions_t.c.actor, transitions_t.c.at)
        .where(transitions_t.c.kind == "contact", transitions_t.c.row_id == row["id"])
        .order_by(transitions_t.c.id)).mappings().all()
    return {"contact": dict(row), "addresses": [dict(a) for a in addresses],
            "changes": [dict(h) for h in history]}


def update_contact(conn: Connection, ref: str, *, actor: str, **values: Any) -> list[str]:
    """Change the given columns (None: unchanged); return what changed. Consent changes are
    recorded as ``opted_out -> opted_in`` (code ``DIRECT_MARKETING`` ...), others as
    ``updated`` with the column's name as the code."""
    row = _contact(conn, ref)
    changed = {k: v for k, v in values.items() if v is not None and row[k] != v}
    if not changed:
        return []
    conn.execute(update(contacts_t).where(contacts_t.c.id == row["id"]).values(changed))
    for column, value in changed.items():
        if column in CONSENTS:
            record_transitions(conn, "contact", [(row["id"], "opted_in" if row[column]
                                                  else "opted_out",
                                                  "opted_in" if value else "opted_out")],
                               actor=actor, code=CONSENTS[column])
        else:
            record_transitions(conn, "contact", [(row["id"], None, "updated")], actor=actor,
                               code=column.upper())
    # Consent flags with their values; other columns by name only (personal data stays out
    # of the append-only log, which an erasure cannot clean). The target is the contact's id.
    consent = {c: {"before": bool(row[c]), "after": bool(v)} for c, v in changed.items()
               if c in CONSENTS}
    others = sorted(c for c in changed if c not in CONSENTS)
    if consent:
        audit.record(conn, actor=actor, action="contact.consent", target_kind="contact",
                     target_id=row["id"], change=consent)
    if others:
        audit.record(conn, actor=actor, action="contact.update", target_kind="contact",
                     target_id=row["id"], change={"fields": others})
    return sorted(changed)


def remove_contact(conn: Connection, ref: str) -> None:
    """Remove a contact and its addresses; refused while queue entries refer to it (they
    are the record of what was sent to it)."""
    row = _contact(conn, ref)
    entries = conn.execute(select(func.count()).where(details_t.c.contact_id == row["id"])
                           ).scalar_one()
    if entries:
        raise CommsError(f"contact {ref!r} has {entries} queue entr"
                         f"{'y' if entries == 1 else 'ies'}, the record of what was sent to "
                         f"it: not removed (opt it out instead: comms contacts update {ref} "
                         f"--no-direct-marketing)")
    conn.execute(delete(addresses_t).where(addresses_t.c.contact_id == row["id"]))
    conn.execute(delete(contacts_t).where(contacts_t.c.id == row["id"]))
    audit.record(conn, action="contact.remove", target_kind="contact", target_id=row["id"])


def contact_merge_data(conn: Connection, ref: str) -> dict[str, Any] | None:
    """The contact's columns, plus each address kind's primary (else first) value, as a
    template preview merges them; None when there is no such contact."""
    row = conn.execute(select(contacts_t).where(contacts_t.c.ref == ref)).mappings().first()
    if row is None:
        return None
    data = dict(row)
    for a in conn.execute(select(addresses_t).where(addresses_t.c.contact_id == row["id"])
                          .order_by(addresses_t.c.is_primary.desc(), addresses_t.c.id)):
        data.setdefault(a.kind, a.value)
    return data
