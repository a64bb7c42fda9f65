"""The audit log: who changed what, when, with the changed fields before and after.

Every administrative write (templates, media settings, external systems, API keys, consent
set by agents or by links, retries and cancels, notification types) calls :func:`record` in
the transaction of the change itself, so a change and its entry commit or roll back together.

The actor is a string naming its kind: ``cli:<OS user>``, ``api-key:<id>:<name>``,
``link:<token id>``. A caller that knows it passes ``actor=``; otherwise the actor of the
surrounding :func:`acting_as` block is taken (the ``comms`` group sets ``cli:<user>`` for the
whole command, a Web API route the calling key's), and outside any block
``process:<OS user>``.

Secrets never enter the log: a field whose name says secret, password, token or hash is
written as a short SHA-256 fingerprint, enough to see that it changed, useless to recover it.
The table is append-only (triggers from migration 0016 refuse UPDATE and DELETE).
"""

from __future__ import annotations

import getpass
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, or_, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.store.models import audit_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

SECRET_WORDS = ("secret", "password", "token", "hash", "api_key")
_actor: ContextVar[str | None] = ContextVar("comms_audit_actor", default=None)


def os_user() -> str:
    """The OS user running this process (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def cli_actor() -> str:
    return f"cli:{os_user()}"


def api_actor(key_id: int, name: str) -> str:
    return f"api-key:{key_id}:{name}"


def link_actor(token_id: str) -> str:
    return f"link:{token_id}"


def current_actor() -> str:
    """The actor of the surrounding :func:`acting_as` block, else ``process:<OS user>``."""
    return _actor.get() or f"process:{os_user()}"


@contextmanager
def acting_as(actor: str) -> Iterator[str]:
    """Changes recorded inside the block are ``actor``'s (unless a caller names another)."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def use_actor_unless_set(actor: str) -> None:
    """Make ``actor`` this context's actor for good, unless one is set already (a command
    line process has one actor; a program embedding the CLI may have named its own)."""
    if _actor.get() is None:
        _actor.set(actor)


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def fingerprint(value: Any) -> str | None:
    """``sha256:<16 hex>`` of a secret (None stays None): shows a change, hides the value."""
    if value is None:
        return None
    return "sha256:" + hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A JSON-safe copy: datetimes as ISO text, tuples and sets as lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def scrub(change: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``change`` with every secret field replaced by its fingerprint, JSON-safe."""
    if change is None:
        return None
    out: dict[str, Any] = {}
    for key, value in change.items():
        if _is_secret(str(key)):
            if isinstance(value, Mapping) and set(value) <= {"before", "after"}:
                out[key] = {k: fingerprint(v) for k, v in value.items()}
            else:
                out[key] = fingerprint(value)
        elif isinstance(value, Mapping):
            out[key] = scrub(value)
        else:
            out[key] = _plain(value)
    return out


def changed_fields(before: Mapping[str, Any] | None,
                   after: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{field: {"before": old, "after": new}}`` for the fields whose value differs."""
    before, after = before or {}, after or {}
    return {key: {"before": before.get(key), "after": after.get(key)}
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


def record(conn: Connection, *, actor: str | None = None, action: str, target_kind: str,
           target_id: object = None, change: Mapping[str, Any] | None = None) -> int:
    """Append one entry (in ``conn``'s transaction); the change is scrubbed of secrets."""
    return conn.execute(insert(audit_t).values(
        at=utcnow(), actor=(actor or current_actor())[:200], action=action,
        target_kind=target_kind, target_id=None if target_id is None else str(target_id)[:200],
        change=scrub(change),
    ).returning(audit_t.c.id)).scalar_one()


def list_entries(conn: Connection, *, since: datetime | None = None, actor: str | None = None,
                 target: str | None = None, limit: int = 100,
                 after_id: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first. ``actor`` matches a whole actor or its start (``cli:``);
    ``target`` is a kind (``template``) or ``kind:id`` (``template:BILL_ISSUED``)."""
    t = audit_t
    q = select(t).order_by(t.c.id).limit(limit)
    if since is not None:
        q = q.where(t.c.at >= since)
    if after_id is not None:
        q = q.where(t.c.id > after_id)
    if actor:
        escaped = actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(or_(t.c.actor == actor, t.c.actor.like(f"{escaped}%", escape="\\")))
    if target:
        kind, sep, ident = target.partition(":")
        q = q.where(t.c.target_kind == kind)
        if sep:
            q = q.where(t.c.target_id == ident)
    return [dict(r._mapping) for r in conn.execute(q)]
