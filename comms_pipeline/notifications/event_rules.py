"""Event-based communications: a trigger that names an event is expanded by the event rules.

A request header with ``event`` set and no ``template_code`` (``event = "posted"`` with
entities ``{"payment": ...}``, or explicitly ``event = "payment.posted"``) is matched against
the active rules of that entity and event. Several rules may match; each that passes its
segment and its conditions (at least one must hold, as the seeds say) creates one child
header per template (email and/or SMS) with ``copy_of_id`` = the trigger and ``rule_code`` =
the rule, addressed by the rule's send-to setting. The trigger itself becomes Processed with
no details of its own and a reason naming the rules; with no rule that applies it is Not Sent
with the reason. Recipients a rule leaves out (segment, conditions, consent) are recorded in
``skipped_recipients``.

The Comms Monitor calls :meth:`EventRules.prepare` once per batch (the rules, templates and
segment memberships it needs, in a few queries) and :meth:`EventRules.expand` per header;
the children are written by :func:`insert_expansions` in the monitor's finishing transaction,
only if the trigger's claim is still held.

An event is expanded once per event number: a child's idempotency key names the trigger's
``event_number`` (when it has one), the contact, the rule and the template, so a second
trigger of the same event (a workflow that posts it again, a resolved event released twice)
makes no second child — it ends Processed with a reason naming the trigger that made them —
and the headers' unique idempotency key stands behind that for monitors running side by side.

A header a workflow created "on create" in status ``awaiting_event_resolution`` waits until
:func:`resolve_event` moves it (and every header of the same event number) to Awaiting
Processing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import insert, select

from comms_pipeline.core.request_origin import foreign, origin_system
from comms_pipeline.core.states import ErrorCode, HeaderStatus
from comms_pipeline.notifications import conditions as cond
from comms_pipeline.notifications.batch import CONDITION_NOT_MET, NOT_IN_SEGMENT
from comms_pipeline.notifications.consent import policy_for_rule, refusal
from comms_pipeline.notifications.population import reader_engine
from comms_pipeline.notifications.segments import members_among
from comms_pipeline.notifications.types import SegmentInfo, segment_info
from comms_pipeline.pipeline.entity_sources import (
    EntitySourceError,
    load_sources,
    needed_entities,
    resolve_entities,
)
from comms_pipeline.queue.births import insert_new
from comms_pipeline.queue.claims import Outcome, transition_rows
from comms_pipeline.queue.machine import HEADERS
from comms_pipeline.queue.work_queues import header_queue
from comms_pipeline.settings.notifications import business_url
from comms_pipeline.store.models import (
    headers_t,
    rules_t,
    skipped_t,
    templates_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from comms_pipeline.pipeline.lookups import ContactInfo

log = structlog.get_logger(__name__)

NO_EVENT_RULE = ErrorCode.NO_EVENT_RULE
#: Header columns a child copies from its trigger.
COPIED = ("contact_ref", "event", "event_number", "language", "entities", "params",
          "expires_at", "priority", "override_consent", "requested_by_system_id", "is_test")


def normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def split_event(event: str) -> tuple[str | None, str]:
    """``"payment.posted"`` -> ``("payment", "posted")``; ``"posted"`` -> ``(None, "posted")``."""
    entity, dot, name = event.rpartition(".")
    return (normalise(entity) if dot and entity else None), normalise(name)


@dataclass(frozen=True)
class RuleInfo:
    id: int
    code: str
    entity: str
    event: str
    templates: tuple[str, ...]
    send_to: str
    address_type: str | None
    presentment: bool
    segment: SegmentInfo | None
    conditions: cond.ConditionSet
    respect_consent: str | None


@dataclass
class EventExpansion:
    """What an event trigger produced: child headers and skipped-recipient records."""

    children: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def child_key(h: Row, rule_code: str, template: str) -> str:
    """The idempotency key of the child a rule makes from trigger ``h``: per event number
    when the trigger has one (an event is expanded once), else per trigger."""
    if h.event_number:
        return f"evt:{h.event_number}:{h.contact_ref}:{rule_code}:{template}"[:200]
    return f"evt-{h.id}-{rule_code}-{template}"[:200]


def _presentment_type(entities: dict[str, Any], entity: str) -> str:
    """The address type of the account's presentment preferences (default ``billing``)."""
    for holder in (entities.get(entity), entities):
        account = holder.get("accounts_receivable") if isinstance(holder, dict) else None
        if isinstance(account, dict) and account.get("presentment_address_type"):
            return str(account["presentment_address_type"])
    return "billing"


class EventRules:
    """Matches event triggers to rules; one per Comms Monitor."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._reader: Engine | None = None
        self.rules: dict[str, list[RuleInfo]] = {}
        self.classifications: dict[str, str] = {}
        #: The external system each rule template delivers to (None: no external queue).
        self.targets: dict[str, int | None] = {}
        self.members: dict[int, set[str]] = {}
        self.today = date.today()
        self.sources = load_sources(settings)
        #: Each event trigger's entities, completed by the configured SQL entity sources (so
        #: a trigger carrying only ids meets conditions and segments on the business data).
        self.resolved: dict[int, dict[str, Any] | EntitySourceError] = {}
        #: Children already made, by idempotency key -> the trigger that made them.
        self.made: dict[str, int | None] = {}

    @staticmethod
    def wants(h: Row) -> bool:
        return bool(h.event) and not h.template_code

    def prepare(self, conn: Connection, headers: Sequence[Row],
                contacts: Mapping[str, Any] | None = None) -> None:
        """Load what expanding this batch's event triggers needs."""
        events = [h for h in headers if self.wants(h)]
        self.rules, self.members, self.today = {}, {}, date.today()
        self.resolved, self.made = {}, {}
        if not events:
            return
        names = {split_event(h.event)[1] for h in events}
        q = select(rules_t).where(rules_t.c.active.is_(True)).order_by(rules_t.c.code)
        segments: dict[int, SegmentInfo] = {}
        for r in conn.execute(q):
            if normalise(r.event) not in names:
                continue
            if r.segment_id is not None and r.segment_id not in segments:
                segments[r.segment_id] = segment_info(conn, r.segment_id)  # type: ignore[assignment]
            rule = RuleInfo(r.id, r.code, normalise(r.entity), normalise(r.event),
                            tuple(c for c in (r.email_template, r.sms_template) if c),
                            r.send_to or "primary", r.address_type,
                            bool(r.consider_presentment_preferences),
                            segments.get(r.segment_id) if r.segment_id else None,
                            cond.parse(r.conditions, "any"), r.respect_consent)
            self.rules.setdefault(rule.event, []).append(rule)
        codes = {c for rules in self.rules.values() for r in rules for c in r.templates}
        found = conn.execute(select(templates_t.c.code, templates_t.c.classification,
                                    templates_t.c.external_system_id)
                             .where(templates_t.c.code.in_(codes))).all() if codes else []
        self.classifications = {r.code: r.classification for r in found}
        self.targets = {r.code: r.external_system_id for r in found}
        for h in events:
            self.resolved[h.id] = self._resolve(h, (contacts or {}).get(h.contact_ref))
        self._load_members(conn, events, segments.values())
        self._load_made(conn, events)

    def _load_made(self, conn: Connection, events: Sequence[Row]) -> None:
        """The children already made for the batch's event numbers (by an earlier trigger)."""
        keys = {child_key(h, r.code, t) for h in events if h.event_number
                for r in self.matching(h) for t in r.templates}
        for chunk in (sorted(keys)[i:i + 500] for i in range(0, len(keys), 500)):
            self.made.update(conn.execute(
                select(headers_t.c.idempotency_key, headers_t.c.copy_of_id)
                .where(headers_t.c.idempotency_key.in_(chunk))).all())

    def _resolve(self, h: Row, contact: Any) -> dict[str, Any] | EntitySourceError:
        given = dict(h.entities or {})
        rules = self.matching(h)
        if not self.sources or not rules:
            return given
        try:
            return resolve_entities(
                self.sources, given, contact=contact.as_tag_data() if contact else None,
                default_url=self.settings.database_url, var_dir=self.settings.var_dir,
                wanted=needed_entities(r.entity for r in rules))
        except EntitySourceError as exc:
            return exc

    def entities(self, h: Row) -> dict[str, Any]:
        found = self.resolved.get(h.id)
        return found if isinstance(found, dict) else dict(h.entities or {})

    def _load_members(self, conn: Connection, events: Sequence[Row],
                      segments: Any) -> None:
        candidates = {h.contact_ref for h in events}
        for h in events:
            for data in self.entities(h).values():
                if isinstance(data, dict):
                    candidates.update(str(data[k]) for k in ("id", "number") if k in data)
        for segment in segments:
            if segment.kind == "sql":
                if self._reader is None:
                    self._reader = reader_engine(business_url(self.settings))
                with self._reader.connect() as business:
                    found = members_among(segment, candidates, comms=conn, business=business)
            else:
                found = members_among(segment, candidates, comms=conn, business=None)
            self.members[segment.id] = found

    def close(self) -> None:
        if self._reader is not None:
            self._reader.dispose()
            self._reader = None

    # -- expansion ------------------------------------------------------------------------
    def matching(self, h: Row) -> list[RuleInfo]:
        """The active rules of the trigger's event (only the one it names, with rule_code)."""
        entity, name = split_event(h.event)
        given = {normalise(k) for k in (h.entities or {})}
        named = getattr(h, "rule_code", None)
        return [r for r in self.rules.get(name, [])
                if (r.entity == entity if entity else r.entity in given)
                and (named is None or r.code == named)]

    def _excluded(self, rule: RuleInfo, h: Row) -> tuple[str, str] | None:
        if rule.segment is not None:
            data = self.entities(h).get(rule.entity)
            refs = {h.contact_ref} | ({str(data[k]) for k in ("id", "number") if k in data}
                                      if isinstance(data, dict) else set())
            if not refs & self.members.get(rule.segment.id, set()):
                return NOT_IN_SEGMENT, f"not a member of segment {rule.segment.code}"
        why = cond.evaluate(rule.conditions, self.entities(h), self.today)
        return (CONDITION_NOT_MET, why) if why else None

    def expand(self, h: Row, contact: ContactInfo | None, now: Any) -> Outcome:
        """The trigger's outcome; its payload (an :class:`EventExpansion`) holds the children."""
        if contact is None:
            return Outcome.done(h.id, HeaderStatus.ERROR, ErrorCode.UNKNOWN_CONTACT,
                                f"no contact with reference {h.contact_ref!r}")
        rules = self.matching(h)
        failed = self.resolved.get(h.id)
        if isinstance(failed, EntitySourceError):
            return Outcome.done(h.id, HeaderStatus.ERROR, ErrorCode.ENTITY_DATA, str(failed))
        if not rules:
            return Outcome.done(h.id, HeaderStatus.NOT_SENT, NO_EVENT_RULE,
                                f"no active event rule for event {h.event!r} of "
                                f"{', '.join(sorted(h.entities or {})) or 'no entity'}")
        out = EventExpansion()
        used, notes, repeated = [], [], set()
        for rule in rules:
            excluded = self._excluded(rule, h)
            if excluded is not None:
                out.skipped.append(self._skip(rule, h, *excluded, now))
                notes.append(f"{rule.code}: {excluded[1]}")
                continue
            before = len(out.skipped)
            made, again = self._children(rule, h, contact, now, out)
            repeated.update(again)
            if made:
                used.append(f"{rule.code} ({made})")
            elif again:
                continue
            else:
                reasons = dict.fromkeys(s["reason"] for s in out.skipped[before:])
                notes.append(f"{rule.code}: {'; '.join(reasons)}")
        reason = "; ".join(notes)
        if repeated and not used:
            origin = ", ".join(f"header {i}" for i in sorted(i for i in repeated if i))
            log.info("event_rules.already_expanded", header_id=h.id,
                     event_number=h.event_number)
            return Outcome.done(h.id, HeaderStatus.PROCESSED, details_created=0,
                                status_reason=f"event {h.event_number} was expanded already "
                                              f"(by {origin or 'an earlier trigger'}): "
                                              f"nothing sent again"
                                              + (f"; not applied: {reason}" if reason else ""),
                                payload=out)
        if not used:
            opted = all(s["reason_code"] == ErrorCode.OPTED_OUT for s in out.skipped)
            status = HeaderStatus.OPTED_OUT if opted else HeaderStatus.NOT_SENT
            code = ErrorCode.OPTED_OUT if opted else CONDITION_NOT_MET
            if out.skipped and all(s["reason_code"] == ErrorCode.FOREIGN_SYSTEM
                                   for s in out.skipped):
                code = ErrorCode.FOREIGN_SYSTEM
            return Outcome.done(h.id, status, code, f"no event rule applies: {reason}",
                                payload=out)
        text = f"expanded by event rule(s) {', '.join(used)}"
        log.info("event_rules.expanded", header_id=h.id, rules=len(used),
                 children=len(out.children))
        return Outcome.done(h.id, HeaderStatus.PROCESSED, details_created=0,
                            status_reason=text + (f"; not applied: {reason}" if reason else ""),
                            payload=out)

    def _children(self, rule: RuleInfo, h: Row, contact: ContactInfo, now: Any,
                  out: EventExpansion) -> tuple[int, set[int | None]]:
        """Add the rule's children for ``h``; return how many, and the triggers that made
        the ones this event number already has."""
        made, again = 0, set()
        policy = policy_for_rule(rule.code, rule.respect_consent)
        origin = origin_system(getattr(h, "idempotency_key", None))
        for template in rule.templates:
            if foreign(origin, self.targets.get(template)):
                # A system's trigger never writes into another system's queue, whatever
                # the rules say (the Web API refuses such a request; this catches the rest).
                log.warning("event_rules.foreign_system", header_id=h.id, rule=rule.code)
                out.skipped.append(self._skip(
                    rule, h, ErrorCode.FOREIGN_SYSTEM, f"template {template} delivers to "
                    f"another external system's queue than the requesting system's", now))
                continue
            key = child_key(h, rule.code, template)
            if key in self.made:
                again.add(self.made[key])
                continue
            skip = refusal(self.classifications.get(template), direct=contact.direct_marketing,
                           affiliate=contact.affiliate_marketing, policy=policy,
                           override=bool(h.override_consent))
            if skip is not None:
                out.skipped.append(self._skip(rule, h, skip.code, skip.reason, now))
                continue
            send_to, address_type = rule.send_to, rule.address_type
            if rule.presentment:
                send_to, address_type = "type", _presentment_type(self.entities(h),
                                                                  rule.entity)
            child = {c: getattr(h, c) for c in COPIED}
            child.update(template_code=template, rule_code=rule.code, copy_of_id=h.id,
                         send_to=send_to, address_type=address_type, media=None,
                         idempotency_key=key,
                         status=HeaderStatus.AWAITING_PROCESSING, created_at=now)
            out.children.append(child)
            self.made[key] = h.id
            made += 1
        return made, again

    @staticmethod
    def _skip(rule: RuleInfo, h: Row, code: str, reason: str, now: Any) -> dict[str, Any]:
        return {"rule_id": rule.id, "run_id": None, "contact_ref": h.contact_ref,
                "recipient_key": f"header:{h.id}", "reason_code": code, "reason": reason,
                "at": now}


def insert_expansions(conn: Connection, expansions: Sequence[EventExpansion],
                      actor: str) -> None:
    """Write the children and skipped records of event triggers (monitor's persist hook)."""
    children = [c for e in expansions for c in e.children]
    skipped = [s for e in expansions for s in e.skipped]
    if children:
        # A monitor running beside this one may have made the same event's child first.
        insert_new(conn, HEADERS, children, actor, unique="idempotency_key")
    if skipped:
        conn.execute(insert(skipped_t), skipped)


def resolve_event(conn: Connection, event_number: str, actor: str = "resolve-event") -> list[int]:
    """Release the headers waiting for event ``event_number``; return their ids."""
    return transition_rows(
        conn, header_queue(),
        (headers_t.c.status == HeaderStatus.AWAITING_EVENT_RESOLUTION)
        & (headers_t.c.event_number == event_number),
        HeaderStatus.AWAITING_PROCESSING, actor)
