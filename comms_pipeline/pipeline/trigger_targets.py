"""What a trigger would reach, read for the Web API's checks before it is written.

The Web API refuses at once a trigger whose template, rule or event rules deliver into
another external system's queue, or whose template, rule or contact does not exist. These
are the reads it decides on (the contact's is
:func:`comms_pipeline.queue.request_fate.contact_exists`); the deciding, and the matching of
event names, stays with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.store.models import rules_t, templates_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def active_rules(conn: Connection, rule_code: str | None = None) -> list[Any]:
    """The active event rules (code, entity, event and both templates), or only ``rule_code``."""
    q = select(rules_t.c.code, rules_t.c.entity, rules_t.c.event, rules_t.c.email_template,
               rules_t.c.sms_template).where(rules_t.c.active.is_(True))
    if rule_code:
        q = q.where(rules_t.c.code == rule_code)
    return list(conn.execute(q))


def template_owners(conn: Connection, codes: Iterable[str]) -> dict[str, int | None]:
    """Each named template's external system (``None``: any system's queue may use it)."""
    return dict(conn.execute(select(templates_t.c.code, templates_t.c.external_system_id)
                             .where(templates_t.c.code.in_(list(codes)))).tuples().all())


def template_gate(conn: Connection, code: str) -> Any | None:
    """The template's ``active``, ``unrestricted_params`` and ``external_system_id``."""
    return conn.execute(select(templates_t.c.active, templates_t.c.unrestricted_params,
                               templates_t.c.external_system_id)
                        .where(templates_t.c.code == code)).first()


def rule_templates(conn: Connection, code: str) -> Any | None:
    """The rule's ``(email_template, sms_template)``, or ``None`` for an unknown rule."""
    return conn.execute(select(rules_t.c.email_template, rules_t.c.sms_template)
                        .where(rules_t.c.code == code)).first()


def template_media(conn: Connection, codes: Iterable[str]) -> dict[str, str]:
    """Each named template's media (what a request for it counts against daily limits)."""
    return dict(conn.execute(select(templates_t.c.code, templates_t.c.media)
                             .where(templates_t.c.code.in_(list(codes)))).tuples().all())


def template_systems(conn: Connection, codes: Iterable[str]) -> list[int | None]:
    """The external systems of the named templates (one per template found)."""
    return list(conn.execute(select(templates_t.c.external_system_id)
                             .where(templates_t.c.code.in_(list(codes)))).scalars())

