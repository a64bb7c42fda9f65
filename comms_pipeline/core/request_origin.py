"""Who asked for a request header, written into its idempotency key (no column of its own).

A header created through the Web API by an external system's key carries that system's id
in its ``idempotency_key``: ``sys-<id>:<key>`` when the system gave a key, ``sys-<id>/<random>``
when it did not. That keeps each system's keys its own (two systems using ``dup`` get two
requests) and lets the Comms Monitor check, whatever path the header took, that a system's
request only ever delivers into that system's queue (or into no external queue at all).

Admin keys and SQL/Python triggers share one namespace of plain keys. So that no plain key
can read as a system's (an admin's ``sys-1:dup`` is not system 1's ``dup``), an admin's key
that starts with ``sys-`` or with the escape character ``~`` is stored with a ``~`` in front:
the mapping is one-to-one and never lands in a system's namespace. A workflow writing
``sys-1:...`` keys by SQL declares its header system 1's, which only narrows what it may do.
"""

from __future__ import annotations

import re
import uuid

SYSTEM_PREFIX = "sys-"
ESCAPE = "~"
_ORIGIN = re.compile(r"^sys-([0-9]+)[:/]")


def scoped_key(system_id: int | None, key: str | None) -> str | None:
    """The stored idempotency key of a Web API request by ``system_id`` (None: an admin)."""
    if system_id is None:
        if key is not None and key.startswith((SYSTEM_PREFIX, ESCAPE)):
            return ESCAPE + key
        return key
    if key is None:
        return f"{SYSTEM_PREFIX}{system_id}/{uuid.uuid4().hex}"
    return f"{SYSTEM_PREFIX}{system_id}:{key}"


def origin_system(idempotency_key: str | None) -> int | None:
    """The external system that created a header, from its stored key; None if not one."""
    if not idempotency_key:
        return None
    found = _ORIGIN.match(idempotency_key)
    return int(found.group(1)) if found else None


def foreign(origin: int | None, target: int | None) -> bool:
    """Whether a header of ``origin`` would deliver into another external system's queue."""
    return origin is not None and target is not None and target != origin
