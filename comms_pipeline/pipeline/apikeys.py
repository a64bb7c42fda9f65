"""Web API keys: made, shown once, stored as a hash, found by their prefix, rotated.

A key reads ``cp_<prefix>_<secret>``: the prefix (12 hex digits) is stored in clear and finds
the row; the whole key is stored only as its SHA-256. The secret is 32 random bytes, so a
fast hash is enough (there is nothing to brute-force) and comparison is constant-time.
External-system keys belong to one system; agent and admin keys carry a role. A key is of
kind ``live`` (the default) or ``test``: a test key's communications go through the whole
pipeline but are sent only to the simulator, and are left out of reports and quotas.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import audit
from comms_pipeline.store.models import keys_t, systems_t
from comms_pipeline.store.queries import find_external_system

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


ROLES = ("external", "agent", "admin")
KINDS = ("live", "test")
KEY_SCHEME = "cp"
#: ``last_used_at`` is written at most this often per key, not on every request.
TOUCH_EVERY = timedelta(seconds=60)


class ApiKeyError(CommsError):
    """The API key is not valid."""


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is the only time its secret exists outside the caller."""

    id: int
    prefix: str
    key: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's row, its role and (for ``external``) its system."""

    key_id: int
    prefix: str
    role: str
    name: str
    external_system_id: int | None
    kind: str = "live"

    @property
    def is_test(self) -> bool:
        return self.kind == "test"

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else None."""
    scheme, sep, rest = key.partition("_")
    prefix, sep2, secret = rest.partition("_")
    if scheme != KEY_SCHEME or not sep or not sep2 or len(prefix) != 12 or not secret:
        return None
    return prefix, secret


def create_key(conn: Connection, role: str, name: str,
               external_system_id: int | None = None, kind: str = "live") -> NewKey:
    if kind not in KINDS:
        raise ApiKeyError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if role not in ROLES:
        raise ApiKeyError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if (role == "external") != (external_system_id is not None):
        raise ApiKeyError("an 'external' key belongs to exactly one external system; "
                          "agent and admin keys belong to none")
    prefix = secrets.token_hex(6)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    key_id = conn.execute(insert(keys_t).values(
        prefix=prefix, key_hash=hash_key(key), role=role, name=name,
        external_system_id=external_system_id, kind=kind, created_at=utcnow(),
    ).returning(keys_t.c.id)).scalar_one()
    audit.record(conn, action="api_key.create", target_kind="api_key", target_id=prefix,
                 change={"role": role, "name": name, "external_system_id": external_system_id,
                         "kind": kind, "key_hash": hash_key(key)})
    return NewKey(key_id, prefix, key)


def system_id(conn: Connection, code: str) -> int:
    found = find_external_system(conn, code)
    if found is None:
        raise ApiKeyError(f"no external system with code {code!r}")
    return found


def create_system_key(conn: Connection, code: str, kind: str = "live") -> NewKey:
    name = f"system:{code}" if kind == "live" else f"system:{code}:{kind}"
    return create_key(conn, "external", name, system_id(conn, code), kind=kind)


def revoke_system_keys(conn: Connection, external_system_id: int,
                       at: datetime | None = None) -> int:
    prefixes = list(conn.execute(update(keys_t).where(
        keys_t.c.external_system_id == external_system_id, keys_t.c.revoked_at.is_(None),
    ).values(revoked_at=at or utcnow()).returning(keys_t.c.prefix)).scalars())
    for prefix in prefixes:
        audit.record(conn, action="api_key.revoke", target_kind="api_key", target_id=prefix,
                     change={"external_system_id": external_system_id})
    return len(prefixes)


def rotate_system_key(conn: Connection, code: str) -> NewKey:
    """Revoke the system's keys and make a new one, in one transaction."""
    sid = system_id(conn, code)
    revoke_system_keys(conn, sid)
    return create_key(conn, "external", f"system:{code}", sid)


def revoke_key(conn: Connection, prefix: str) -> bool:
    result = conn.execute(update(keys_t).where(
        keys_t.c.prefix == prefix, keys_t.c.revoked_at.is_(None)).values(revoked_at=utcnow()))
    if result.rowcount > 0:
        audit.record(conn, action="api_key.revoke", target_kind="api_key", target_id=prefix)
    return result.rowcount > 0


def authenticate(conn: Connection, key: str) -> Principal:
    """The principal of a presented key; :class:`ApiKeyError` if unknown, wrong or revoked."""
    parts = split_key(key.strip())
    if parts is None:
        raise ApiKeyError("malformed API key (expected cp_<prefix>_<secret>)")
    row = conn.execute(select(keys_t).where(keys_t.c.prefix == parts[0])).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key.strip())):
        raise ApiKeyError("unknown API key")
    if row.revoked_at is not None:
        raise ApiKeyError("this API key has been revoked")
    now = utcnow()
    if row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY:
        conn.execute(update(keys_t).where(keys_t.c.id == row.id).values(last_used_at=now))
    return Principal(row.id, row.prefix, row.role, row.name, row.external_system_id, row.kind)


def list_keys(conn: Connection) -> list[dict]:
    q = (select(keys_t.c.prefix, keys_t.c.role, keys_t.c.kind, keys_t.c.name,
                keys_t.c.created_at, keys_t.c.rate_limit_per_second, keys_t.c.daily_limits,
                keys_t.c.last_used_at, keys_t.c.revoked_at, systems_t.c.code.label("system"))
         .outerjoin(systems_t, systems_t.c.id == keys_t.c.external_system_id)
         .order_by(keys_t.c.id))
    return [dict(r._mapping) for r in conn.execute(q)]
