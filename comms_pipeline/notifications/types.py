"""Notification types, event rules and segments: defined in TOML files, kept in the database.

One file may hold all three kinds, each a table named by its code::

    [segments.PREPAID]
    name = "Prepaid subscribers"
    kind = "sql"                  # or "list" with members = ["C-1001", ...]
    query = "SELECT ar.contact_ref AS member_ref FROM ..."

    [types.LOW_WALLET_BALANCE]
    name = "Wallet with low balance"
    classification = "financial"  # customer_care | financial | reward | marketing
    entity = "wallet"
    template = "WALLET_LOW_BALANCE_SMS"
    population_query = "SELECT w.id AS recipient_key, ar.contact_ref AS contact_ref, ..."
    conditions = [{field = "wallets_available_amount", op = "less_than", value = 5}]
    expiry_hours = 48
    cron = "0 9 * * *"

    [rules.PAYMENT_RECEIPT]
    name = "Payment receipt"
    entity = "payment"
    event = "posted"
    email_template = "PAYMENT_RECEIPT"
    sms_template = "PAYMENT_RECEIPT_SMS"
    send_to = "primary"           # all | primary | specific (with address_type)

Saving is by code (insert or replace), so ``comms rules load PATH`` is repeatable. The
built-in definitions under ``comms_pipeline/templates/notifications/`` reproduce the seeds'
business examples against the demo business schema.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, insert, select, update

from comms_pipeline.core.cron import check_cron
from comms_pipeline.core.errors import CommsError
from comms_pipeline.notifications import conditions as cond
from comms_pipeline.notifications.consent import RESPECT
from comms_pipeline.pipeline import audit
from comms_pipeline.store.models import (
    members_t,
    rules_t,
    segments_t,
    templates_t,
    types_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "templates" / "notifications"

SEND_TO = {"all": "all", "primary": "primary", "type": "type", "specific": "type"}


class DefinitionError(CommsError):
    """A notification type, event rule or segment definition is invalid."""


class _Def(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentDef(_Def):
    name: str
    kind: Literal["sql", "list"]
    query: str | None = None
    members: list[str] = Field(default_factory=list)

    def model_post_init(self, _context: Any) -> None:
        if self.kind == "sql" and not (self.query or "").strip():
            raise ValueError("a sql segment needs a query (selecting member_ref)")
        if self.kind == "list" and self.query:
            raise ValueError("a list segment has members, not a query")


def _check_conditions(value: Any, mode: str) -> Any:
    try:
        return cond.dump(cond.parse(value, mode)) if value is not None else None
    except cond.ConditionError as exc:
        raise ValueError(str(exc)) from None


def _check_respect(value: str | None) -> str | None:
    if value is not None and value not in RESPECT:
        raise ValueError(f"respect_consent must be one of {', '.join(RESPECT)}")
    return value


class TypeDef(_Def):
    name: str
    classification: Literal["customer_care", "financial", "reward", "marketing"]
    entity: str
    template: str
    population_query: str | None = None
    segment: str | None = None
    conditions: list[dict[str, Any]] | dict[str, Any] | None = None
    apply_data_protection: bool = True
    respect_consent: str | None = None
    expiry_hours: int | None = Field(None, ge=1)
    cron: str | None = None
    active: bool = True

    _conditions = field_validator("conditions")(lambda v: _check_conditions(v, "all"))
    _respect = field_validator("respect_consent")(_check_respect)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        return check_cron(value) if value else None

    def model_post_init(self, _context: Any) -> None:
        if not (self.population_query or "").strip() and not self.segment:
            raise ValueError("a notification type needs a population_query or a segment")


class RuleDef(_Def):
    name: str
    entity: str
    event: str
    email_template: str | None = None
    sms_template: str | None = None
    send_to: str = "primary"
    address_type: str | None = None
    consider_presentment_preferences: bool = False
    segment: str | None = None
    conditions: list[dict[str, Any]] | dict[str, Any] | None = None
    respect_consent: str | None = None
    active: bool = True

    _conditions = field_validator("conditions")(lambda v: _check_conditions(v, "any"))
    _respect = field_validator("respect_consent")(_check_respect)

    @field_validator("send_to")
    @classmethod
    def _send_to(cls, value: str) -> str:
        if value not in SEND_TO:
            raise ValueError("send_to must be all, primary or specific")
        return SEND_TO[value]

    def model_post_init(self, _context: Any) -> None:
        if not self.email_template and not self.sms_template:
            raise ValueError("an event rule needs an email_template and/or an sms_template")
        if self.send_to == "type" and not self.address_type:
            raise ValueError("send_to = 'specific' needs address_type (e.g. 'work')")


@dataclass
class Definitions:
    segments: dict[str, SegmentDef]
    types: dict[str, TypeDef]
    rules: dict[str, RuleDef]

    def codes(self) -> dict[str, list[str]]:
        return {"segments": sorted(self.segments), "types": sorted(self.types),
                "rules": sorted(self.rules)}


def parse_definitions(data: dict[str, Any], source: str = "definitions") -> Definitions:
    unknown = sorted(set(data) - {"segments", "types", "rules"})
    if unknown:
        raise DefinitionError(f"{source}: unknown table(s) {', '.join(unknown)} "
                              f"(expected segments, types, rules)")
    out = Definitions({}, {}, {})
    kinds = (("segments", SegmentDef, out.segments), ("types", TypeDef, out.types),
             ("rules", RuleDef, out.rules))
    for key, model, target in kinds:
        for code, body in (data.get(key) or {}).items():
            try:
                target[code] = model.model_validate(body)  # type: ignore[assignment]
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or code}: {e['msg']}"
                                     for e in exc.errors())
                raise DefinitionError(f"{source}: {key}.{code}: {problems}") from None
    return out


def load_file(path: str | Path) -> Definitions:
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DefinitionError(f"{file}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{file}: not valid TOML: {exc}") from None
    return parse_definitions(data, str(file))


def load_path(path: str | Path) -> Definitions:
    """One TOML file, or every ``*.toml`` of a directory (merged; a code may appear once)."""
    folder = Path(path)
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else [folder]
    merged = Definitions({}, {}, {})
    for file in files:
        found = load_file(file)
        for key in ("segments", "types", "rules"):
            mine, theirs = getattr(merged, key), getattr(found, key)
            twice = sorted(set(mine) & set(theirs))
            if twice:
                raise DefinitionError(f"{file}: {key} {', '.join(twice)} defined twice")
            mine.update(theirs)
    return merged


# -- saving ---------------------------------------------------------------------------------

#: The audit log's name for each definition table.
AUDIT_KINDS = {"segments": "segment", "notification_types": "notification_type",
               "event_rules": "event_rule"}


def _upsert(conn: Connection, table: Any, code: str, values: dict[str, Any]) -> int:
    """Insert or update by code; a change is recorded in the audit log (fields that
    changed, before and after; ``created_at`` is not a change)."""
    kind = AUDIT_KINDS.get(table.name, table.name)
    fields = [k for k in values if k != "created_at"]
    existing = conn.execute(select(table.c.id, *(table.c[k] for k in fields))
                            .where(table.c.code == code)).mappings().first()
    after = {k: values[k] for k in fields}
    if existing is None:
        new_id = conn.execute(insert(table).values(code=code, **values)
                              .returning(table.c.id)).scalar_one()
        audit.record(conn, action=f"{kind}.create", target_kind=kind, target_id=code,
                     change=audit.changed_fields(None, after))
        return new_id
    change = audit.changed_fields({k: existing[k] for k in fields}, after)
    conn.execute(update(table).where(table.c.id == existing["id"]).values(values))
    if change:
        audit.record(conn, action=f"{kind}.update", target_kind=kind, target_id=code,
                     change=change)
    return existing["id"]


def _segment_id(conn: Connection, code: str | None) -> int | None:
    if code is None:
        return None
    found = conn.execute(select(segments_t.c.id).where(segments_t.c.code == code)
                         ).scalar_one_or_none()
    if found is None:
        raise DefinitionError(f"no segment with code {code!r}")
    return found


def save_definitions(conn: Connection, defs: Definitions) -> list[str]:
    """Insert or replace every definition; return warnings (templates not loaded yet)."""
    from comms_pipeline.core.clock import utcnow

    now = utcnow()
    for code, s in defs.segments.items():
        sid = _upsert(conn, segments_t, code, {"name": s.name, "kind": s.kind,
                                               "query": s.query, "created_at": now})
        conn.execute(delete(members_t).where(members_t.c.segment_id == sid))
        if s.members:
            conn.execute(insert(members_t), [{"segment_id": sid, "member_ref": m}
                                             for m in dict.fromkeys(s.members)])
    for code, t in defs.types.items():
        _upsert(conn, types_t, code, {
            "name": t.name, "classification": t.classification, "entity": t.entity,
            "template_code": t.template, "population_query": t.population_query,
            "segment_id": _segment_id(conn, t.segment), "conditions": t.conditions,
            "apply_data_protection": t.apply_data_protection,
            "respect_consent": t.respect_consent, "expiry_hours": t.expiry_hours,
            "cron": t.cron, "active": t.active, "created_at": now})
    for code, r in defs.rules.items():
        _upsert(conn, rules_t, code, {
            "name": r.name, "entity": r.entity, "event": r.event,
            "email_template": r.email_template, "sms_template": r.sms_template,
            "send_to": r.send_to, "address_type": r.address_type,
            "consider_presentment_preferences": r.consider_presentment_preferences,
            "segment_id": _segment_id(conn, r.segment), "conditions": r.conditions,
            "respect_consent": r.respect_consent, "active": r.active, "created_at": now})
    return missing_templates(conn, defs)


def missing_templates(conn: Connection, defs: Definitions) -> list[str]:
    wanted = {t.template: f"type {c}" for c, t in defs.types.items()}
    for c, r in defs.rules.items():
        for code in (r.email_template, r.sms_template):
            if code:
                wanted.setdefault(code, f"rule {c}")
    if not wanted:
        return []
    present = set(conn.execute(select(templates_t.c.code)
                               .where(templates_t.c.code.in_(list(wanted)))).scalars())
    return [f"{who}: template {code!r} is not loaded yet"
            for code, who in sorted(wanted.items()) if code not in present]


def load_builtin_notifications(conn: Connection) -> Definitions:
    """Save the built-in notification types, event rules and segments; return them."""
    defs = load_path(BUILTIN_DIR)
    save_definitions(conn, defs)
    return defs


# -- reading back ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentInfo:
    id: int
    code: str
    kind: str
    query: str | None


@dataclass(frozen=True)
class TypeInfo:
    id: int
    code: str
    name: str
    classification: str
    entity: str
    template_code: str
    population_query: str | None
    segment: SegmentInfo | None
    conditions: cond.ConditionSet
    apply_data_protection: bool
    respect_consent: str | None
    expiry_hours: int | None
    cron: str | None
    active: bool


def segment_info(conn: Connection, segment_id: int | None) -> SegmentInfo | None:
    if segment_id is None:
        return None
    r = conn.execute(select(segments_t).where(segments_t.c.id == segment_id)).one()
    return SegmentInfo(r.id, r.code, r.kind, r.query)


def load_type(conn: Connection, code: str) -> TypeInfo:
    r = conn.execute(select(types_t).where(types_t.c.code == code)).one_or_none()
    if r is None:
        known = ", ".join(conn.execute(select(types_t.c.code).order_by(types_t.c.code))
                          .scalars()) or "none loaded"
        raise DefinitionError(f"no notification type {code!r} (known: {known})")
    return TypeInfo(r.id, r.code, r.name, r.classification, r.entity, r.template_code,
                    r.population_query, segment_info(conn, r.segment_id),
                    cond.parse(r.conditions, "all"), bool(r.apply_data_protection),
                    r.respect_consent, r.expiry_hours, r.cron, bool(r.active))
