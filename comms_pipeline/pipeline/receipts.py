"""SMPP delivery receipts: parse them, keep them, find their part, record what they say.

A receipt names one part of a message by the id the SMSC gave in ``submit_sm_resp``. Every
part's id is kept in full in ``sms_parts`` (written with the detail's completion), and
receipts are matched there. Three things make matching harder than a lookup:

* A receipt often arrives *before* its part is recorded: the SMSC may send it ahead of the
  ``submit_sm_resp``, and in any case parts are written when the batch is finished. So every
  receipt is first written to ``sms_receipts`` (by a side thread, before it is acknowledged
  to the SMSC, so a crash loses none: an unacknowledged one is sent again) and
  :class:`ReceiptApplier` matches stored receipts, keeping the unmatched ones for
  ``hold_seconds``, across restarts and for whichever SMS daemon runs.
* Some SMSCs write the id in hex in one PDU and in decimal in the other;
  ``receipt_id_format`` says so, and only then is the other form tried
  (:func:`id_candidates`), after the id as written matched nothing: with small sequential
  ids, ``92`` is both a message's id and the hex form of another's.
* Ids can be long (36-character UUIDs), which is why they are not matched through the
  detail's ``gateway_ref`` (at most 128 characters of the joined part ids); that column is
  still looked up, exactly, for details sent before ``sms_parts`` existed.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import bindparam, delete, func, insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import DetailState, Media
from comms_pipeline.gateways.smpp_receipts import FAILED, Receipt
from comms_pipeline.pipeline.suppressions import DeadTarget, suppress_dead
from comms_pipeline.queue.callbacks import enqueue_events
from comms_pipeline.queue.claims import transition_rows
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.store.dialect import is_postgres
from comms_pipeline.store.models import details_t, sms_parts_t, sms_receipts_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = structlog.get_logger(__name__)

_RANK = {"ENROUTE": 0, "ACCEPTD": 0, "UNKNOWN": 1, "DELIVRD": 2}
DELIVERED = "DELIVRD"
_CHUNK = 400


def id_candidates(message_id: str, fmt: str = "exact") -> list[str]:
    """The forms the submit_sm_resp may have given ``message_id`` in: the id as written
    first, then the conversions the configured format (``receipt_id_format``) names.

    ``hex-to-dec``: receipts write in hex the ids the responses gave in decimal;
    ``dec-to-hex``: the other way round; ``exact``: no conversion. Conversions are never
    guessed: with small sequential ids ``"92"`` is a decimal id and the hex form of ``146``.
    """
    out = [message_id]
    if fmt == "hex-to-dec" and re.fullmatch(r"[0-9a-fA-F]{1,16}", message_id):
        out.append(str(int(message_id, 16)))
    elif fmt == "dec-to-hex" and message_id.isdigit() and len(message_id) <= 20:
        n = int(message_id)
        out += [f"{n:x}", f"{n:X}", f"{n:08x}", f"{n:08X}"]
    return list(dict.fromkeys(out))


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


Hit = tuple[int, "str | None", "int | None"]  # detail id, its gateway_status, sms_parts id


def store_receipts(conn: Connection, receipts: Sequence[Receipt]) -> None:
    """Keep receipts until they are matched (before they are acknowledged to the SMSC)."""
    if receipts:
        conn.execute(insert(sms_receipts_t), [
            {"message_id": r.message_id[:128], "stat": r.stat[:16],
             "err": (r.err or None) and r.err[:32],
             "done_date": (r.done_date or None) and r.done_date[:32],
             "received_at": r.received_at} for r in receipts])


def record_parts(conn: Connection, parts: Iterable[tuple[int, Sequence[str]]]) -> None:
    """Write ``(detail id, part ids)`` to ``sms_parts``, every id in full."""
    now = utcnow()
    rows = [{"detail_id": detail_id, "part_no": n, "message_id": message_id[:128],
             "created_at": now}
            for detail_id, ids in parts for n, message_id in enumerate(ids, 1)]
    if rows:
        conn.execute(insert(sms_parts_t), rows)


def _error_number(err: str | None) -> int | None:
    try:
        return int(err or "", 10)
    except ValueError:
        return None


def apply_receipts(conn: Connection, receipts: Sequence[Receipt], fmt: str = "exact",
                   may_convert: Callable[[Receipt], bool] | None = None,
                   destination_errors: Iterable[str] = ()) -> list[Receipt]:
    """Record receipts on their parts and details; return those whose part was not found.

    The id as the SMSC wrote it always wins: conversions (``fmt``) are looked up only for
    receipts whose own id matched nothing, and only when ``may_convert(receipt)`` agrees
    (the daemon refuses while the exact id may still be on its way to the database).
    An UNDELIV receipt whose ``err`` is one of ``destination_errors`` (compared as numbers)
    puts the detail's number on the suppression list.
    """
    hits = _find(conn, receipts, fmt, may_convert)
    firsts = {hit[0]: hit[1] for hit in hits.values()}  # each detail's status before these
    updates: dict[int, dict] = {}
    part_updates: list[dict] = []
    unmatched = []
    dead_errors = {n for n in map(_error_number, destination_errors) if n is not None}
    dead: dict[int, Receipt] = {}
    now = utcnow()
    for i, r in enumerate(receipts):
        if i not in hits:
            unmatched.append(r)
            continue
        detail_id, current, part_id = hits[i]
        if r.stat == "UNDELIV" and _error_number(r.err) in dead_errors:
            dead.setdefault(detail_id, r)
        if part_id is not None:
            part_updates.append({"_id": part_id, "receipt_state": r.stat[:16],
                                 "receipt_at": now})
        current = updates.get(detail_id, {}).get("gateway_status", current)
        values = _status_values(r, current)
        if values is not None:
            updates[detail_id] = {**updates.get(detail_id, {}), **values}
            log.debug("sms.receipt", detail_id=detail_id, stat=r.stat, err=r.err)
    if part_updates:
        conn.execute(update(sms_parts_t).where(sms_parts_t.c.id == bindparam("_id")).values(
            receipt_state=bindparam("receipt_state"), receipt_at=bindparam("receipt_at")),
            part_updates)
    _write(conn, updates)
    _reject_failed(conn, updates)
    if dead:
        _suppress_numbers(conn, dead)
    delivered = [i for i, v in updates.items() if v.get("gateway_status") == DELIVERED
                 and firsts.get(i) != DELIVERED]
    enqueue_events(conn, delivered, "delivered", code=DELIVERED)
    return unmatched


def _suppress_numbers(conn: Connection, dead: dict[int, Receipt]) -> None:
    ids = sorted(dead)
    numbers: dict[int, str] = {}
    for i in range(0, len(ids), _CHUNK):
        for detail_id, address in conn.execute(select(details_t.c.id, details_t.c.address)
                                               .where(details_t.c.id.in_(ids[i:i + _CHUNK]))):
            if address:
                numbers[detail_id] = address
    suppress_dead(conn, [(detail_id, DeadTarget(
        numbers[detail_id], Media.SMS, "smpp_permanent",
        f"delivery receipt UNDELIV err:{r.err}")) for detail_id, r in dead.items()
        if detail_id in numbers], "sms-receipt")


def _find(conn: Connection, receipts: Sequence[Receipt], fmt: str,
          may_convert: Callable[[Receipt], bool] | None) -> dict[int, Hit]:
    """``receipt index -> hit``: exact ids first, then (as configured) conversions."""
    found = _lookup(conn, {r.message_id for r in receipts})
    hits = {i: found[r.message_id] for i, r in enumerate(receipts) if r.message_id in found}
    if fmt == "exact":
        return hits
    converted = {i: id_candidates(r.message_id, fmt)[1:] for i, r in enumerate(receipts)
                 if i not in hits and (may_convert is None or may_convert(r))}
    found = _lookup(conn, {c for cands in converted.values() for c in cands})
    for i, cands in converted.items():
        hit = next((found[c] for c in cands if c in found), None)
        if hit is not None:
            hits[i] = hit
    return hits


def _lookup(conn: Connection, refs: Iterable[str]) -> dict[str, Hit]:
    """``message id -> hit`` for the SMS parts with these ids (the latest part when an SMSC
    reused an id), then for details sent before parts were recorded (their gateway_ref)."""
    refs = sorted(set(refs))
    found: dict[str, Hit] = {}
    p, d = sms_parts_t, details_t
    for i in range(0, len(refs), _CHUNK):
        chunk = refs[i:i + _CHUNK]
        q = (select(p.c.id, p.c.message_id, p.c.detail_id, d.c.gateway_status)
             .join(d, d.c.id == p.c.detail_id)
             .where(p.c.message_id.in_(chunk)).order_by(p.c.id))
        found.update({row.message_id: (row.detail_id, row.gateway_status, row.id)
                      for row in conn.execute(q)})
        rest = [c for c in chunk if c not in found]
        if rest:
            q = select(d.c.id, d.c.gateway_ref, d.c.gateway_status).where(
                d.c.media == "sms", d.c.gateway_ref.in_(rest))
            found.update({row.gateway_ref: (row.id, row.gateway_status, None)
                          for row in conn.execute(q)})
    return found


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


def _write(conn: Connection, updates: dict[int, dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for detail_id, values in updates.items():
        groups.setdefault(tuple(sorted(values)), []).append({"_id": detail_id, **values})
    for keys, params in groups.items():
        stmt = update(details_t).where(details_t.c.id == bindparam("_id")).values(
            {k: bindparam(k) for k in keys})
        conn.execute(stmt, params)


class ReceiptApplier:
    """Stores receipts as they arrive and matches them in a background thread.

    :meth:`take` is called from the SMPP reader with the receipts of one read; the thread
    writes them to ``sms_receipts`` and only then acknowledges them. It matches new
    receipts at once and retries the unmatched ones every ``interval`` seconds; a receipt
    still unmatched after ``hold_seconds`` is dropped (and logged). :meth:`close` makes a
    last attempt; what is left stays stored for the next run.
    """

    def __init__(self, engine: Engine, *, fmt: str = "exact", hold_seconds: float = 300.0,
                 interval: float = 0.5, max_expected: int = 200_000,
                 settle_seconds: float = 2.0, chunk: int = 2000,
                 gather: float = 0.05, destination_errors: Iterable[str] = ()) -> None:
        self.engine = engine
        #: ``err:`` values of UNDELIV receipts that suppress the number.
        self.destination_errors = tuple(destination_errors)
        #: Receipts are stored (and acknowledged) at most this late, in one transaction for
        #: all that came meanwhile: one commit per receipt would slow the whole daemon.
        self.gather = gather
        self.fmt = fmt
        self.hold_seconds = hold_seconds
        self.interval = interval
        self.max_expected = max_expected
        #: A conversion is tried only on receipts at least this old: one that came ahead of
        #: its own submit_sm_resp would otherwise be converted onto another message's id.
        self.settle_seconds = settle_seconds
        self.chunk = chunk
        self.applied = 0
        self.dropped = 0
        self._pg = is_postgres(engine)
        self._seen = 0  # highest sms_receipts id looked at: newer ones are tried at once
        self._last_retry = 0.0
        self._expected: OrderedDict[str, float] = OrderedDict()
        self._incoming: list[tuple[list[Receipt], Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def store(self, receipts: Sequence[Receipt]) -> None:
        """Write receipts durably now (raises if the database cannot take them)."""
        with self.engine.begin() as conn:
            store_receipts(conn, receipts)
        self._wake.set()
        self.start()

    def take(self, receipts: Sequence[Receipt], ack: Callable[[], None]) -> None:
        """Called by the SMPP reader: the thread stores ``receipts`` (with whatever else
        came meanwhile, in one transaction) and then calls ``ack()``, so the reader never
        waits for the database. Receipts that cannot be stored are not acknowledged: the
        SMSC sends them again."""
        with self._lock:
            self._incoming.append((list(receipts), ack))
        self._wake.set()
        self.start()

    def drain(self) -> None:
        """Store and acknowledge what was taken in, now (before the link is closed)."""
        self._store_incoming()

    def _store_incoming(self) -> None:
        # One store at a time, acknowledgements included: drain() before an unbind waits for
        # the thread's store in progress, whose acks would otherwise go to a closed link.
        with self._store_lock:
            with self._lock:
                incoming, self._incoming = self._incoming, []
            if not incoming:
                return
            try:
                with self.engine.begin() as conn:
                    store_receipts(conn, [r for receipts, _ in incoming for r in receipts])
            except Exception as exc:  # not acknowledged: the SMSC keeps them and sends again
                log.warning("sms.receipts_not_stored", count=sum(len(r) for r, _ in incoming),
                            error=str(exc))
                return
            for _, ack in incoming:
                ack()

    def submit(self, receipt: Receipt) -> None:
        self.store([receipt])

    def expect(self, message_id: str) -> None:
        """Note an id the SMSC gave in a submit_sm_resp that may not be recorded yet: a
        receipt with this id waits for its own message and is never converted."""
        now = time.monotonic()
        with self._lock:
            self._expected[message_id] = now
            self._expected.move_to_end(message_id)
            while self._expected and (len(self._expected) > self.max_expected or
                                      now - next(iter(self._expected.values()))
                                      > self.hold_seconds):
                self._expected.popitem(last=False)

    def _may_convert(self, receipt: Receipt, final: bool) -> bool:
        with self._lock:
            if receipt.message_id in self._expected:
                return False
        age = (utcnow() - receipt.received_at).total_seconds()
        return final or age >= self.settle_seconds

    @property
    def held(self) -> int:
        """Receipts stored and not matched yet (by any daemon)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(sms_receipts_t)).scalar_one()

    def start(self) -> None:
        """Run the matching thread (also for receipts a previous run left stored)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="sms-receipts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self.interval):
                self._stop.wait(self.gather)  # let a few reads' receipts come together
            self._wake.clear()
            try:
                self._store_incoming()
                # Matching waits for the interval: a receipt just taken in rarely finds its
                # part at once (parts are recorded when their batch is finished).
                if not self._stop.is_set() and \
                        time.monotonic() - self._last_retry >= self.interval:
                    self.flush()
            except Exception as exc:  # keep the thread; the receipts stay stored
                log.warning("sms.receipts_failed", error=str(exc))

    def flush(self, final: bool = False, retry: bool = False) -> int:
        """Match stored receipts now (new ones, and with ``retry`` or every ``interval``
        the held ones too); return how many found their part."""
        with self._flush_lock:
            retry = retry or final or time.monotonic() - self._last_retry >= self.interval
            if retry:
                self._last_retry = time.monotonic()
            after = 0 if retry else self._seen
            matched = 0
            while True:
                n, last = self._flush_chunk(after, final)
                matched += n
                if last is None:
                    return matched
                after = last

    def _flush_chunk(self, after: int, final: bool) -> tuple[int, int | None]:
        """One chunk of stored receipts with ids above ``after``: (matched, last id or None
        when there is nothing more)."""
        t = sms_receipts_t
        q = select(t).where(t.c.id > after).order_by(t.c.id).limit(self.chunk)
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(q).all()
            if not rows:
                return 0, None
            batch = [Receipt(r.message_id, r.stat, r.err, r.done_date, r.received_at, r.id)
                     for r in rows]
            unmatched = apply_receipts(conn, batch, self.fmt,
                                       lambda r: self._may_convert(r, final),
                                       self.destination_errors)
            left = {r.row_id for r in unmatched}
            limit = utcnow() - timedelta(seconds=self.hold_seconds)
            lost = [r for r in unmatched if r.received_at < limit]
            gone = [r.row_id for r in batch if r.row_id not in left] + [r.row_id for r in lost]
            for i in range(0, len(gone), _CHUNK):
                conn.execute(delete(t).where(t.c.id.in_(gone[i:i + _CHUNK])))
        matched = len(batch) - len(unmatched)
        self.applied += matched
        self._seen = max(self._seen, rows[-1].id)
        if lost:
            self.dropped += len(lost)
            log.warning("sms.receipt_unmatched", count=len(lost),
                        ids=[r.message_id for r in lost[:10]])
        return matched, (rows[-1].id if len(rows) == self.chunk else None)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._store_incoming()
        self.flush(final=True)
