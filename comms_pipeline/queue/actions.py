"""What an external system does to its queue entries: complete, reject, complete and remove.

Each action is a compare-and-set through :func:`comms_pipeline.queue.claims.transition_rows`: the
row changes only if it is still in a state the action may leave, so two callers racing on one
entry cannot both win (PostgreSQL: the row is locked and the loser skips it; SQLite: one
writer at a time). The loser is told why — the state the entry is in now, or that it changed
under it. The Web API and the status files third parties drop (SPEC: "both end in the same
state transition") both come here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, or_, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import DetailState, public_state
from comms_pipeline.queue.claims import WorkQueue, transition_rows
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.store.models import details_t
from comms_pipeline.store.queries import find_external_system

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Connection, Engine

log = structlog.get_logger(__name__)


class EntryNotFound(CommsError):
    """No such queue entry for this caller."""


class TransitionConflict(CommsError):
    """The entry is not in a state this action may leave."""

    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class Action:
    name: str
    from_states: frozenset[str]
    to_state: str


ACTIONS = {
    "complete": Action("complete", frozenset({DetailState.AWAITING_EXTERNAL}),
                       DetailState.COMPLETED),
    "reject": Action("reject", frozenset({DetailState.AWAITING_EXTERNAL}),
                     DetailState.REJECTED),
    "remove": Action("remove", frozenset({DetailState.AWAITING_EXTERNAL, DetailState.COMPLETED}),
                     DetailState.COMPLETED_REMOVED),
}


def external_entries_queue() -> WorkQueue:
    """Queue entries addressed to external systems, as a target of compare-and-set changes."""
    return WorkQueue(machine=DETAILS,
                     pending=lambda: details_t.c.external_system_id.isnot(None))


_QUEUE = external_entries_queue()


def owner_clause(external_system_id: int | None):
    """Entries the caller may see: its own system's, or any system's (admin: None)."""
    c = details_t.c
    if external_system_id is None:
        return c.external_system_id.isnot(None)
    return c.external_system_id == external_system_id


def apply_action(conn: Connection, detail_id: int, action: str, *, actor: str,
                 external_system_id: int | None = None, code: str | None = None,
                 description: str | None = None, now: datetime | None = None) -> str:
    """Move one entry; return its new state, or raise :class:`EntryNotFound` /
    :class:`TransitionConflict` (with the reason) and change nothing."""
    spec = ACTIONS[action]
    now = now or utcnow()
    where = and_(details_t.c.id == detail_id, _movable(spec, external_system_id, now))
    changed = transition_rows(conn, _QUEUE, where, spec.to_state, actor,
                              code=code if action == "reject" else None,
                              values=_values(action, code, description, now))
    if changed:
        log.info("queue.entry_changed", detail_id=detail_id, action=action,
                 to_state=spec.to_state, actor=actor)
        return spec.to_state
    raise _why_not(conn, detail_id, spec, external_system_id, now)


@dataclass(frozen=True)
class Ack:
    """One acknowledgement: ``action`` on entry ``id`` (code and description: reject only)."""

    id: int
    action: str
    code: str | None = None
    description: str | None = None


def apply_actions(conn: Connection, acks: list[Ack], *, actor: str,
                  external_system_id: int | None = None) -> list[str | CommsError]:
    """Many acknowledgements in one transaction: per request, the new state or the
    :class:`EntryNotFound` / :class:`TransitionConflict` that refused it.

    Acknowledgements with the same action (and error) are moved by one compare-and-set over
    all their ids; only the refused ones are looked at one by one to say why. A list naming
    an entry twice is applied in order, one acknowledgement at a time.
    """
    if len({r.id for r in acks}) < len(acks):
        return [_one(conn, r, actor, external_system_id) for r in acks]
    now = utcnow()
    c = details_t.c
    results: dict[int, str | CommsError] = {}
    groups: dict[tuple[str, str | None, str | None], list[int]] = {}
    for r in acks:
        groups.setdefault((r.action, r.code, r.description), []).append(r.id)
    for (action, code, description), ids in groups.items():
        spec = ACTIONS[action]
        where = and_(c.id.in_(ids), _movable(spec, external_system_id, now))
        changed = set(transition_rows(conn, _QUEUE, where, spec.to_state, actor,
                                      code=code if action == "reject" else None,
                                      values=_values(action, code, description, now)))
        for entry_id in ids:
            results[entry_id] = spec.to_state if entry_id in changed else \
                _why_not(conn, entry_id, spec, external_system_id, now)
        log.info("queue.entries_changed", action=action, count=len(changed), actor=actor)
    return [results[r.id] for r in acks]


def _one(conn: Connection, r: Ack, actor: str,
         external_system_id: int | None) -> str | CommsError:
    try:
        return apply_action(conn, r.id, r.action, actor=actor,
                            external_system_id=external_system_id, code=r.code,
                            description=r.description)
    except (EntryNotFound, TransitionConflict) as exc:
        return exc


def _movable(spec: Action, external_system_id: int | None, now: datetime):
    """Rows this action may move: the caller's, in a state it may leave, not expired."""
    c = details_t.c
    # A Pending entry whose expiry has passed is Expired (the sweep may not have run yet).
    return and_(owner_clause(external_system_id), c.state.in_(sorted(spec.from_states)),
                or_(c.state != DetailState.AWAITING_EXTERNAL, c.expires_at.is_(None),
                    c.expires_at > now))


def _values(action: str, code: str | None, description: str | None,
            now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"completed_at": now}
    if action == "reject":
        values.update(error_code=code, error_description=description)
    return values


def _why_not(conn: Connection, detail_id: int, spec: Action, external_system_id: int | None,
             now: datetime) -> CommsError:
    c = details_t.c
    row = conn.execute(select(c.state, c.expires_at, c.claimed_by, c.lease_until).where(
        c.id == detail_id, owner_clause(external_system_id))).first()
    if row is None:
        return EntryNotFound(f"no queue entry {detail_id}")
    shown = public_state(row.state).value
    if row.state not in spec.from_states:  # (an Expired entry says so here too)
        allowed = " or ".join(sorted({public_state(s).value for s in spec.from_states}))
        verb = {"complete": "completed", "reject": "rejected",
                "remove": "completed and removed"}[spec.name]
        return TransitionConflict(f"entry {detail_id} is {shown}; only a {allowed} entry "
                                  f"can be {verb}", shown)
    if row.state == DetailState.AWAITING_EXTERNAL and row.expires_at is not None \
            and row.expires_at <= now:
        return TransitionConflict(f"entry {detail_id} expired at "
                                  f"{row.expires_at:%Y-%m-%d %H:%M:%S} UTC", "Expired")
    if row.claimed_by is not None and row.lease_until is not None and row.lease_until > now:
        return TransitionConflict(f"entry {detail_id} is being delivered by "
                                  f"{row.claimed_by}; try again later", shown)
    return TransitionConflict(f"entry {detail_id} was changed by another caller at the same "
                              "time; read it again", shown)


# -- acknowledgement by status file ---------------------------------------------------------
STATUS_WORDS = {
    "sent": "complete", "completed": "complete", "complete": "complete", "ok": "complete",
    "error": "reject", "rejected": "reject", "reject": "reject", "failed": "reject",
    "removed": "remove", "completed and removed": "remove", "completed_removed": "remove",
    "remove": "remove",
}


@dataclass
class StatusFileResult:
    applied: int = 0
    #: ``(line, entry id or None, reason)`` for every line that changed nothing.
    refused: list[tuple[int, int | None, str]] = field(default_factory=list)


def read_status_file(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a CSV (header ``entry_id,status,error_code,
    error_description``) or JSON (a list of such objects, or ``{"entries": [...]}``) file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        data = json.loads(text)
        items = data.get("entries", []) if isinstance(data, dict) else data
        for i, item in enumerate(items, start=1):
            yield i, item if isinstance(item, dict) else {"_invalid": item}
        return
    reader = csv.DictReader(io.StringIO(text))
    for record in reader:
        yield reader.line_num, {(k or "").strip().lower(): (v or "").strip()
                                for k, v in record.items()}


def _parse(record: dict[str, Any]) -> tuple[int, str, str | None, str | None]:
    raw_id = record.get("entry_id", record.get("id"))
    try:
        entry_id = int(str(raw_id).strip())
    except (TypeError, ValueError):
        raise ValueError(f"entry_id {raw_id!r} is not a number") from None
    word = str(record.get("status") or "").strip().lower()
    action = STATUS_WORDS.get(word)
    if action is None:
        raise ValueError(f"status {record.get('status')!r} is not one of Sent, Error, Removed")
    code = str(record.get("error_code") or "").strip() or None
    description = str(record.get("error_description") or "").strip() or None
    if action == "reject":
        code = code or "EXTERNAL_ERROR"
        description = description or "reported as an error by the external system"
    return entry_id, action, code, description


def apply_status_records(engine: Engine, records: Iterable[tuple[int, dict[str, Any]]], *,
                         actor: str, external_system_id: int | None = None,
                         chunk: int = 500) -> StatusFileResult:
    """Apply acknowledgements, ``chunk`` lines per transaction; a bad line changes nothing
    and is reported, the others carry on."""
    result = StatusFileResult()
    batch: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        acks: list[tuple[int, Ack]] = []
        for line, record in batch:
            try:
                entry_id, action, code, description = _parse(record)
            except ValueError as exc:
                result.refused.append((line, None, str(exc)))
                continue
            acks.append((line, Ack(entry_id, action, code, description)))
        with engine.begin() as conn:
            outcomes = apply_actions(conn, [a for _, a in acks], actor=actor,
                                     external_system_id=external_system_id)
        for (line, ack), outcome in zip(acks, outcomes, strict=True):
            if isinstance(outcome, CommsError):
                result.refused.append((line, ack.id, str(outcome)))
            else:
                result.applied += 1
        result.refused.sort(key=lambda r: r[0])
        batch.clear()

    for item in records:
        batch.append(item)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return result


def apply_status_file(engine: Engine, path: str | Path, *,
                      external_system: str | None = None) -> StatusFileResult:
    """Acknowledge entries from a third party's status file (optionally of one system only)."""
    path = Path(path)
    system_id = None
    if external_system is not None:
        with engine.connect() as conn:
            system_id = find_external_system(conn, external_system)
        if system_id is None:
            raise EntryNotFound(f"no external system with code {external_system!r}")
    try:
        records = list(read_status_file(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise CommsError(f"{path}: cannot read the status file ({exc})") from None
    result = apply_status_records(engine, records, actor=f"status-file:{path.name}",
                                  external_system_id=system_id)
    log.info("queue.status_file_applied", file=path.name, applied=result.applied,
             refused=len(result.refused))
    return result
