"""Contacts (with their addresses) and templates (with their variants), loaded for a whole
batch in a handful of queries: shared by the Comms Monitor and the merge jobs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.addressing import Address
from comms_pipeline.store.models import (
    addresses_t,
    contacts_t,
    templates_t,
    variants_t,
)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection



@dataclass
class ContactInfo:
    id: int
    ref: str
    name: str
    language: str | None
    direct_marketing: bool
    affiliate_marketing: bool
    data: dict[str, Any] | None
    addresses: list[Address] = field(default_factory=list)

    def as_tag_data(self) -> dict[str, Any]:
        """What ``#contact_information.*`` shows: the contact's fields and primary addresses."""
        data: dict[str, Any] = dict(self.data or {})
        data.update(ref=self.ref, name=self.name, language=self.language,
                    preferred_language=self.language,
                    opt_in_direct_marketing=self.direct_marketing,
                    opt_in_affiliate_marketing=self.affiliate_marketing)
        for a in self.addresses:
            if a.is_primary or a.kind not in data:
                data.setdefault(a.kind, a.value)
        return data


@dataclass
class Variant:
    language: str
    subject: str | None
    body_html: str | None
    body_text: str | None


@dataclass
class TemplateInfo:
    id: int
    code: str
    media: str
    direction: str
    classification: str
    referring_entities: list[str]
    external_system_id: int | None
    default_language: str
    variants: dict[str, Variant]
    #: The live version these variants are (recorded on what is rendered with them).
    version: int | None = None

    def variant_for(self, *preferred: str | None) -> Variant | None:
        """The first preferred language that has a variant, else the default language's."""
        for language in (*preferred, self.default_language):
            if language and language in self.variants:
                return self.variants[language]
        return None


def load_contacts(conn: Connection, *, refs: Iterable[str] | None = None,
                  ids: Iterable[int] | None = None) -> dict[Any, ContactInfo]:
    """Contacts with their addresses: keyed by reference when asked by ``refs``, else by id."""
    if refs is not None:
        wanted: list[Any] = sorted(set(refs))
        where = contacts_t.c.ref.in_(wanted)
    else:
        wanted = sorted(set(ids or ()))
        where = contacts_t.c.id.in_(wanted)
    if not wanted:
        return {}
    by_id: dict[int, ContactInfo] = {
        r.id: ContactInfo(r.id, r.ref, r.name, r.preferred_language,
                          bool(r.opt_in_direct_marketing), bool(r.opt_in_affiliate_marketing),
                          r.data)
        for r in conn.execute(select(contacts_t).where(where))}
    if by_id:
        q = (select(addresses_t).where(addresses_t.c.contact_id.in_(list(by_id)))
             .order_by(addresses_t.c.id))
        for a in conn.execute(q):
            by_id[a.contact_id].addresses.append(Address(
                a.kind, a.value, a.address_type, bool(a.is_primary), a.invalid_reason))
    return by_id if refs is None else {c.ref: c for c in by_id.values()}


def load_templates(conn: Connection, codes: Iterable[str]) -> dict[str, TemplateInfo]:
    codes = sorted(set(codes))
    if not codes:
        return {}
    found: dict[str, TemplateInfo] = {}
    # One statement (one snapshot): the variants are those of the version it records, even
    # while a publish commits.
    for t in conn.execute(with_variants().where(templates_t.c.code.in_(codes),
                                                templates_t.c.active.is_(True))):
        info = found.get(t.code)
        if info is None:
            info = found[t.code] = TemplateInfo(
                t.id, t.code, t.media, t.direction, t.classification,
                list(t.referring_entities or []), t.external_system_id, t.default_language,
                {}, t.live_version)
        if t.language is not None:
            info.variants[t.language] = Variant(t.language, t.subject, t.body_html,
                                                t.body_text)
    return found


def with_variants() -> Select[Any]:
    """Templates joined to their variants: a row per variant (one for a template with none)."""
    v = variants_t.c
    return (select(templates_t, v.language, v.subject, v.body_html, v.body_text)
            .outerjoin(variants_t, v.template_id == templates_t.c.id))
