"""Administrative writes shared by the CLI, the demo and the tests: contacts, templates,
media settings, external systems. Each function takes an open connection (one transaction)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec
from comms_pipeline.store.models import (
    addresses_t,
    contacts_t,
    media_settings_t,
    systems_t,
    templates_t,
    variants_t,
)
from comms_pipeline.store.queries import find_external_system

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection



@dataclass
class AddressSpec:
    kind: str
    value: str
    address_type: str = "home"
    is_primary: bool = False


def add_contact(conn: Connection, ref: str, name: str, *, language: str | None = None,
                addresses: Iterable[AddressSpec] = (), direct_marketing: bool = False,
                affiliate_marketing: bool = False, data: Mapping[str, Any] | None = None) -> int:
    contact_id = conn.execute(insert(contacts_t).values(
        ref=ref, name=name, preferred_language=language,
        opt_in_direct_marketing=direct_marketing, opt_in_affiliate_marketing=affiliate_marketing,
        data=dict(data) if data else None, created_at=utcnow(),
    ).returning(contacts_t.c.id)).scalar_one()
    rows = [{"contact_id": contact_id, "kind": a.kind, "value": a.value,
             "address_type": a.address_type, "is_primary": a.is_primary,
             "created_at": utcnow()} for a in addresses]
    if rows:
        conn.execute(insert(addresses_t), rows)
    return contact_id


def external_system_id(conn: Connection, code: str | None) -> int | None:
    """The id of external system ``code`` (None for no code); LookupError when unknown."""
    if code is None:
        return None
    found = find_external_system(conn, code)
    if found is None:
        raise LookupError(f"no external system with code {code!r}")
    return found


def add_external_system(conn: Connection, code: str, name: str, *, max_chars: int | None = None,
                        webhook_url: str | None = None, webhook_secret: str | None = None) -> int:
    t = systems_t
    return conn.execute(insert(t).values(
        code=code, name=name, max_chars=max_chars, webhook_url=webhook_url,
        webhook_secret=webhook_secret, created_at=utcnow(),
    ).returning(t.c.id)).scalar_one()


def save_template(conn: Connection, spec: TemplateSpec) -> int:
    """Insert or replace a template and all its variants (by code)."""
    now = utcnow()
    values = {
        "code": spec.code, "name": spec.name, "media": spec.media, "direction": spec.direction,
        "category": spec.category, "classification": spec.classification,
        "referring_entities": list(spec.referring_entities),
        "unrestricted_params": list(spec.unrestricted_params),
        "external_system_id": external_system_id(conn, spec.external_system),
        "default_language": spec.default_language, "updated_at": now,
    }
    existing = conn.execute(
        select(templates_t.c.id).where(templates_t.c.code == spec.code)).scalar_one_or_none()
    if existing is None:
        template_id = conn.execute(insert(templates_t).values(created_at=now, **values)
                                   .returning(templates_t.c.id)).scalar_one()
    else:
        template_id = existing
        conn.execute(update(templates_t).where(templates_t.c.id == existing).values(values))
        conn.execute(delete(variants_t).where(variants_t.c.template_id == existing))
    conn.execute(insert(variants_t), [
        {"template_id": template_id, "language": v.language, "subject": v.subject,
         "body_html": v.body_html, "body_text": v.body_text} for v in spec.variants])
    return template_id


def set_media(conn: Connection, media: str, *, enabled: bool | None = None,
              max_chars: int | None = None) -> None:
    t = media_settings_t
    current = conn.execute(select(t).where(t.c.media == media)).mappings().first()
    if current is None:
        conn.execute(insert(t).values(media=media, enabled=True if enabled is None else enabled,
                                      max_chars=max_chars))
        return
    values: dict[str, Any] = {}
    if enabled is not None:
        values["enabled"] = enabled
    if max_chars is not None:
        values["max_chars"] = max_chars
    if values:
        conn.execute(update(t).where(t.c.media == media).values(values))


def external_systems(conn: Connection) -> list[Any]:
    """Every external system's row, by code."""
    return list(conn.execute(select(systems_t).order_by(systems_t.c.code)).all())


def disable_external_system(conn: Connection, system_id: int, reason: str) -> None:
    """Stop webhooks to the system (its keys are revoked by :mod:`apikeys`), saying why."""
    conn.execute(update(systems_t).where(systems_t.c.id == system_id)
                 .values(enabled=False, disabled_reason=reason))
