"""An operator's retry of Rejected or Expired queue entries (``comms queue retry``).

A retry must not make things worse. An entry whose rejection is permanent — its address is
invalid, its data is missing, its template failed, the contact is suppressed or opted out —
would fail again (or reach the wrong person) if it were simply queued again, so it is refused
with the reason unless the operator insists (``force``). Each retry re-resolves the contact's
address as the Comms Monitor does: an entry rejected for its address goes out to the
corrected one (no ``force`` needed once it is corrected). An entry rejected before its content
was made has nothing to send: an email or letter goes back to its merge (which makes the
document for the address now on file); an SMS, push or external text is merged here, as the
Comms Monitor merges it, and refused with the merge's reason if that fails again.

The moves go through :func:`comms_pipeline.queue.claims.transition_rows` (compare-and-set on the
state the entry was read in, history and the queue's ``on_change`` hook included), one
entry at a time: retries are few, and each may carry its own new address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, delete, select

from comms_pipeline.core.addressing import InvalidAddress, normalise, select_targets
from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.retention import removal_notice
from comms_pipeline.core.states import ADDRESS_KIND, DetailState, ErrorCode, Media
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline.lookups import load_contacts
from comms_pipeline.queue.claims import WorkQueue, transition_rows
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.store.models import details_t, documents_t, headers_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: The entry's address was wrong or missing: retried once the contact's address changed.
ADDRESS_CODES = frozenset({ErrorCode.INVALID_ADDRESS, ErrorCode.NO_ADDRESS,
                           "0x0000000B"})  # SMPP ESME_RINVDSTADR: invalid destination
#: The content could not be made right: the same data and template fail the same way.
CONTENT_CODES = frozenset({"MISSING_DATA", ErrorCode.TEMPLATE_ERROR, ErrorCode.NO_VARIANT,
                           ErrorCode.TOO_LONG, ErrorCode.ENTITY_DATA,
                           ErrorCode.UNKNOWN_TEMPLATE, ErrorCode.UNKNOWN_MEDIA,
                           ErrorCode.MEDIA_NOT_ALLOWED, ErrorCode.INCOMING_NOT_SUPPORTED,
                           ErrorCode.RENDERER_CRASHED})
#: The contact must not (or cannot) receive it.
RECIPIENT_CODES = frozenset({"SUPPRESSED", ErrorCode.OPTED_OUT, ErrorCode.UNKNOWN_CONTACT})
PERMANENT_CODES = ADDRESS_CODES | CONTENT_CODES | RECIPIENT_CODES
RETRYABLE_STATES = (DetailState.REJECTED, DetailState.EXPIRED)
#: Media whose content is a merged document (made again by their merge job).
MERGED_LATER = (Media.EMAIL, Media.LETTER)


@dataclass
class RetryResult:
    retried: list[int] = field(default_factory=list)
    #: Entry id -> why it was not retried, in the operator's words.
    refused: dict[int, str] = field(default_factory=dict)
    #: Entry id -> (old address, new address) for entries sent to a corrected address.
    readdressed: dict[int, tuple[str | None, str]] = field(default_factory=dict)


def _retry_queue() -> WorkQueue:
    return WorkQueue(DETAILS,
                     pending=lambda: details_t.c.state.in_([s.value for s in RETRYABLE_STATES]))


def _why_permanent(code: str) -> str:
    if code in ADDRESS_CODES:
        return "the address was refused and the contact's address has not changed since"
    if code in CONTENT_CODES:
        return ("its content could not be made; retrying makes the same again — fix the "
                "data or the template and trigger the communication again")
    return "the contact must not receive it (suppressed or opted out) or is unknown"


def _new_address(row: Any, header: Any, contact: Any, region: str) -> tuple[str | None, str]:
    """The address the Comms Monitor would choose now, normalised; or None and why not."""
    kind = ADDRESS_KIND[Media(row.media)]
    if contact is None:
        return None, "the entry's contact no longer exists"
    chosen, why = select_targets(contact.addresses, kind, header.send_to if header else
                                 "primary", header.address_type if header else None)
    if not chosen:
        return None, why or "the contact has no address for it"
    same_type = [a for a in chosen if a.address_type == row.address_type] or chosen
    values = [a.value for a in same_type]
    value = row.address if row.address in values else values[0]
    try:
        return normalise(kind, value, region), ""
    except InvalidAddress as exc:
        return None, f"the contact's address is not valid: {exc}"


class _Remerge:
    """Makes the text of an SMS, push or external entry that was rejected before its merge,
    with the Comms Monitor's own merge (same data, template, limits)."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        from comms_pipeline.jobs.monitor import MonitorJob
        from comms_pipeline.pipeline.media import load_external_limits, load_media_rules

        self.conn = conn
        self.job = MonitorJob(settings, conn.engine)
        self.job.media_rules = load_media_rules(conn)
        self.job.external_limits = load_external_limits(conn)

    def __call__(self, row: Any, header: Any, contact: Any) -> tuple[dict[str, Any] | None, str]:
        from comms_pipeline.jobs.monitor import Rejection
        from comms_pipeline.pipeline.lookups import load_templates

        if header is None or contact is None or not header.template_code:
            return None, "its request or contact is gone"
        template = load_templates(self.conn, [header.template_code]).get(header.template_code)
        if template is None:
            return None, f"template {header.template_code!r} is no longer active"
        variant = template.variant_for(header.language, contact.language)
        if variant is None:
            return None, f"template {template.code!r} has no variant for the contact"
        try:
            return self.job.merge(header, contact, template, variant, row.media), ""
        except Rejection as rej:
            return None, f"its text cannot be made: {rej.code}: {rej.description}"


def _target(conn: Connection, row: Any, document: Any, address_changed: bool,
            code: str, has_body: bool) -> tuple[str | None, str]:
    """The stage the entry goes back to, or None and why it cannot."""
    if row.media in MERGED_LATER:
        if document is not None and address_changed:
            if document.stored_at is not None or (
                    document.claimed_by is not None and document.lease_until is not None
                    and document.lease_until > utcnow()):
                return None, ("its merged document, already stored, names the old address: "
                              "trigger the communication again")
            # The unsent document names the old address: the merge makes it again.
            conn.execute(delete(documents_t).where(documents_t.c.id == document.id))
            document = None
        return (DetailState.AWAITING_SEND if document is not None
                else DetailState.AWAITING_MERGE), ""
    if not has_body:
        return None, (f"rejected {code or row.state} before its text was made: nothing to "
                      f"send; trigger the communication again")
    if row.external_system_id is not None:
        return DetailState.AWAITING_EXTERNAL, ""
    return DetailState.AWAITING_SEND, ""


def retry_entries(conn: Connection, entry_ids: Sequence[int], *, force: bool = False,
                  actor: str = "cli:retry", settings: Settings | None = None) -> RetryResult:
    """Queue Rejected or Expired entries again where that can work; say why not otherwise.

    ``settings`` (the pipeline's) let a text rejected before its merge be merged now."""
    result = RetryResult()
    region = settings.monitor.default_country if settings is not None else "GB"
    remerge = _Remerge(conn, settings) if settings is not None else None
    rows = conn.execute(select(details_t).where(details_t.c.id.in_(list(entry_ids)))).all()
    found = {r.id: r for r in rows}
    for missing in sorted(set(entry_ids) - set(found)):
        result.refused[missing] = "no such queue entry"
    contacts = load_contacts(conn, ids={r.contact_id for r in rows if r.contact_id})
    headers = {h.id: h for h in conn.execute(select(headers_t).where(
        headers_t.c.id.in_(sorted({r.header_id for r in rows}))))}
    documents = {d.detail_id: d for d in conn.execute(select(
        documents_t.c.id, documents_t.c.detail_id, documents_t.c.stored_at,
        documents_t.c.claimed_by, documents_t.c.lease_until).where(
        documents_t.c.detail_id.in_(list(found))))}
    queue = _retry_queue()
    for row in rows:
        removed = removal_notice(row.purged_at, row.purged_by)
        why = (f"its content was {removed}: nothing to send again" if removed
               else _retry_one(conn, queue, row, headers.get(row.header_id),
                               contacts.get(row.contact_id), documents.get(row.id), force,
                               actor, region, result, remerge))
        if why:
            result.refused[row.id] = why
    if result.retried or result.refused:
        audit.record(conn, action="queue.retry", target_kind="queue_entry",
                     target_id=result.retried[0] if len(result.retried) == 1 else None,
                     change={"retried": sorted(result.retried),
                             "refused": sorted(result.refused), "force": force,
                             "readdressed": sorted(result.readdressed)})
    log.info("queue.retried", retried=len(result.retried), refused=len(result.refused),
             readdressed=len(result.readdressed), force=force, actor=actor)
    return result


def _retry_one(conn: Connection, queue: WorkQueue, row: Any, header: Any, contact: Any,
               document: Any, force: bool, actor: str, region: str,
               result: RetryResult, remerge: _Remerge | None) -> str | None:
    """Move one entry back to work; return why not, if not."""
    if row.state not in RETRYABLE_STATES:
        return f"it is {row.state}, not Rejected or Expired (left alone)"
    code = row.error_code or ""
    values: dict[str, Any] = {"attempts": 0, "next_attempt_at": None, "error_code": None,
                              "error_description": None, "expires_at": None,
                              "completed_at": None, "updated_at": utcnow()}
    address_changed = False
    if row.media in ADDRESS_KIND:
        new, problem = _new_address(row, header, contact, region)
        if new is None:
            if not force or code in ADDRESS_CODES:
                return (f"rejected {code or row.state}: {problem}; correct the contact's "
                        f"address first")
        elif new != row.address:
            address_changed = True
            values["address"] = new
    if code in PERMANENT_CODES and not force and not (code in ADDRESS_CODES
                                                      and address_changed):
        return (f"rejected {code}, a permanent rejection: {_why_permanent(code)} "
                f"(--force retries it anyway)")
    if row.media not in MERGED_LATER and not row.body and remerge is not None:
        merged, why = remerge(row, header, contact)
        if merged is None:
            return f"rejected {code or row.state} before its text was made; {why}"
        values.update(merged)
    target, why = _target(conn, row, document, address_changed, code,
                          bool(row.body or values.get("body")))
    if target is None:
        return why
    where = and_(details_t.c.id == row.id, details_t.c.state == row.state)
    changed = transition_rows(conn, queue, where, target, actor, values=values)
    if not changed:
        return "it changed meanwhile (another operator or worker): look again"
    result.retried.append(row.id)
    if address_changed:
        result.readdressed[row.id] = (row.address, values["address"])
    return None
