"""The Comms Monitor job: expands each new request header into request details.

For every claimed header it resolves the template and the contact, picks the target
addresses by the send-to rule, chooses the language variant, applies consent and SPEC's
processing rules, merges SMS and push texts, checks character limits, and writes one detail
per target (email and letter details wait for their merge jobs). Whatever cannot be sent ends
visibly: a header in Error / Not Sent / Opted Out, or a Rejected detail, each with an error
code and a readable reason. Details are written in the same transaction that marks their
header Processed, and only while this worker still holds the header's claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from comms_pipeline.core.addressing import InvalidAddress, normalise, select_targets
from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.processing_rules import processing_refusal
from comms_pipeline.core.request_origin import foreign, origin_system
from comms_pipeline.core.request_values import problems
from comms_pipeline.core.sms_text import split_parts
from comms_pipeline.core.states import (
    ADDRESS_KIND,
    DetailState,
    ErrorCode,
    HeaderStatus,
    Media,
)
from comms_pipeline.notifications import consent
from comms_pipeline.notifications.event_rules import EventExpansion, EventRules, insert_expansions
from comms_pipeline.pipeline.entity_sources import (
    EntitySourceError,
    load_sources,
    needed_entities,
    resolve_entities,
)
from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.pipeline.lookups import (
    ContactInfo,
    TemplateInfo,
    load_contacts,
    load_templates,
)
from comms_pipeline.pipeline.media import effective_limit, load_external_limits, load_media_rules
from comms_pipeline.pipeline.merge_data import missing_description
from comms_pipeline.pipeline.suppressions import SuppressionLookup
from comms_pipeline.queue.claims import Outcome, insert_with_history
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.queue.work_queues import header_queue
from comms_pipeline.rendering import (
    TemplateError,
    build_context,
    compile_template,
    required_roots,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: Media whose text is merged by this job (email and letters are merged by their own jobs).
MERGED_HERE = {Media.SMS, Media.PUSH, Media.EXTERNAL}


class Rejection(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def invalid_value(h: Row) -> str | None:
    """Why a header (written by SQL, where nothing checked it) holds a value no request may
    carry (invalid Unicode, NUL, NaN, infinity), or None."""
    found = problems({"entities": h.entities, "params": h.params})
    if not found:
        return None
    path, problem = found[0]
    return f"the request holds a value no communication may carry: {path} {problem}"


class MonitorJob:
    name = "monitor"
    #: No side effects before the finish: a failing batch is retried row by row.
    isolates_failures = True

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.queue = header_queue()
        self.region = settings.monitor.default_country
        self._templates: dict[str, TemplateInfo | None] = {}
        self.sources = load_sources(settings)
        self.links = LinkBuilder.from_settings(settings)
        self.events = EventRules(settings)
        self.policies: dict[int, consent.Policy] = {}
        self.suppressions = SuppressionLookup(self.region)

    # -- the Handler protocol -----------------------------------------------------------------
    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        with self.engine.connect() as conn:
            contacts = load_contacts(conn, refs=(h.contact_ref for h in rows))
            # Read afresh each batch: a template published meanwhile is live from the next.
            wanted = {h.template_code for h in rows if h.template_code}
            loaded = load_templates(conn, wanted)
            self._templates = {code: loaded.get(code) for code in wanted}
            self.media_rules = load_media_rules(conn)
            self.external_limits = load_external_limits(conn)
            self.events.prepare(conn, rows, contacts)
            self.policies = consent.load_policies(conn, rows)
            now = utcnow()
            self.suppressions.prepare(conn, contacts.values(), now)
        return [self.expand(h, contacts.get(h.contact_ref), now) for h in rows]

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        expansions = [o.payload for o in outcomes if isinstance(o.payload, EventExpansion)]
        if expansions:
            insert_expansions(conn, expansions, self.name)
        details = [d for o in outcomes if not isinstance(o.payload, EventExpansion)
                   for d in (o.payload or ())]
        if not details:
            return
        insert_with_history(conn, DETAILS, details, self.name)

    def close(self) -> None:
        self._templates.clear()
        self.events.close()

    # -- expansion ------------------------------------------------------------------------------
    def expand(self, h: Row, contact: ContactInfo | None, now) -> Outcome:
        def stop(status: str, code: str, reason: str) -> Outcome:
            log.info("monitor.not_sent", header_id=h.id, status=status, code=code)
            return Outcome.done(h.id, status, code, reason)

        if h.expires_at is not None and h.expires_at <= now:
            return stop(HeaderStatus.NOT_SENT, ErrorCode.EXPIRED,
                        f"expired at {h.expires_at:%Y-%m-%d %H:%M} UTC before processing")
        invalid = invalid_value(h)
        if invalid is not None:
            return stop(HeaderStatus.ERROR, ErrorCode.INVALID_REQUEST, invalid)
        if self.events.wants(h):
            return self.events.expand(h, contact, now)
        template = self._templates.get(h.template_code) if h.template_code else None
        refused = self._unusable(h, template, contact)
        if refused is not None:
            return stop(HeaderStatus.ERROR, *refused)
        assert template is not None and contact is not None
        media = h.media or template.media
        if media not in Media.__members__.values():
            return stop(HeaderStatus.ERROR, ErrorCode.UNKNOWN_MEDIA, f"unknown media {media!r}")
        policy = self.policies.get(h.id)
        classification = consent.stricter(policy.classification if policy else None,
                                          template.classification)
        skip = consent.refusal(classification, direct=contact.direct_marketing,
                               affiliate=contact.affiliate_marketing,
                               policy=policy, override=bool(h.override_consent))
        if skip is not None:
            return stop(HeaderStatus.OPTED_OUT, skip.code, skip.reason)
        if media == Media.EXTERNAL:
            if template.external_system_id is None:
                return stop(HeaderStatus.ERROR, ErrorCode.INVALID_REQUEST,
                            f"template {template.code!r} has media external but no external system")
            targets: list[tuple[str, str | None]] = [(contact.ref, None)]
        else:
            kind = ADDRESS_KIND[Media(media)]
            chosen, why = select_targets(contact.addresses, kind, h.send_to, h.address_type)
            if not chosen:
                return stop(HeaderStatus.NOT_SENT, ErrorCode.NO_ADDRESS,
                            f"{why} (media {media}, send to {h.send_to})")
            targets = [(a.value, a.address_type) for a in chosen]
        merged: dict[str, Any] = {}
        details = [self.detail(h, contact, template, media, address, address_type, now, merged,
                               classification)
                   for address, address_type in targets]
        return Outcome.done(h.id, HeaderStatus.PROCESSED, details_created=len(details),
                            payload=details)

    @staticmethod
    def _unusable(h: Row, template: TemplateInfo | None,
                  contact: ContactInfo | None) -> tuple[str, str] | None:
        """``(code, reason)`` when the header cannot be expanded at all."""
        if not h.template_code:
            return ErrorCode.INVALID_REQUEST, "the request names no template"
        if template is None:
            return ErrorCode.UNKNOWN_TEMPLATE, f"no active template with code {h.template_code!r}"
        if foreign(origin_system(h.idempotency_key), template.external_system_id):
            return ErrorCode.FOREIGN_SYSTEM, (f"template {template.code!r} delivers to another "
                                              f"external system's queue than the requesting "
                                              f"system's")
        if contact is None:
            return ErrorCode.UNKNOWN_CONTACT, f"no contact with reference {h.contact_ref!r}"
        return None

    def detail(self, h: Row, contact: ContactInfo, template: TemplateInfo, media: str,
               address: str, address_type: str | None, now, merged: dict,
               classification: str | None = None) -> dict[str, Any]:
        variant = template.variant_for(h.language, contact.language)
        row: dict[str, Any] = {
            "header_id": h.id, "contact_id": contact.id, "template_id": template.id,
            "media": media, "direction": template.direction,
            "classification": template.classification, "address": address,
            "address_type": address_type, "language": variant.language if variant else None,
            "external_system_id": template.external_system_id, "priority": h.priority,
            "requested_by_system_id": h.requested_by_system_id,
            "expires_at": h.expires_at, "created_at": now, "updated_at": now,
            "subject": None, "body": None, "parts": None, "error_code": None,
            "error_description": None, "completed_at": None, "template_version": None,
            "is_test": bool(h.is_test),  # a test key's: simulated, out of reports and quotas
        }
        try:
            rule = self.media_rules[media]
            refusal = processing_refusal(media, template.direction, rule.enabled)
            if refusal:
                raise Rejection(*refusal)
            if media != Media.EXTERNAL:
                try:
                    row["address"] = normalise(ADDRESS_KIND[Media(media)], address, self.region)
                except InvalidAddress as exc:
                    raise Rejection(ErrorCode.INVALID_ADDRESS, str(exc)) from None
                stop = self.suppressions.find(media, row["address"],
                                              classification or template.classification)
                if stop is not None:
                    raise Rejection(ErrorCode.SUPPRESSED, f"{row['address']} is on the "
                                    f"suppression list for {media}: {stop.explanation()}")
            if variant is None:
                raise Rejection(ErrorCode.NO_VARIANT, f"template {template.code!r} has no "
                                f"variant in {h.language or contact.language or 'any language'}"
                                f" nor in its default language {template.default_language!r}")
            if media in MERGED_HERE:
                if "body" not in merged:
                    merged.update(self.merge(h, contact, template, variant, media))
                row.update(merged)
                row["state"] = (DetailState.AWAITING_EXTERNAL if template.external_system_id
                                else DetailState.AWAITING_SEND)
            else:
                row["state"] = DetailState.AWAITING_MERGE
        except Rejection as rej:
            row.update(state=DetailState.REJECTED, error_code=rej.code,
                       error_description=rej.description, completed_at=now)
            log.info("monitor.rejected", header_id=h.id, code=rej.code)
        return row

    def merge(self, h: Row, contact: ContactInfo, template: TemplateInfo, variant,
              media: str) -> dict[str, Any]:
        """Render the SMS / push / external text once per header; enforce the limits."""
        tag_data = contact.as_tag_data()
        entities = h.entities
        if self.sources:
            try:
                entities = resolve_entities(
                    self.sources, h.entities or {}, contact=tag_data,
                    default_url=self.settings.database_url, var_dir=self.settings.var_dir,
                    wanted=needed_entities(template.referring_entities))
            except EntitySourceError as exc:
                raise Rejection(ErrorCode.ENTITY_DATA, str(exc)) from None
        context = build_context(contact=tag_data, entities=entities, params=h.params,
                                referring_entities=template.referring_entities,
                                language=variant.language, links=self.links)
        required = required_roots(template.referring_entities)
        try:
            merged_body = compile_template(variant.body_text or "").render_report(
                context, required=required)
            merged_subject = (compile_template(variant.subject).render_report(
                context, required=required) if variant.subject else None)
        except TemplateError as exc:
            raise Rejection(ErrorCode.TEMPLATE_ERROR, str(exc)) from None
        missing = dict.fromkeys([*(merged_subject.missing if merged_subject else []),
                                 *merged_body.missing])
        if missing:
            raise Rejection(ErrorCode.MISSING_DATA, missing_description(
                missing, template.code, variant.language))
        body = merged_body.text
        subject = merged_subject.text if merged_subject else None
        limit = effective_limit(self.media_rules[media],
                                self.external_limits.get(template.external_system_id))  # type: ignore[arg-type]
        if len(body) > limit:
            raise Rejection(ErrorCode.TOO_LONG, f"the merged {media} text is {len(body)} "
                            f"characters; the limit is {limit}")
        parts = len(split_parts(body)[1]) if media == Media.SMS else None
        return {"body": body, "subject": subject, "parts": parts,
                "template_version": template.version}
