"""What the Email and Letter Monitor jobs share: a batch's data in a few queries, the merge of
each detail's template variant, and the document rows they write.

A batch of details needs its headers (entities and unrestricted parameters), its contacts
(with their addresses, for ``#contact_information.*``), its templates and their variants, and
the media limits. :class:`MergeBatch` loads all of it with one query per table whatever the
batch size; configured entity data sources complete a header's entities once per header.
:class:`MergeJob` is the shape of both jobs: every claimed detail ends with one outcome
(merged, expired, rejected with a code and a readable reason, or retried when a data source
is down), and the documents of merged details are inserted by :meth:`MergeJob.persist` in the
transaction that moves their details on, only for details this worker still holds.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import DetailState, ErrorCode
from comms_pipeline.pipeline.entity_sources import (
    EntitySourceError,
    load_sources,
    needed_entities,
    resolve_entities,
)
from comms_pipeline.pipeline.lookups import ContactInfo, Variant, load_contacts, with_variants
from comms_pipeline.pipeline.media import effective_limit, load_external_limits, load_media_rules
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.rendering import (
    TemplateError,
    build_context,
    compile_template,
    required_roots,
)
from comms_pipeline.store.models import (
    documents_t,
    headers_t,
    templates_t,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Connection, Engine, Row

    from comms_pipeline.pipeline.links import LinkBuilder
    from comms_pipeline.queue.claims import WorkQueue
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)



class MergeRejected(Exception):
    """This detail cannot be merged; it becomes Rejected with ``code`` and ``description``."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class MergeDeferred(MergeRejected):
    """This detail cannot be merged *now* (its data source is down): retry it with backoff."""


#: ``(entities from the trigger, contact tag data, referring entities) -> entities``
EntityResolver = Callable[[Mapping[str, Any], Mapping[str, Any], Sequence[str]], dict[str, Any]]


@dataclass(frozen=True)
class TemplateRef:
    id: int
    code: str
    referring_entities: list[str]
    default_language: str
    variants: dict[str, Variant]
    #: The live version these variants are (the detail records it when merged).
    version: int | None = None


@dataclass
class Merged:
    """One detail's rendered variant: subject, HTML body and/or text body."""

    detail: Row
    contact: ContactInfo
    language: str
    subject: str
    html: str | None
    text: str | None
    template_version: int | None = None


class MergeBatch:
    """The data of one batch of details, loaded with one query per table."""

    def __init__(self, conn: Connection, rows: Sequence[Row], media: str,
                 links: LinkBuilder | None = None,
                 resolve: EntityResolver | None = None) -> None:
        self.media = media
        self.links = links
        self.resolve = resolve
        self._entities: dict[tuple[int, int], dict[str, Any]] = {}
        header_ids = sorted({r.header_id for r in rows})
        self.headers = {h.id: h for h in conn.execute(
            select(headers_t.c.id, headers_t.c.entities, headers_t.c.params)
            .where(headers_t.c.id.in_(header_ids)))}
        self.contacts = load_contacts(conn, ids={r.contact_id for r in rows if r.contact_id})
        self.templates = _load_templates(conn, {r.template_id for r in rows if r.template_id})
        self.rule = load_media_rules(conn)[media]
        self.external_limits = load_external_limits(conn)

    def limit(self, row: Row) -> int:
        """The lowest of the media's limit and the external system's (SPEC)."""
        return effective_limit(self.rule, self.external_limits.get(row.external_system_id))

    def merge(self, row: Row) -> Merged:
        """Render the detail's variant with its header's data; :class:`MergeRejected` if not."""
        template = self.templates.get(row.template_id)
        if template is None:
            raise MergeRejected(ErrorCode.UNKNOWN_TEMPLATE,
                                f"the detail names no known template (id {row.template_id})")
        contact = self.contacts.get(row.contact_id)
        if contact is None:
            raise MergeRejected(ErrorCode.UNKNOWN_CONTACT,
                                f"the detail names no known contact (id {row.contact_id})")
        variant = (template.variants.get(row.language or "")
                   or template.variants.get(template.default_language))
        if variant is None:
            raise MergeRejected(ErrorCode.NO_VARIANT,
                                f"template {template.code!r} has no variant in "
                                f"{row.language!r} nor in {template.default_language!r}")
        header = self.headers.get(row.header_id)
        tag_data = contact.as_tag_data()
        context = build_context(contact=tag_data,
                                entities=self.entities(row, template, tag_data),
                                params=header.params if header else None,
                                referring_entities=template.referring_entities,
                                language=variant.language, links=self.links)
        required = required_roots(template.referring_entities)
        missing: dict[str, None] = {}
        try:
            subject = _render(variant.subject, context, html=False, required=required,
                              missing=missing) or ""
            html = _render(variant.body_html, context, html=True, required=required,
                           missing=missing)
            text = _render(variant.body_text, context, html=False, required=required,
                           missing=missing)
        except TemplateError as exc:
            raise MergeRejected(ErrorCode.TEMPLATE_ERROR,
                                f"template {template.code!r} ({variant.language}): {exc}") from None
        if missing:
            raise MergeRejected(ErrorCode.MISSING_DATA, missing_description(
                missing, template.code, variant.language))
        if not (html or text):
            raise MergeRejected(ErrorCode.TEMPLATE_ERROR,
                                f"template {template.code!r} ({variant.language}) has no body "
                                f"for {self.media}")
        return Merged(row, contact, variant.language, subject, html, text, template.version)


    def entities(self, row: Row, template: TemplateRef,
                 tag_data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The trigger's entities, completed by the configured data sources (once per header)."""
        header = self.headers.get(row.header_id)
        given = (header.entities if header else None) or {}
        if self.resolve is None:
            return given
        key = (row.header_id, template.id)
        if key not in self._entities:
            try:
                self._entities[key] = self.resolve(given, tag_data, template.referring_entities)
            except EntitySourceError as exc:
                if exc.transient:
                    raise MergeDeferred(ErrorCode.ENTITY_DATA, str(exc)) from None
                raise MergeRejected(ErrorCode.ENTITY_DATA, str(exc)) from None
        return self._entities[key]


def _render(source: str | None, context: dict[str, Any], *, html: bool,
            required: frozenset[str], missing: dict[str, None]) -> str | None:
    """One part of the variant; the tags it finds missing are added to ``missing``."""
    if not source:
        return None
    result = compile_template(source, html=html).render_report(context, required=required)
    missing.update(dict.fromkeys(result.missing))
    return result.text


def missing_description(missing: Mapping[str, None] | Sequence[str], code: str,
                        language: str) -> str:
    """``missing: #bill.total_amount_to_be_paid, ... (template 'BILL_ISSUED', el)``."""
    return f"missing: {', '.join(missing)} (template {code!r}, {language})"


def _load_templates(conn: Connection, ids: set[int]) -> dict[int, TemplateRef]:
    """Templates by id, active or not: a detail merges with the template it was made for."""
    if not ids:
        return {}
    found: dict[int, TemplateRef] = {}
    # One statement (one snapshot): the variants are those of the version recorded.
    for t in conn.execute(with_variants().where(templates_t.c.id.in_(sorted(ids)))):
        ref = found.get(t.id)
        if ref is None:
            ref = found[t.id] = TemplateRef(t.id, t.code, list(t.referring_entities or []),
                                            t.default_language, {}, t.live_version)
        if t.language is not None:
            ref.variants[t.language] = Variant(t.language, t.subject, t.body_html,
                                               t.body_text)
    return found


def document(kind: str, content_type: str, content: bytes) -> dict[str, Any]:
    """A ``documents`` row's values (without its detail id)."""
    return {"kind": kind, "content_type": content_type, "content": content,
            "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def next_state(row: Row) -> str:
    """Merged details go to their external system when they have one, else to a daemon."""
    return DetailState.AWAITING_EXTERNAL if row.external_system_id else DetailState.AWAITING_SEND


class MergeJob(ABC):
    """The shape of the Email and Letter Monitor jobs (see the module docstring).

    A subclass sets ``name``, ``media`` and ``queue`` and supplies :meth:`produce`.
    """

    name: str
    media: str
    queue: WorkQueue
    #: Merging writes nothing before the finish: a failing batch is retried row by row.
    isolates_failures = True

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._links: LinkBuilder | None = None
        self.sources = load_sources(settings)

    @property
    def links(self) -> LinkBuilder:
        """The dynamic-link signer (built on first use: it may create the secret file)."""
        if self._links is None:
            from comms_pipeline.pipeline.links import LinkBuilder

            self._links = LinkBuilder.from_settings(self.settings)
        return self._links

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        with self.engine.connect() as conn:
            batch = MergeBatch(conn, rows, self.media, self.links,
                               self.resolve_entities if self.sources else None)
        now = utcnow()
        outcomes: list[Outcome] = []
        merged: list[Merged] = []
        for row in rows:
            if row.expires_at is not None and row.expires_at <= now:
                outcomes.append(Outcome.done(
                    row.id, DetailState.EXPIRED, ErrorCode.EXPIRED,
                    f"expired at {row.expires_at:%Y-%m-%d %H:%M} UTC before it was merged",
                    completed_at=now))
                continue
            try:
                merged.append(batch.merge(row))
            except MergeDeferred as later:
                log.warning(f"{self.media}.merge_deferred", detail_id=row.id, code=later.code)
                outcomes.append(Outcome.retry(row.id, later.code, later.description))
            except MergeRejected as rej:
                outcomes.append(rejected(row.id, rej.code, rej.description, self.media, now))
        if merged and not ctx.stopping:
            outcomes.extend(self.produce(merged, batch, ctx))
        return outcomes

    def resolve_entities(self, given: Mapping[str, Any], contact: Mapping[str, Any],
                         referring: Sequence[str]) -> dict[str, Any]:
        return resolve_entities(self.sources, given, contact=contact,
                                default_url=self.settings.database_url,
                                var_dir=self.settings.var_dir, wanted=needed_entities(referring))

    @abstractmethod
    def produce(self, merged: list[Merged], batch: MergeBatch,
                ctx: BatchContext) -> list[Outcome]:
        """Build the documents of merged details; one outcome per detail (payload: document)."""

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Insert the documents of merged details (still held) in the finishing transaction."""
        docs = [{"detail_id": o.id, **o.payload} for o in outcomes if o.payload]
        if not docs:
            return
        ids = [d["detail_id"] for d in docs]
        # A detail put back to Awaiting Merge by an operator is merged afresh.
        conn.execute(delete(documents_t).where(documents_t.c.detail_id.in_(ids)))
        now = utcnow()
        conn.execute(insert(documents_t), [{**d, "created_at": now} for d in docs])

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Nothing held between batches by default."""


def rejected(row_id: int, code: str, description: str, media: str,
             now: datetime | None = None) -> Outcome:
    log.info(f"{media}.merge_rejected", detail_id=row_id, code=code)
    return Outcome.done(row_id, DetailState.REJECTED, code, description,
                        completed_at=now or utcnow())
