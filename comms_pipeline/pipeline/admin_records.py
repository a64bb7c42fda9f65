"""Administrative writes shared by the CLI, the demo and the tests: contacts, templates,
media settings, external systems. Each function takes an open connection (one transaction)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec
from comms_pipeline.pipeline import audit, template_versions
from comms_pipeline.store.models import (
    addresses_t,
    contacts_t,
    media_settings_t,
    systems_t,
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
    values = {"code": code, "name": name, "max_chars": max_chars, "webhook_url": webhook_url,
              "webhook_secret": webhook_secret}
    system_id = conn.execute(insert(t).values(created_at=utcnow(), **values)
                             .returning(t.c.id)).scalar_one()
    audit.record(conn, action="external_system.create", target_kind="external_system",
                 target_id=code, change=audit.changed_fields(None, values))
    return system_id


def save_template(conn: Connection, spec: TemplateSpec) -> int:
    """Save ``spec`` as the template's next version and publish it at once (by code).

    The programmatic way kept for the demo, the benches and the tests: a new template's
    first version is live, a changed one becomes live too. ``comms templates update`` saves
    a draft instead (:func:`template_versions.save_version`).
    """
    return template_versions.save_version(conn, spec, publish=True).template_id


def set_media(conn: Connection, media: str, *, enabled: bool | None = None,
              max_chars: int | None = None) -> None:
    t = media_settings_t
    current = conn.execute(select(t).where(t.c.media == media)).mappings().first()
    if current is None:
        values: dict[str, Any] = {"enabled": True if enabled is None else enabled,
                                  "max_chars": max_chars}
        conn.execute(insert(t).values(media=media, **values))
        audit.record(conn, action="media.set", target_kind="media", target_id=media,
                     change=audit.changed_fields({"enabled": True, "max_chars": None},
                                                 values))
        return
    values = {}
    if enabled is not None:
        values["enabled"] = enabled
    if max_chars is not None:
        values["max_chars"] = max_chars
    if values:
        conn.execute(update(t).where(t.c.media == media).values(values))
        audit.record(conn, action="media.set", target_kind="media", target_id=media,
                     change=audit.changed_fields({k: current[k] for k in values}, values))


def external_systems(conn: Connection) -> list[Any]:
    """Every external system's row, by code."""
    return list(conn.execute(select(systems_t).order_by(systems_t.c.code)).all())


def disable_external_system(conn: Connection, system_id: int, reason: str) -> None:
    """Stop webhooks to the system (its keys are revoked by :mod:`apikeys`), saying why."""
    before = conn.execute(select(systems_t.c.code, systems_t.c.enabled,
                                 systems_t.c.disabled_reason)
                          .where(systems_t.c.id == system_id)).first()
    conn.execute(update(systems_t).where(systems_t.c.id == system_id)
                 .values(enabled=False, disabled_reason=reason))
    audit.record(conn, action="external_system.disable", target_kind="external_system",
                 target_id=before.code if before else system_id,
                 change=audit.changed_fields(
                     {"enabled": before.enabled, "disabled_reason": before.disabled_reason}
                     if before else None, {"enabled": False, "disabled_reason": reason}))
