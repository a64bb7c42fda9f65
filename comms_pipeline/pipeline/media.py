"""Media settings: which media are enabled and their character limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from comms_pipeline.core.states import DEFAULT_MAX_CHARS, Media
from comms_pipeline.store.models import MediaSetting, systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class MediaRule:
    enabled: bool
    max_chars: int


def load_media_rules(conn: Connection) -> dict[str, MediaRule]:
    """Every media's rule: the stored setting, else enabled with SPEC's default limit."""
    rules = {m.value: MediaRule(True, DEFAULT_MAX_CHARS[m]) for m in Media}
    for row in conn.execute(select(MediaSetting.__table__)):
        default = DEFAULT_MAX_CHARS.get(row.media, 1000)
        rules[row.media] = MediaRule(bool(row.enabled), row.max_chars or default)
    return rules


def load_external_limits(conn: Connection) -> dict[int, int | None]:
    t = systems_t
    return {r.id: r.max_chars for r in conn.execute(select(t.c.id, t.c.max_chars))}


def effective_limit(rule: MediaRule, external_limit: int | None) -> int:
    """The lowest of the media's limit and the external system's own limit (SPEC)."""
    return min(rule.max_chars, external_limit) if external_limit else rule.max_chars
