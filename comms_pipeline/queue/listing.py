"""The queue as operators read it: entries with names rather than ids (contact, template,
external system), filtered the same way for listing and for bulk retry or cancel."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, true

from comms_pipeline.core.states import DetailState, public_state
from comms_pipeline.store.models import (
    contacts_t,
    details_t,
    headers_t,
    systems_t,
    templates_t,
    transitions_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql import ColumnElement

COLUMNS = ("id", "created_at", "media", "state", "contact", "template", "system", "address",
           "error_code", "error_description", "attempts")


def entry_filter(*, ids: tuple[int, ...] = (), state: str | None = None,
                 code: str | None = None, media: str | None = None,
                 since: datetime | None = None, contact_ref: str | None = None
                 ) -> ColumnElement[bool]:
    """The entries named by ids and/or filters (``state`` is a public state name)."""
    d = details_t.c
    where: list[Any] = []
    if ids:
        where.append(d.id.in_(ids))
    if state:
        where.append(d.state.in_([s.value for s in DetailState if public_state(s) == state]))
    if code:
        where.append(d.error_code == code)
    if media:
        where.append(d.media == media)
    if since is not None:
        where.append(d.created_at >= since)
    if contact_ref:
        where.append(d.contact_id.in_(select(contacts_t.c.id)
                                      .where(contacts_t.c.ref == contact_ref)))
    return and_(true(), *where)


def list_entries(conn: Connection, where: ColumnElement[bool], limit: int
                 ) -> list[dict[str, Any]]:
    d = details_t.c
    q = (select(d.id, d.created_at, d.media, d.state, contacts_t.c.ref.label("contact"),
                func.coalesce(templates_t.c.code, headers_t.c.template_code).label("template"),
                systems_t.c.code.label("system"),
                d.address, d.error_code, d.error_description, d.attempts)
         .outerjoin(contacts_t, contacts_t.c.id == d.contact_id)
         .outerjoin(templates_t, templates_t.c.id == d.template_id)
         .outerjoin(headers_t, headers_t.c.id == d.header_id)
         .outerjoin(systems_t, systems_t.c.id == d.external_system_id)
         .where(where).order_by(d.id.desc()).limit(limit))
    return [{**r, "state": public_state(r["state"]).value}
            for r in conn.execute(q).mappings()]


def one_line(value: Any, width: int | None = None, sep: str = " / ") -> str:
    """A value on one line (a postal address's lines joined with ' / '), cut to ``width``."""
    text = sep.join(p.strip() for p in str(value).splitlines() if p.strip()) \
        if value is not None else "-"
    if width and len(text) > width:
        text = text[:width - 1] + "…"
    return text or "-"


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """``table`` (a header row, one line per entry), ``json`` or ``csv`` (RFC 4180)."""
    if fmt == "json":
        return json.dumps(rows, default=str, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in rows)
        return out.getvalue().rstrip("\n")
    lines = [f"{'ID':>8}  {'CREATED':<19}  {'MEDIA':<8} {'STATE':<22} {'CONTACT':<10} "
             f"{'TEMPLATE':<24} {'ADDRESS':<32} ERROR"]
    for r in rows:
        error = one_line(f"{r['error_code']}: {r['error_description']}", sep=" ") \
            if r["error_code"] else ""
        created = r["created_at"].strftime("%Y-%m-%d %H:%M:%S") if r["created_at"] else "-"
        lines.append(f"{r['id']:>8}  {created:<19}  {r['media']:<8} {r['state']:<22} "
                     f"{one_line(r['contact'], 10):<10} "
                     f"{one_line(r['template'] or r['system'], 24):<24} "
                     f"{one_line(r['address'], 32):<32} {error}".rstrip())
    return "\n".join(lines)


#: Where ``queue show`` puts the entry's names: after these columns of its own.
_NAMES_AFTER = "id"


def show_entry(conn: Connection, entry_id: int) -> dict[str, Any] | None:
    """One entry as ``queue show`` prints it: its own columns, with the rows it points at
    named (contact ref, template code, external system code, the request and its event)
    instead of their ids. The request keeps its id: that is what ``comms requests show``
    and ``GET /v1/requests/{id}`` take."""
    d, h = details_t.c, headers_t.c
    q = (select(details_t, contacts_t.c.ref.label("contact"),
                func.coalesce(templates_t.c.code, h.template_code).label("template"),
                systems_t.c.code.label("system"), h.event.label("request_event"),
                h.idempotency_key.label("request_key"))
         .outerjoin(contacts_t, contacts_t.c.id == d.contact_id)
         .outerjoin(templates_t, templates_t.c.id == d.template_id)
         .outerjoin(headers_t, h.id == d.header_id)
         .outerjoin(systems_t, systems_t.c.id == d.external_system_id)
         .where(d.id == entry_id))
    row = conn.execute(q).mappings().first()
    if row is None:
        return None
    raw = dict(row)
    named = {"contact": raw.pop("contact"), "template": raw.pop("template"),
             "system": raw.pop("system"),
             "request": f"{raw['header_id']} (comms requests show {raw['header_id']})",
             "request_event": raw.pop("request_event"), "request_key": raw.pop("request_key")}
    for key in ("header_id", "contact_id", "template_id", "external_system_id"):
        raw.pop(key)
    shown: dict[str, Any] = {}
    for key, value in raw.items():
        shown[key] = value
        if key == _NAMES_AFTER:
            shown.update(named)
    return shown


def entry_history(conn: Connection, entry_id: int) -> list[dict[str, Any]]:
    """The entry's state changes, oldest first."""
    t = transitions_t.c
    return [dict(r) for r in conn.execute(
        select(transitions_t).where(t.kind == "detail", t.row_id == entry_id)
        .order_by(t.id)).mappings()]


def matching_ids(conn: Connection, where: ColumnElement[bool]) -> list[int]:
    """The ids of the entries ``where`` names (for a dry run, or a retry by filter)."""
    return list(conn.execute(select(details_t.c.id).where(where)).scalars())


def retryable(where: ColumnElement[bool]) -> ColumnElement[bool]:
    """Of the entries ``where`` names, those a retry may send again (Rejected or Expired)."""
    return and_(where, details_t.c.state.in_([DetailState.REJECTED, DetailState.EXPIRED]))
