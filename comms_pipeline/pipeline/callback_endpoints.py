"""Client systems' callback endpoints: register, list, enable, remove.

An endpoint belongs to one external system (and, when registered over the Web API, names the
key that did it); the system's key sees and changes only its own endpoints. The secret signs
every callback (Standard Webhooks) and is shown once, when the endpoint is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.gateways.webhook import new_secret
from comms_pipeline.pipeline import audit
from comms_pipeline.queue.callbacks import forget_endpoints, parse_events
from comms_pipeline.store.models import callback_endpoints_t, callback_outbox_t, systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class BadCallbackUrl(CommsError):
    """A callback URL must be an absolute http(s) URL."""


@dataclass(frozen=True)
class Endpoint:
    id: int
    system: str
    url: str
    events: list[str]
    enabled: bool
    consecutive_failures: int
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime | None
    pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() + "Z" if v is not None else None

        return {"id": self.id, "system": self.system, "url": self.url, "events": self.events,
                "enabled": self.enabled, "consecutive_failures": self.consecutive_failures,
                "disabled_at": iso(self.disabled_at), "disabled_reason": self.disabled_reason,
                "created_at": iso(self.created_at), "pending_events": self.pending}


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadCallbackUrl(f"callback URL {url[:200]!r} is not an absolute http(s) URL")
    return url.strip()


def add_endpoint(conn: Connection, system_id: int, url: str, events: Any, *,
                 api_key_id: int | None = None, secret: str | None = None) -> tuple[int, str]:
    """Register a callback endpoint; returns its id and its signing secret."""
    secret = secret or new_secret()
    endpoint_id = conn.execute(callback_endpoints_t.insert().values(
        system_id=system_id, api_key_id=api_key_id, url=check_url(url), secret=secret,
        events=",".join(parse_events(events)), enabled=True, consecutive_failures=0,
        created_at=utcnow()).returning(callback_endpoints_t.c.id)).scalar_one()
    audit.record(conn, action="callback_endpoint.add", target_kind="callback_endpoint",
                 target_id=endpoint_id, change={"system_id": system_id, "url": check_url(url),
                                                "events": parse_events(events),
                                                "secret": secret, "api_key_id": api_key_id})
    forget_endpoints()
    return endpoint_id, secret


def list_endpoints(conn: Connection, system_id: int | None = None) -> list[Endpoint]:
    e, o = callback_endpoints_t, callback_outbox_t
    pending = (select(func.count()).where(o.c.endpoint_id == e.c.id, o.c.state == "pending")
               .scalar_subquery())
    q = (select(e, systems_t.c.code, pending.label("pending"))
         .join(systems_t, systems_t.c.id == e.c.system_id).order_by(e.c.id))
    if system_id is not None:
        q = q.where(e.c.system_id == system_id)
    return [Endpoint(r.id, r.code, r.url, r.events.split(","), r.enabled,
                     r.consecutive_failures, r.disabled_at, r.disabled_reason, r.created_at,
                     r.pending) for r in conn.execute(q)]


def _own(endpoint_id: int, system_id: int | None) -> Any:
    e = callback_endpoints_t
    cond = e.c.id == endpoint_id
    return cond if system_id is None else cond & (e.c.system_id == system_id)


def remove_endpoint(conn: Connection, endpoint_id: int, system_id: int | None = None) -> bool:
    """Remove an endpoint and its outbox (events not yet sent are dropped); ``system_id``
    limits it to that system's endpoints. Returns whether one was removed."""
    e = callback_endpoints_t
    found = conn.execute(select(e.c.id).where(_own(endpoint_id, system_id))).scalar()
    if found is None:
        return False
    conn.execute(delete(callback_outbox_t).where(callback_outbox_t.c.endpoint_id == found))
    conn.execute(delete(e).where(e.c.id == found))
    audit.record(conn, action="callback_endpoint.remove", target_kind="callback_endpoint",
                 target_id=found)
    forget_endpoints()
    return True


def enable_endpoint(conn: Connection, endpoint_id: int, system_id: int | None = None) -> bool:
    """Enable a (disabled) endpoint again, its run of failures forgotten: its pending events
    are delivered from where they stopped."""
    e = callback_endpoints_t
    done = conn.execute(update(e).where(_own(endpoint_id, system_id)).values(
        enabled=True, consecutive_failures=0, disabled_at=None, disabled_reason=None))
    if done.rowcount:
        audit.record(conn, action="callback_endpoint.enable", target_kind="callback_endpoint",
                     target_id=endpoint_id)
    forget_endpoints()
    return bool(done.rowcount)
