"""Consent and data protection (SPEC): who may receive a communication of a classification.

* Financial and customer-care communications cannot be opted out of: always allowed.
* Marketing and reward communications need the contact's opt-in, as the notification type or
  event rule says: ``respect_consent`` = ``direct`` (the default), ``affiliate``, ``both`` or
  ``none``; a notification type with ``apply_data_protection = false`` communicates regardless
  of the contact's preferences (the seeds' "Apply Contact Information Data Protection" switch).
* A request header with ``override_consent`` is an important message: consent is not checked.

The same function decides for notification runs (before a header is written, the skip is
recorded in ``skipped_recipients``) and for the Comms Monitor (the header ends Opted Out),
so a contact who opts out between the run and the send is still respected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from comms_pipeline.core.states import Classification, ErrorCode
from comms_pipeline.store.models import Notification, NotificationType, rules_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

#: Classifications a contact can opt out of.
OPTABLE = frozenset({Classification.MARKETING, Classification.REWARD})
RESPECT = ("direct", "affiliate", "both", "none")
NOT_APPLIED = "none"


@dataclass(frozen=True)
class Policy:
    """Which opt-ins an optable communication needs, and who said so."""

    respect: str = "direct"
    source: str = "default"
    #: The classification of what produced the communication (a notification type), which
    #: may make it optable even when its template is not: see :func:`stricter`.
    classification: str | None = None


DEFAULT = Policy()


@dataclass(frozen=True)
class Skip:
    """Why a recipient is not communicated with: an error code and a readable reason."""

    code: str
    reason: str


def stricter(first: str | None, second: str | None) -> str | None:
    """Of two classifications, the one a contact can opt out of, if either is."""
    return first if first in OPTABLE else second


def policy_for_type(code: str, apply_data_protection: bool,
                    respect_consent: str | None, classification: str | None = None) -> Policy:
    if not apply_data_protection:
        return Policy(NOT_APPLIED, f"notification type {code}", classification)
    return Policy(respect_consent or "direct", f"notification type {code}", classification)


def policy_for_rule(code: str, respect_consent: str | None) -> Policy:
    return Policy(respect_consent or "direct", f"event rule {code}")


def refusal(classification: str | None, *, direct: bool, affiliate: bool,
            policy: Policy | None = None, override: bool = False) -> Skip | None:
    """``None`` when the communication may be sent, else the :class:`Skip` saying why not."""
    if override or classification not in OPTABLE:
        return None
    policy = policy or DEFAULT
    if policy.respect == NOT_APPLIED:
        return None
    missing = []
    if policy.respect in ("direct", "both") and not direct:
        missing.append("direct")
    if policy.respect in ("affiliate", "both") and not affiliate:
        missing.append("affiliate")
    if not missing:
        return None
    return Skip(ErrorCode.OPTED_OUT,
                f"the contact has not opted in to {' and '.join(missing)} marketing")


def load_policies(conn: Connection, headers: Sequence[Row]) -> dict[int, Policy]:
    """The consent policy of each header produced by an event rule or a notification run."""
    rules = {h.rule_code for h in headers if getattr(h, "rule_code", None)}
    notified = {h.notification_id for h in headers if getattr(h, "notification_id", None)}
    by_rule: dict[str, Policy] = {}
    by_notification: dict[int, Policy] = {}
    if rules:
        t = rules_t
        for r in conn.execute(select(t.c.code, t.c.respect_consent).where(t.c.code.in_(rules))):
            by_rule[r.code] = policy_for_rule(r.code, r.respect_consent)
    if notified:
        n, nt = Notification.__table__, NotificationType.__table__
        q = (select(n.c.id, nt.c.code, nt.c.apply_data_protection, nt.c.respect_consent,
                    nt.c.classification)
             .join(nt, nt.c.id == n.c.type_id).where(n.c.id.in_(notified)))
        for r in conn.execute(q):  # type: ignore[assignment]
            by_notification[r.id] = policy_for_type(r.code, bool(r.apply_data_protection),
                                                    r.respect_consent, r.classification)
    found: dict[int, Policy] = {}
    for h in headers:
        policy = (by_notification.get(getattr(h, "notification_id", None) or 0)
                  or by_rule.get(getattr(h, "rule_code", None) or ""))
        if policy is not None:
            found[h.id] = policy
    return found
