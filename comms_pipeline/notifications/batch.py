"""One batch of a notification run: who is notified, who is skipped and why, and the rows.

Per batch: the segment filter (one query), the conditions (in Python, on the recipient's
data), the contacts (one query for their consent flags), consent; then the rows to write — a
notification and a request header per notified recipient, a skipped-recipient record per
skipped one. :func:`insert_notifications` and :data:`HEADERS_FROM_NOTIFICATIONS` are the
writes, which :mod:`comms_pipeline.notifications.runs` makes in one transaction per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.states import ErrorCode
from comms_pipeline.notifications import conditions as cond
from comms_pipeline.notifications.consent import policy_for_type, refusal, stricter
from comms_pipeline.notifications.segments import describe, members_among
from comms_pipeline.store.dialect import bulk_insert, entities_json_sql
from comms_pipeline.store.models import contacts_t, notifications_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.notifications.population import Recipient
    from comms_pipeline.notifications.types import TypeInfo


#: Reason codes of skipped recipients besides the monitor's (OPTED_OUT, UNKNOWN_CONTACT).
CONDITION_NOT_MET = ErrorCode.CONDITION_NOT_MET
NOT_IN_SEGMENT = ErrorCode.NOT_IN_SEGMENT
NO_CONTACT_REF = ErrorCode.NO_CONTACT_REF
KEY_TOO_LONG = ErrorCode.RECIPIENT_KEY_TOO_LONG
#: Longest recipient key: it is part of the header's idempotency key (200 characters).
MAX_KEY = 180
#: Which counter of the run each reason code adds to.
COUNTER: dict[str, str] = {
    CONDITION_NOT_MET: "skipped_condition", NOT_IN_SEGMENT: "skipped_condition",
    ErrorCode.OPTED_OUT: "skipped_consent", ErrorCode.UNKNOWN_CONTACT: "errors",
    NO_CONTACT_REF: "errors", KEY_TOO_LONG: "errors"}


@dataclass
class Skipped:
    recipient: Recipient
    code: str
    reason: str


@dataclass
class Decisions:
    notified: list[Recipient] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter(created=len(self.notified))
        for s in self.skipped:
            counts[COUNTER.get(s.code, "errors")] += 1
        return counts


@dataclass(frozen=True)
class RunContext:
    """What every batch of one run needs to know."""

    type: TypeInfo
    template_classification: str
    today: date

    @property
    def classification(self) -> str:
        """The stricter of the type's and the template's: either may make it optable."""
        return stricter(self.type.classification, self.template_classification) or ""


def decide(ctx: RunContext, recipients: Sequence[Recipient], *, comms: Connection,
           business: Connection | None) -> Decisions:
    out = Decisions()
    t = ctx.type
    remaining = list(recipients)
    if t.segment is not None and (t.population_query or "").strip():
        members = members_among(t.segment, [x for r in remaining
                                            for x in (r.contact_ref, str(r.key))],
                                comms=comms, business=business)
        kept = []
        for r in remaining:
            if r.contact_ref in members or str(r.key) in members:
                kept.append(r)
            else:
                out.skipped.append(Skipped(r, NOT_IN_SEGMENT, describe(t.segment)))
        remaining = kept
    kept = []
    for r in remaining:
        why = cond.evaluate(t.conditions, r.data, ctx.today)
        if why is None:
            kept.append(r)
        else:
            out.skipped.append(Skipped(r, CONDITION_NOT_MET, why))
    refs = sorted({r.contact_ref for r in kept if r.contact_ref})
    flags = {row.ref: row for row in comms.execute(
        select(contacts_t.c.ref, contacts_t.c.opt_in_direct_marketing,
               contacts_t.c.opt_in_affiliate_marketing).where(contacts_t.c.ref.in_(refs)))
             } if refs else {}
    policy = policy_for_type(t.code, t.apply_data_protection, t.respect_consent)
    for r in kept:
        if len(str(r.key)) > MAX_KEY:
            out.skipped.append(Skipped(r, KEY_TOO_LONG, f"the recipient key is longer than "
                                                        f"{MAX_KEY} characters"))
            continue
        if not r.contact_ref:
            out.skipped.append(Skipped(r, NO_CONTACT_REF, "the population row names no contact"))
            continue
        contact = flags.get(r.contact_ref)
        if contact is None:
            out.skipped.append(Skipped(r, ErrorCode.UNKNOWN_CONTACT,
                                       f"no contact with reference {r.contact_ref!r}"))
            continue
        skip = refusal(ctx.classification, direct=bool(contact.opt_in_direct_marketing),
                       affiliate=bool(contact.opt_in_affiliate_marketing), policy=policy)
        if skip is None:
            out.notified.append(r)
        else:
            out.skipped.append(Skipped(r, skip.code, skip.reason))
    return out


def notification_rows(ctx: RunContext, run_id: int, first_seq: int,
                      notified: Sequence[Recipient], now: datetime,
                      run_key: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for i, r in enumerate(notified):
        number = f"N{run_id}-{first_seq + i:07d}"
        rows.append({"run_id": run_id, "type_id": ctx.type.id, "run_key": run_key,
                     "number": number,
                     "recipient_key": str(r.key)[:200], "contact_ref": r.contact_ref,
                     "data": {"number": number, "type": ctx.type.code, **r.data},
                     "created_at": now})
    return rows


NOTIFICATION_COLUMNS = ("run_id", "type_id", "run_key", "number", "recipient_key",
                        "contact_ref", "data", "created_at")


def insert_notifications(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Write a batch of notifications (``COPY`` on PostgreSQL: see :func:`dialect.bulk_insert`)."""
    bulk_insert(conn, notifications_t, [{c: r[c] for c in NOTIFICATION_COLUMNS} for r in rows])


#: The request headers of a batch, derived in the database from the notifications just
#: written (this run's ids between the highest before and after the insert): the data travels
#: once, and
#: the entities are ``{"notification": data}`` plus every nested entity of the data at the top
#: level too (``#wallet.number`` as well as ``#notification.wallet.number``). Both bounds
#: and ``run_id + 0`` keep the planners on the primary key range (a batch of rows), never the
#: run_id index (every notification of the run so far: quadratic over a long run) nor a
#: sequential scan chosen on stale statistics.
HEADERS_FROM_NOTIFICATIONS = """
INSERT INTO request_headers (template_code, contact_ref, entities, notification_id, expires_at,
    idempotency_key, send_to, priority, status, override_consent, attempts, details_created,
    created_at)
SELECT :template_code, n.contact_ref, {entities}, n.id, :expires_at,
    'notif-' || :run_key || '-' || n.recipient_key, 'primary', :priority,
    'awaiting_processing', false, 0, 0, :now
FROM notifications n
WHERE n.id > :after_id AND n.id <= :upto_id AND n.run_id + 0 = :run_id
ORDER BY n.id
"""


def headers_statement(bind: Engine | Connection) -> str:
    """The batch's header INSERT … SELECT in ``bind``'s dialect (its JSON functions)."""
    return HEADERS_FROM_NOTIFICATIONS.format(entities=entities_json_sql(bind, "n.data"))


def header_params(ctx: RunContext, run_id: int, after_id: int, upto_id: int, now: datetime,
                  priority: int, started_at: datetime | None = None) -> dict[str, Any]:
    """The batch's header statement parameters; the expiry period counts from the run's
    start (``started_at``), so every communication of one run expires together."""
    t = ctx.type
    base = started_at or now
    return {"template_code": t.template_code, "run_id": run_id, "run_key": str(run_id),
            "after_id": after_id, "upto_id": upto_id, "now": now, "priority": priority,
            "expires_at": base + timedelta(hours=t.expiry_hours) if t.expiry_hours else None}


def skipped_rows(run_id: int, skipped: Sequence[Skipped], now: datetime) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "contact_ref": s.recipient.contact_ref or "",
             "recipient_key": str(s.recipient.key)[:200], "reason_code": s.code,
             "reason": s.reason, "at": now} for s in skipped]
