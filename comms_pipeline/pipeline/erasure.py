"""Erasure: one person's personal data removed everywhere, leaving anonymised counts.

``erase_contact`` replaces the person's reference by a stable pseudonym (``erased-<hash>``)
wherever it is kept, deletes the contact's addresses, and removes what was sent to them: the
entries' addresses, subjects and bodies, their merged documents (in the database and in the
store), the data and parameters of their requests, their tracking data, the data of their
notifications and link actions, their communications log entries' subject and content, and
their stored lists' memberships. Requests and entries not yet sent are cancelled (Cancelled,
Rejected with ``ERASED``). States, codes, transitions and timestamps stay, so counts and the
audit trail of what happened remain; free-text reasons keep their words with the person's
name, reference and addresses replaced by ``[erased]``. The ``erasures`` table records the
pseudonym, when, by whom and how many rows of each kind were touched.

Erasing is idempotent: erasing again finds nothing more (or what was added since) and answers
with the first record. The copies in the store are deleted before the database is committed:
if a store fails, nothing is committed and the erasure can simply be run again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Text, cast, delete, func, or_, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import PENDING_STATES, DetailState, HeaderStatus
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.pipeline.purging import close_stores, delete_stored, remove_tracking
from comms_pipeline.queue.claims import WorkQueue, transition_rows
from comms_pipeline.queue.content import update_content
from comms_pipeline.queue.machine import DETAILS, HEADERS, StateMachine
from comms_pipeline.store.models import (
    addresses_t,
    comms_t,
    contacts_t,
    details_t,
    documents_t,
    erasures_t,
    feedback_t,
    headers_t,
    idempotency_t,
    link_actions_t,
    members_t,
    notifications_t,
    runs_t,
    skipped_t,
    soft_bounces_t,
    suppressions_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.gateways.protocols import DocumentStore
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)
ERASED = "ERASED"
PURGED_BY = "erasure"
MASK = "[erased]"


class NothingToEraseError(CommsError):
    """No contact, request or notification has this reference, and none was erased."""


class ErasureBusyError(CommsError):
    """A job or daemon holds some of the person's rows right now: nothing was erased."""


class ErasureStoreError(CommsError):
    """A document store failed: nothing was erased (run the erasure again)."""


@dataclass
class ErasureResult:
    pseudonym: str
    erased_at: Any
    erased_by: str
    counts: dict[str, int] = field(default_factory=dict)
    #: Nothing was left to erase: the person had been erased before.
    already: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"pseudonym": self.pseudonym, "erased_at": self.erased_at,
                "erased_by": self.erased_by, "counts": self.counts, "already": self.already}


def pseudonym(ref: str) -> str:
    """The stable pseudonym that replaces ``ref``: the same reference always gives the same."""
    return "erased-" + hashlib.sha256(ref.encode()).hexdigest()[:24]


def _masker(secrets: Iterable[str]):
    """Replaces every secret (longest first) in a text by ``[erased]``."""
    found = sorted({s.strip() for s in secrets if s and len(s.strip()) >= 3}, key=len,
                   reverse=True)

    def mask(text: str | None) -> str | None:
        if not text:
            return text
        for secret in found:
            text = text.replace(secret, MASK)
        return text

    return mask, found


def _ids(conn: Connection, query: Any) -> list[int]:
    return list(conn.execute(query).scalars())


def _rewrite_text(conn: Connection, machine: StateMachine, column: str, where: Any,
                  mask: Any) -> int:
    """Mask the secrets in ``column`` of the machine's rows ``where``; the rows changed."""
    table = machine.table
    col = table.c[column]
    changed = 0
    for row in conn.execute(select(table.c.id, col).where(where, col.isnot(None))).all():
        new = mask(row[1])
        if new != row[1]:
            update_content(conn, machine, table.c.id == row.id, {column: new})
            changed += 1
    return changed


def _rewrite_json(conn: Connection, table: Any, column: str, secrets: Sequence[str],
                  mask: Any) -> int:
    """Mask the secrets in a JSON column wherever a row's JSON mentions one of them."""
    col = table.c[column]
    if not secrets:
        return 0
    # JSON may keep a non-ASCII secret escaped (\u039c…): look for both spellings.
    spellings = {form for s in secrets for form in (s, json.dumps(s)[1:-1])}
    mentions = or_(*(cast(col, Text).contains(s, autoescape=True) for s in sorted(spellings)))
    changed = 0
    for row in conn.execute(select(table.c.id, col).where(col.isnot(None), mentions)).all():
        new = json.loads(mask(json.dumps(row[1], ensure_ascii=False)) or "null")
        if new != row[1]:
            conn.execute(update(table).where(table.c.id == row.id).values({column: new}))
            changed += 1
    return changed


def _refuse_if_held(conn: Connection, header_ids: list[int], detail_ids: list[int],
                    now: Any) -> None:
    """A row a worker holds would be written back after the erasure (a document stored, an
    entry merged): refuse, and let the operator run the erasure again in a moment."""
    held = 0
    for table, column, ids in ((headers_t, headers_t.c.id, header_ids),
                               (details_t, details_t.c.id, detail_ids),
                               (documents_t, documents_t.c.detail_id, detail_ids)):
        if ids:
            held += conn.execute(select(func.count()).select_from(table).where(
                column.in_(ids), table.c.claimed_by.isnot(None),
                table.c.lease_until > now)).scalar_one()
    if held:
        raise ErasureBusyError(
            f"ERASURE_BUSY: {held} of the person's requests, entries or documents are being "
            "worked on right now (claimed by a job or daemon); nothing was erased: run the "
            "erasure again in a minute")


def _rename_idempotency_keys(conn: Connection, secrets: Sequence[str]) -> int:
    """A client's Idempotency-Key that names the person (``invoice-C123``) becomes a
    pseudonym of itself (still unique per key). A call replayed with the old key is no longer
    recognised: it makes a new request, for a reference no contact has any more."""
    if not secrets:
        return 0
    k = idempotency_t.c.key
    rows = conn.execute(select(idempotency_t.c.id, k).where(
        or_(*(k.contains(s, autoescape=True) for s in secrets)))).all()
    for row in rows:
        conn.execute(update(idempotency_t).where(idempotency_t.c.id == row.id)
                     .values(key=pseudonym(row.key)))
    return len(rows)


def _cancel_pending(conn: Connection, header_ids: list[int], detail_ids: list[int],
                    actor: str) -> int:
    """Requests not yet processed become Cancelled, entries not yet sent Rejected (ERASED)."""
    cancelled = 0
    description = "the person's personal data was erased"
    if header_ids:
        queue = WorkQueue(HEADERS, pending=lambda: headers_t.c.id.in_(header_ids))
        cancelled += len(transition_rows(
            conn, queue, headers_t.c.id.in_(header_ids)
            & (headers_t.c.status == HeaderStatus.AWAITING_PROCESSING),
            HeaderStatus.CANCELLED, actor, code=ERASED,
            values={"status_code": ERASED, "status_reason": description}))
    if detail_ids:
        queue = WorkQueue(DETAILS, pending=lambda: details_t.c.id.in_(detail_ids))
        cancelled += len(transition_rows(
            conn, queue, details_t.c.id.in_(detail_ids)
            & details_t.c.state.in_([s.value for s in PENDING_STATES]),
            DetailState.REJECTED, actor, code=ERASED,
            values={"error_code": ERASED, "error_description": description,
                    "completed_at": utcnow()}))
    return cancelled


def _recipient_pseudonym(key: str | None) -> str | None:
    return None if key is None else pseudonym(key)


def erase_contact(conn: Connection, settings: Settings, ref: str, *,
                  actor: str) -> ErasureResult:
    """Erase the personal data of the person ``ref`` (in ``conn``'s transaction)."""
    alias = pseudonym(ref)
    now = utcnow()
    c = contacts_t.c
    contact = conn.execute(select(contacts_t).where(c.ref == ref)).first()
    contact_ids = [contact.id] if contact is not None else []
    # Locked (PostgreSQL) so that no job claims them meanwhile; one already claimed refuses.
    header_ids = _ids(conn, select(headers_t.c.id).where(headers_t.c.contact_ref == ref)
                      .with_for_update())
    detail_where = [details_t.c.header_id.in_(header_ids)] if header_ids else []
    if contact_ids:
        detail_where.append(details_t.c.contact_id.in_(contact_ids))
    details = conn.execute(select(details_t.c.id, details_t.c.address)
                           .where(or_(*detail_where)).with_for_update()
                           ).all() if detail_where else []
    detail_ids = [d.id for d in details]
    _refuse_if_held(conn, header_ids, detail_ids, now)
    addresses = conn.execute(select(addresses_t.c.id, addresses_t.c.value).where(
        addresses_t.c.contact_id.in_(contact_ids))).all() if contact_ids else []
    secrets = [ref, *(a.value for a in addresses), *(d.address for d in details if d.address)]
    for a in addresses:  # a postal address: each of its lines too
        secrets.extend(line for line in a.value.splitlines() if len(line.strip()) >= 6)
    if contact is not None:
        secrets.append(contact.name)
    mask, found = _masker(secrets)
    notifications = _ids(conn, select(notifications_t.c.id)
                         .where(notifications_t.c.contact_ref == ref))
    skipped = _ids(conn, select(skipped_t.c.id).where(skipped_t.c.contact_ref == ref))
    members = _ids(conn, select(members_t.c.id).where(members_t.c.member_ref == ref))
    record = conn.execute(select(erasures_t).where(erasures_t.c.pseudonym == alias)).first()
    if not (contact or header_ids or detail_ids or notifications or skipped or members):
        if record is not None:
            return ErasureResult(alias, record.erased_at, record.erased_by,
                                 dict(record.counts or {}), already=True)
        raise NothingToEraseError(f"UNKNOWN_CONTACT: no contact, request or notification has "
                                  f"reference {ref!r} (nothing erased); check the reference")

    counts: dict[str, int] = {"cancelled": _cancel_pending(conn, header_ids, detail_ids,
                                                           actor)}
    counts["documents"], counts["stored_copies"] = _erase_documents(conn, settings, detail_ids,
                                                                    now, mask)
    counts.update(_erase_entries(conn, header_ids, detail_ids, contact_ids, now, mask, alias))
    counts["notifications"] = _erase_notifications(conn, notifications, alias)
    counts.update(_erase_lists(conn, skipped, members, alias, mask))
    # What the pipeline answered and summed up may quote the person (a stored API answer).
    counts["api_answers"] = _rewrite_json(conn, idempotency_t, "response", found, mask)
    counts["api_keys_named"] = _rename_idempotency_keys(conn, found)
    counts["run_summaries"] = _rewrite_json(conn, runs_t, "summary", found, mask)
    counts["feedback"] = _erase_feedback(conn, detail_ids, [a.value for a in addresses] +
                                         [d.address for d in details if d.address])
    counts["addresses"] = len(addresses)
    counts["contacts"] = len(contact_ids)
    if addresses:
        conn.execute(delete(addresses_t).where(addresses_t.c.contact_id.in_(contact_ids)))
    if contact is not None:
        taken = conn.execute(select(c.id).where(c.ref == alias)).first()
        # The same reference erased before, then made again: a second pseudonymous contact.
        new_ref = alias if taken is None else f"{alias}-{contact.id}"
        conn.execute(update(contacts_t).where(c.id == contact.id).values(
            ref=new_ref, name=MASK, preferred_language=None, data=None,
            opt_in_direct_marketing=False, opt_in_affiliate_marketing=False))
    counts = {k: v for k, v in counts.items() if v}
    result = _record(conn, record, alias, now, actor, counts)
    # The contact by its internal id and pseudonym only: the audit log holds no personal data.
    audit.record(conn, actor=actor, action="contact.erase", target_kind="contact",
                 target_id=contact.id if contact is not None else None,
                 change={"pseudonym": alias, "counts": counts})
    log.info("contacts.erased", pseudonym=alias, actor=actor, counts=counts)
    return result


def _erase_documents(conn: Connection, settings: Settings, detail_ids: list[int], now: Any,
                     mask: Any) -> tuple[int, int]:
    """Delete the entries' documents from their stores, then their content in the database;
    (documents erased, copies deleted from stores). A failing store stops the erasure."""
    if not detail_ids:
        return 0, 0
    d = documents_t.c
    docs = conn.execute(select(d.id, d.storage_backend, d.location, d.error_description)
                        .where(d.detail_id.in_(detail_ids),
                               or_(d.content.isnot(None), d.location.isnot(None),
                                   d.purged_at.is_(None)))).all()
    stores: dict[str, DocumentStore] = {}
    try:
        removed, failed = delete_stored(stores, settings, docs)
    finally:
        close_stores(stores)
    if failed:
        backend, err = next(iter(failed.items()))
        raise ErasureStoreError(f"{err.code}: the {backend} document store failed while "
                                f"deleting the person's documents ({err.description}); "
                                "nothing was erased: run the erasure again")
    for doc in docs:
        conn.execute(update(documents_t).where(d.id == doc.id).values(
            content=None, location=None, purged_at=now, purged_by=PURGED_BY,
            error_description=mask(doc.error_description)))
    stored = sum(1 for doc in docs if doc.storage_backend and doc.location and doc.id in removed)
    return len(docs), stored


def _erase_entries(conn: Connection, header_ids: list[int], detail_ids: list[int],
                   contact_ids: list[int], now: Any, mask: Any, alias: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    if header_ids:
        update_content(conn, HEADERS, headers_t.c.id.in_(header_ids), {
            "contact_ref": alias, "entities": None, "params": None, "idempotency_key": None})
        _rewrite_text(conn, HEADERS, "status_reason", headers_t.c.id.in_(header_ids), mask)
    counts["requests"] = len(header_ids)
    if detail_ids:
        update_content(conn, DETAILS, details_t.c.id.in_(detail_ids), {
            "address": None, "subject": None, "body": None, "purged_at": now,
            "purged_by": PURGED_BY})
        _rewrite_text(conn, DETAILS, "error_description", details_t.c.id.in_(detail_ids),
                      mask)
        counts["tracking_links"], counts["tracking_events"] = remove_tracking(conn, detail_ids)
    counts["entries"] = len(detail_ids)
    logged = [comms_t.c.detail_id.in_(detail_ids)] if detail_ids else []
    if contact_ids:
        logged.append(comms_t.c.contact_id.in_(contact_ids))
        counts["link_actions"] = conn.execute(
            update(link_actions_t).where(link_actions_t.c.contact_id.in_(contact_ids),
                                         link_actions_t.c.data.isnot(None))
            .values(data=None)).rowcount
    if logged:
        counts["communications"] = conn.execute(
            update(comms_t).where(or_(*logged)).values(
                subject=None, content=None, purged_at=now, purged_by=PURGED_BY)).rowcount
    return counts


def _erase_lists(conn: Connection, skipped: list[int], members: list[int], alias: str,
                 mask: Any) -> dict[str, int]:
    """The recipients runs and rules skipped, and stored lists' memberships (deleted)."""
    for row in conn.execute(select(skipped_t.c.id, skipped_t.c.recipient_key,
                                   skipped_t.c.reason).where(skipped_t.c.id.in_(skipped))):
        conn.execute(update(skipped_t).where(skipped_t.c.id == row.id).values(
            contact_ref=alias, recipient_key=_recipient_pseudonym(row.recipient_key),
            reason=mask(row.reason) or ""))
    if members:
        conn.execute(delete(members_t).where(members_t.c.id.in_(members)))
    return {"skipped_recipients": len(skipped), "segment_members": len(members)}


def _record(conn: Connection, record: Any, alias: str, now: Any, actor: str,
            counts: dict[str, int]) -> ErasureResult:
    """Insert the erasure's record; erased before, what was found since is added to it."""
    if record is None:
        conn.execute(erasures_t.insert().values(pseudonym=alias, erased_at=now,
                                                erased_by=actor, counts=counts))
        return ErasureResult(alias, now, actor, counts)
    total = dict(record.counts or {})
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v
    conn.execute(update(erasures_t).where(erasures_t.c.id == record.id).values(counts=total))
    return ErasureResult(alias, record.erased_at, record.erased_by, total)


def _erase_notifications(conn: Connection, ids: list[int], alias: str) -> int:
    if not ids:
        return 0
    for row in conn.execute(select(notifications_t.c.id, notifications_t.c.recipient_key)
                            .where(notifications_t.c.id.in_(ids))):
        conn.execute(update(notifications_t).where(notifications_t.c.id == row.id).values(
            contact_ref=alias, data=None, recipient_key=_recipient_pseudonym(row.recipient_key)))
    return len(ids)


def erase(engine: Engine, settings: Settings, ref: str, *, actor: str) -> ErasureResult:
    """:func:`erase_contact` in its own transaction."""
    with engine.begin() as conn:
        return erase_contact(conn, settings, ref, actor=actor)


def _erase_feedback(conn: Connection, detail_ids: list[int], values: list[str]) -> int:
    """The feedback loop's records of the person: bounce and complaint reports of their
    entries, and their addresses on the suppression list (an erased person is not written
    to again under that contact; the list forgets the address with them)."""
    removed = 0
    for i in range(0, len(detail_ids), 500):
        removed += conn.execute(delete(feedback_t).where(
            feedback_t.c.detail_id.in_(detail_ids[i:i + 500]))).rowcount or 0
    keys: set[tuple[str, str]] = set()
    for kind in sup.SUPPRESSIBLE:
        for value in values:
            try:
                keys.add((str(kind), sup.address_key(kind, value)))
            except sup.SuppressionError:
                continue
    for media_name, key in sorted(keys):
        for table in (suppressions_t, soft_bounces_t):
            removed += conn.execute(delete(table).where(
                table.c.address == key, table.c.media == media_name)).rowcount or 0
    return removed
