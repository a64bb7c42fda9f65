"""SMPP delivery receipts: parse them, find their queue entry, and record what they say.

A receipt names the message by the id the SMSC gave in ``submit_sm_resp``, but two things
make matching harder than a lookup. SMSCs often write that id in hex in one PDU and in
decimal in the other (so we try both forms, see :func:`id_candidates`), and a receipt often
arrives *before* the detail's ``gateway_ref`` is committed: the SMSC may send it ahead of the
``submit_sm_resp``, and in any case the daemon records references only when its batch is
finished. So :class:`ReceiptApplier` keeps receipts it cannot match yet in memory and tries
again until ``hold_seconds`` have passed.

A multipart message's ``gateway_ref`` holds all its part ids joined with commas (first part
first). Receipts of later parts are matched through the part ids this process submitted
(:meth:`ReceiptApplier.remember`), and, as a last resort before a receipt is dropped, by a
pattern search over ``gateway_ref``.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import bindparam, or_, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import DetailState, Media
from comms_pipeline.queue.claims import transition_rows
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.store.models import details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = structlog.get_logger(__name__)

#: SMPP v3.4 message_state TLV values, as the ``stat:`` words of the receipt text.
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
FAILED = frozenset({"EXPIRED", "DELETED", "UNDELIV", "REJECTD"})
_RANK = {"ENROUTE": 0, "ACCEPTD": 0, "UNKNOWN": 1, "DELIVRD": 2}
_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err|text):(\S*)", re.IGNORECASE)
_CHUNK = 400


@dataclass(frozen=True)
class Receipt:
    message_id: str
    stat: str
    err: str | None = None
    done_date: str | None = None
    received: float = field(default_factory=time.monotonic, compare=False)


def parse_receipt(short_message: bytes | str | None,
                  receipted_message_id: bytes | str | None = None,
                  message_state: int | None = None) -> Receipt | None:
    """A receipt from a deliver_sm's text (``id:... stat:... err:...``) and its TLVs.

    The TLVs, when present, win over the text: they are typed, the text is free-form.
    """
    text = _text(short_message)
    fields = {k.lower(): v for k, v in _FIELD.findall(text)}
    message_id = _text(receipted_message_id).strip("\x00 ") or fields.get("id", "")
    stat = MESSAGE_STATES.get(message_state or 0) or fields.get("stat", "").upper()
    if not message_id or not stat:
        return None
    return Receipt(message_id, stat, fields.get("err"), fields.get("done date"))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def id_candidates(message_id: str, fmt: str = "auto") -> list[str]:
    """The forms the submit_sm_resp may have given ``message_id`` in, most likely first.

    ``fmt`` says how receipts write ids relative to the response: ``same``, ``hex`` (the
    response was decimal), ``decimal`` (the response was hex) or ``auto`` (try all).
    """
    out = [message_id]
    if fmt == "same":
        return out
    if fmt in ("auto", "hex") and re.fullmatch(r"[0-9a-fA-F]+", message_id):
        out.append(str(int(message_id, 16)))
    if fmt in ("auto", "decimal") and message_id.isdigit():
        n = int(message_id)
        out += [f"{n:x}", f"{n:X}", f"{n:08x}", f"{n:08X}"]
    if fmt == "auto":
        out += [message_id.lower(), message_id.upper()]
    seen: dict[str, None] = dict.fromkeys(out)
    return list(seen)


def _status_values(receipt: Receipt, current: str | None) -> dict | None:
    """The detail's new values for this receipt, or None when a stronger status is recorded.

    Status strength: failures > DELIVRD > UNKNOWN > intermediate states, so that one failed
    part of a multipart message is not hidden by another part's DELIVRD.
    """
    new_rank = 3 if receipt.stat in FAILED else _RANK.get(receipt.stat, 0)
    old_rank = -1 if current is None else (3 if current in FAILED else _RANK.get(current, -1))
    if new_rank < old_rank:
        return None
    values: dict = {"gateway_status": receipt.stat[:64], "updated_at": utcnow()}
    if receipt.stat in FAILED:
        values["error_code"] = receipt.stat
        values["error_description"] = (
            f"delivery receipt {receipt.stat}" + (f" err:{receipt.err}" if receipt.err else ""))
    return values


def apply_receipts(conn: Connection, receipts: Sequence[Receipt], fmt: str = "auto",
                   aliases: dict[str, str] | None = None, search: bool = False) -> list[Receipt]:
    """Record receipts on their details; return those whose detail was not found.

    ``aliases`` maps part ids to a multipart message's full ``gateway_ref``; ``search`` also
    tries a pattern match on joined references (slow: a table scan, used before dropping).
    """
    aliases = aliases or {}
    wanted: dict[str, list[str]] = {}
    for r in receipts:
        cands = id_candidates(r.message_id, fmt)
        cands += [aliases[c] for c in cands if c in aliases]
        wanted[r.message_id] = cands
    refs = sorted({c for cands in wanted.values() for c in cands})
    found: dict[str, tuple[int, str | None]] = {}
    for i in range(0, len(refs), _CHUNK):
        q = select(details_t.c.id, details_t.c.gateway_ref, details_t.c.gateway_status).where(
            details_t.c.media == "sms", details_t.c.gateway_ref.in_(refs[i:i + _CHUNK]))
        found.update({row.gateway_ref: (row.id, row.gateway_status) for row in conn.execute(q)})
    if search:
        _search_joined(conn, [c for r in receipts for c in wanted[r.message_id]
                              if not any(x in found for x in wanted[r.message_id])], found)
    updates: dict[int, dict] = {}
    unmatched = []
    for r in receipts:
        hit = next((found[c] for c in wanted[r.message_id] if c in found), None)
        if hit is None:
            unmatched.append(r)
            continue
        detail_id, current = hit
        current = updates.get(detail_id, {}).get("gateway_status", current)
        values = _status_values(r, current)
        if values is not None:
            updates[detail_id] = {**updates.get(detail_id, {}), **values}
            log.debug("sms.receipt", detail_id=detail_id, stat=r.stat, err=r.err)
    _write(conn, updates)
    _reject_failed(conn, updates)
    return unmatched


def _reject_failed(conn: Connection, updates: dict[int, dict]) -> None:
    """A receipt saying the SMSC could not deliver (UNDELIV, EXPIRED, ...) turns the entry
    from Completed to Rejected, with the receipt as its error, in the state history."""
    by_stat: dict[str, list[int]] = {}
    for detail_id, values in updates.items():
        if values.get("error_code") in FAILED:
            by_stat.setdefault(values["error_code"], []).append(detail_id)
    queue = detail_queue(Media.SMS, DetailState.COMPLETED)
    for stat, ids in by_stat.items():
        transition_rows(conn, queue, details_t.c.id.in_(ids)
                        & (details_t.c.state == DetailState.COMPLETED),
                        DetailState.REJECTED, "sms-receipt", code=stat)


def _search_joined(conn: Connection, cands: Iterable[str], found: dict) -> None:
    col = details_t.c.gateway_ref
    for cand in dict.fromkeys(cands):
        if not re.fullmatch(r"[\w.:-]+", cand):
            continue
        q = select(details_t.c.id, col, details_t.c.gateway_status).where(
            details_t.c.media == "sms",
            or_(col.like(f"{cand},%"), col.like(f"%,{cand}"), col.like(f"%,{cand},%")))
        row = conn.execute(q.limit(1)).first()
        if row is not None:
            found[cand] = (row.id, row.gateway_status)


def _write(conn: Connection, updates: dict[int, dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for detail_id, values in updates.items():
        groups.setdefault(tuple(sorted(values)), []).append({"_id": detail_id, **values})
    for keys, params in groups.items():
        stmt = update(details_t).where(details_t.c.id == bindparam("_id")).values(
            {k: bindparam(k) for k in keys})
        conn.execute(stmt, params)


class ReceiptApplier:
    """Applies receipts in a background thread; holds early ones until their detail exists.

    :meth:`submit` is called from the SMPP reader thread and only queues. The thread flushes
    every ``interval`` seconds; :meth:`close` makes a last attempt (including the slow
    pattern search) and logs what is dropped, so a ``--once`` run applies every receipt that
    arrived before it stopped.
    """

    def __init__(self, engine: Engine, *, fmt: str = "auto", hold_seconds: float = 300.0,
                 interval: float = 0.25, max_held: int = 200_000,
                 max_aliases: int = 200_000) -> None:
        self.engine = engine
        self.fmt = fmt
        self.hold_seconds = hold_seconds
        self.interval = interval
        self.max_held = max_held
        self.max_aliases = max_aliases
        self.applied = 0
        self.dropped = 0
        self._pending: list[Receipt] = []
        self._held: list[Receipt] = []
        self._aliases: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, receipt: Receipt) -> None:
        with self._lock:
            self._pending.append(receipt)
        self._start()

    def remember(self, gateway_ref: str | None) -> None:
        """Note the part ids of a multipart message so any part's receipt finds it."""
        if not gateway_ref or "," not in gateway_ref:
            return
        with self._lock:
            for part_id in gateway_ref.split(","):
                self._aliases[part_id] = gateway_ref
            while len(self._aliases) > self.max_aliases:
                self._aliases.popitem(last=False)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held) + len(self._pending)

    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="sms-receipts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # keep the thread; the receipts stay held
                log.warning("sms.receipts_failed", error=str(exc))

    def flush(self, final: bool = False) -> int:
        """Apply pending and held receipts now; return how many found their detail."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending, self._held = self._held + self._pending, [], []
                aliases = dict(self._aliases)
            if not batch:
                return 0
            with self.engine.begin() as conn:
                unmatched = apply_receipts(conn, batch, self.fmt, aliases, search=final)
            self.applied += len(batch) - len(unmatched)
            self._hold(unmatched, final)
            return len(batch) - len(unmatched)

    def _hold(self, unmatched: list[Receipt], final: bool) -> None:
        now = time.monotonic()
        keep = [] if final else [r for r in unmatched if now - r.received < self.hold_seconds]
        keep = keep[-self.max_held:]
        lost = len(unmatched) - len(keep)
        if lost:
            self.dropped += lost
            log.warning("sms.receipt_unmatched", count=lost,
                        ids=[r.message_id for r in unmatched[:10]])
        with self._lock:
            self._held = keep + self._held

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush(final=True)
