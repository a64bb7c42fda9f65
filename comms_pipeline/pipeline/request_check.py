"""Say it before it happens: what a trigger would lack, told to whoever makes it.

``comms trigger``, ``comms templates preview`` and the Web API's trigger endpoint check a
request before it is written: the template (or the event's rules) and the contact exist, and
which tags would be missing for the data given (the Comms Monitor would reject those details
``MISSING_DATA``). The check merges exactly as the jobs do (the same context, the same
configured entity sources) but writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.errors import CommsError
from comms_pipeline.rendering import TemplateError, build_context, compile_template, required_roots
from comms_pipeline.store.models import (
    addresses_t,
    contacts_t,
    rules_t,
    templates_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec



class RequestRefused(CommsError):
    """The request cannot succeed (unknown template or contact): refused before it is written.

    ``code`` and ``field`` are the Web API's (``unknown_template``, ``template_code``)."""

    def __init__(self, message: str, code: str, field: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def contact_data(conn: Connection, ref: str) -> dict[str, Any] | None:
    """What ``#contact_information.*`` shows for contact ``ref`` (None when unknown)."""
    row = conn.execute(select(contacts_t).where(contacts_t.c.ref == ref)).mappings().first()
    if row is None:
        return None
    data = dict(row)  # its free ``data`` is spread beside the columns by the context
    data.setdefault("language", row["preferred_language"])
    for a in conn.execute(select(addresses_t).where(addresses_t.c.contact_id == row["id"])
                          .order_by(addresses_t.c.is_primary.desc(), addresses_t.c.id)):
        data.setdefault(a.kind, a.value)
    return data


def refuse_unknown(conn: Connection, *, contact_ref: str, template_code: str | None) -> None:
    """Raise :class:`RequestRefused` for an unknown or inactive template or unknown contact."""
    if template_code:
        active = conn.execute(select(templates_t.c.active).where(
            templates_t.c.code == template_code)).scalar_one_or_none()
        if active is None:
            raise RequestRefused(f"unknown template {template_code!r}", "unknown_template",
                                 "template_code")
        if not active:
            raise RequestRefused(f"template {template_code!r} is not active",
                                 "inactive_template", "template_code")
    if conn.execute(select(contacts_t.c.id).where(
            contacts_t.c.ref == contact_ref)).first() is None:
        raise RequestRefused(f"unknown contact {contact_ref!r}", "unknown_contact",
                             "contact_ref")


def template_codes(conn: Connection, template_code: str | None, event: str | None,
                   rule_code: str | None) -> list[str]:
    """The templates a request would merge: its own, or those of its event's active rules."""
    if template_code:
        return [template_code]
    q = select(rules_t.c.email_template, rules_t.c.sms_template).where(rules_t.c.active)
    if rule_code:
        q = q.where(rules_t.c.code == rule_code)
    elif event:
        q = q.where(rules_t.c.event == event)
    else:
        return []
    return list(dict.fromkeys(c for row in conn.execute(q) for c in row if c))


def missing_warnings(conn: Connection, *, contact_ref: str, template_code: str | None = None,
                     event: str | None = None, rule_code: str | None = None,
                     entities: Mapping[str, Any] | None = None,
                     params: Mapping[str, Any] | None = None, language: str | None = None,
                     settings: Any = None) -> list[str]:
    """One line per template whose merge would miss tags for the data given.

    Entities are completed by the configured entity sources as the jobs do; a source that
    cannot be read makes a warning of its own rather than a false alarm.
    """
    from comms_pipeline.pipeline.template_files import fetch_template, pick_variant

    contact = contact_data(conn, contact_ref)
    if contact is None:
        return []
    warnings: list[str] = []
    for code in template_codes(conn, template_code, event, rule_code):
        spec = fetch_template(conn, code)
        if spec is None:
            continue
        variant = pick_variant(spec, language or contact.get("preferred_language"))
        if variant is None:
            continue
        try:
            given = _resolved(spec, dict(entities or {}), contact, settings)
        except CommsError as exc:
            warnings.append(f"template {code!r}: the entity data could not be read to "
                            f"check its tags: {exc}")
            continue
        missing = missing_tags(spec, variant, contact, given, params)
        if missing:
            warnings.append(f"template {code!r} ({variant.language}): missing: "
                            f"{', '.join(missing)}; the communication would be rejected "
                            "(MISSING_DATA)")
    return warnings


def missing_tags(spec: TemplateSpec, variant: VariantSpec, contact: Mapping[str, Any],
                 entities: Mapping[str, Any], params: Mapping[str, Any] | None) -> list[str]:
    """The tags of ``variant`` that would be missing (a template error is the jobs' to tell)."""
    context = build_context(contact=contact, entities=entities, params=params,
                            referring_entities=spec.referring_entities,
                            language=variant.language)
    required = required_roots(spec.referring_entities)
    found: dict[str, None] = {}
    for source, html in ((variant.subject, False), (variant.body_html, True),
                         (variant.body_text, False)):
        if not source:
            continue
        try:
            result = compile_template(source, html=html).render_report(context,
                                                                       required=required)
        except TemplateError:
            continue
        found.update(dict.fromkeys(result.missing))
    return list(found)


def _resolved(spec: TemplateSpec, given: dict[str, Any], contact: Mapping[str, Any],
              settings: Any) -> dict[str, Any]:
    if settings is None:
        return given
    from comms_pipeline.pipeline.entity_sources import (
        load_sources,
        needed_entities,
        resolve_entities,
    )

    sources = load_sources(settings)
    if not sources:
        return given
    return resolve_entities(sources, given, contact=contact,
                            default_url=settings.database_url, var_dir=settings.var_dir,
                            wanted=needed_entities(spec.referring_entities))
