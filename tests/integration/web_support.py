"""Helpers of the Web API tests: an app on the test database, keys, and queue entries."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, add_external_system
from comms_pipeline.pipeline.apikeys import create_key, create_system_key
from comms_pipeline.settings.config import Settings
from comms_pipeline.settings.links import LinkSettings
from comms_pipeline.settings.web import WebSettings
from comms_pipeline.store.models import contacts_t, details_t, headers_t
from comms_pipeline.web.app import create_app


class _WithSections(Settings):
    """Settings with the ``web`` and ``links`` sections, whether or not the project's
    Settings has them yet."""

    web: WebSettings = WebSettings()
    links: LinkSettings = LinkSettings()


def with_sections(settings: Settings, *, web: dict[str, Any] | None = None,
                  links: dict[str, Any] | None = None) -> Settings:
    data = settings.model_dump()
    data["web"] = {**(data.get("web") or {}), **(web or {})}
    data["links"] = {**{k: v for k, v in (data.get("links") or {}).items()
                        if k != "secret"}, **(links or {})}
    return _WithSections.model_validate(data)


def client(settings: Settings, engine) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(settings, engine))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def add_system(engine, code: str, **kw: Any) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """An external system and its key: ``(system id, key)``."""
    with engine.begin() as conn:
        system_id = add_external_system(conn, code, f"System {code}", **kw)
        key = create_system_key(conn, code).key
    return system_id, key


def role_key(engine, role: str, name: str | None = None) -> str:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return create_key(conn, role, name or f"{role}-key").key


def ensure_contact(engine, ref: str, **kw: Any) -> int:  # type: ignore[no-untyped-def]
    t = contacts_t
    with engine.begin() as conn:
        found = conn.execute(select(t.c.id).where(t.c.ref == ref)).scalar_one_or_none()
        if found is not None:
            return found
        return add_contact(conn, ref, kw.pop("name", f"Contact {ref}"), addresses=[
            AddressSpec("email", f"{ref.lower()}@example.com", is_primary=True)], **kw)


def external_entries(engine, system_id: int | None, n: int, *, contact_ref: str = "C-1",  # type: ignore[no-untyped-def]
                     media: str = "external", state: str = "awaiting_external",
                     notification_id: int | None = None, **values: Any) -> list[int]:
    """``n`` queue entries for ``system_id``, in the state the monitor leaves them."""
    contact_id = ensure_contact(engine, contact_ref)
    now = utcnow()
    with engine.begin() as conn:
        header_id = conn.execute(insert(headers_t).values(
            contact_ref=contact_ref, template_code="EXT", status="processed", created_at=now,
            notification_id=notification_id).returning(headers_t.c.id)).scalar_one()
        rows = [{"header_id": header_id, "contact_id": contact_id, "media": media,
                 "direction": "outgoing", "external_system_id": system_id,
                 "subject": f"Entry {i}", "body": json.dumps({"n": i}), "state": state,
                 "priority": 2, "created_at": now, **values} for i in range(n)]
        stmt = insert(details_t).returning(details_t.c.id, sort_by_parameter_order=True)
        return list(conn.execute(stmt, rows).scalars())


def detail(engine, detail_id: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return dict(conn.execute(select(details_t).where(details_t.c.id == detail_id))
                    .mappings().one())
