"""An SMSC on loopback that speaks real SMPP v3.4 PDUs, for tests and the SMS benchmark.

Its PDU codec is written here with ``struct``, independently of smpplib, so that the client
under test is checked against the wire format rather than against itself. Behaviours are
set on :attr:`Smsc.behaviour` while it runs:

* ``throttle_next`` submits answered with ``throttle_status`` (ESME_RTHROTTLED by default);
* ``reject``: destination -> command_status to answer instead of accepting;
* ``drop_after``: close the link on receiving that many more submits, without answering the
  last one or anything after it (fires once);
* ``receipts``: ``None``, ``"after"`` or ``"before"`` the submit_sm_resp; ``receipt_stat``
  and ``receipt_stats`` (destination -> stat) say what the receipts report, and
  ``undelivered_every`` makes every n-th message id's receipt UNDELIV;
* ``id_format`` (``decimal``/``hex``/``uuid``, 36 characters as Jasmin gives) for message
  ids in submit_sm_resp, and
  ``receipt_id_format`` (``same``/``decimal``/``hex``) for the ids in receipts;
* ``silent_next``: swallow that many submits without a word (an SMSC that hangs);
* ``hold_responses``: withhold answers until that many submits are pending (or the client
  goes quiet), which only a windowed client survives; ``counts["max_pending"]`` shows the
  deepest window seen.

``arrivals`` holds the arrival time (``time.monotonic()``) of every submit_sm, for rate
checks. Only answered submits are *accepted* (recorded): a submit that dies with the link is, as far
as this SMSC is concerned, never received. Run it standalone with
``python -m tests.servers.smpp --port 0``: it prints ``PORT <n>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import random
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from comms_pipeline.gateways.smpp_pdu import GSM_BASIC, GSM_EXT

HEADER = struct.Struct(">IIII")
GENERIC_NACK = 0x80000000
BIND_RX, BIND_TX, SUBMIT, DELIVER, UNBIND, BIND_TRX, ENQUIRE = 0x01, 0x02, 0x04, 0x05, 0x06, \
    0x09, 0x15
RESP = 0x80000000
ESME_RTHROTTLED, ESME_RINVPASWD, ESME_RINVCMDID = 0x58, 0x0E, 0x03
STATES = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
          "UNKNOWN": 7, "REJECTD": 8}
_GSM_EXT_DECODE = {v: k for k, v in GSM_EXT.items()}


def pdu(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return HEADER.pack(16 + len(body), command_id, status, sequence) + body


def _cstr(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end], end + 1


def gsm_decode(data: bytes) -> str:
    out, escape = [], False
    for b in data:
        if escape:
            out.append(_GSM_EXT_DECODE.get(b, "?"))
            escape = False
        elif b == 0x1B:
            escape = True
        else:
            out.append(GSM_BASIC[b])
    return "".join(out)


@dataclass
class Submit:
    """One accepted submit_sm (one part of a message)."""

    message_id: str
    source: str
    destination: str
    esm_class: int
    data_coding: int
    registered_delivery: int
    payload: bytes
    udh: bytes | None
    text: str

    @property
    def concat(self) -> tuple[int, int, int] | None:
        """(reference, total, number) from an 8-bit concatenation UDH."""
        if self.udh and len(self.udh) >= 6 and self.udh[1] == 0:
            return self.udh[3], self.udh[4], self.udh[5]
        return None


@dataclass
class Message:
    destination: str
    text: str
    ids: list[str]
    data_coding: int


def parse_submit(body: bytes, message_id: str) -> Submit:
    pos = 0
    _service, pos = _cstr(body, pos)
    pos += 2
    source, pos = _cstr(body, pos)
    pos += 2
    destination, pos = _cstr(body, pos)
    esm = body[pos]
    pos += 3
    _sched, pos = _cstr(body, pos)
    _valid, pos = _cstr(body, pos)
    registered, _replace, coding, _default, length = body[pos:pos + 5]
    pos += 5
    payload = body[pos:pos + length]
    udh = None
    if esm & 0x40:
        udh, payload = payload[:payload[0] + 1], payload[payload[0] + 1:]
    text = (gsm_decode(payload) if coding == 0 else
            payload.decode("utf-16-be") if coding == 8 else payload.decode("latin-1"))
    return Submit(message_id, source.decode(), destination.decode(), esm, coding, registered,
                  payload, udh, text)


@dataclass
class Behaviour:
    throttle_next: int = 0
    throttle_status: int = ESME_RTHROTTLED
    reject: dict[str, int] = field(default_factory=dict)
    drop_after: int | None = None
    receipts: str | None = None
    receipt_stat: str = "DELIVRD"
    receipt_stats: dict[str, str] = field(default_factory=dict)
    undelivered_every: int = 0
    id_format: str = "decimal"
    receipt_id_format: str = "same"
    system_id: str | None = None
    password: str | None = None
    hold_responses: int = 0
    silent_next: int = 0
    #: Seconds each answer waits before it is written (a distant or busy SMSC): a client's
    #: window is then what sets the rate, and the ``drains`` count shows when it ran empty.
    response_delay: float = 0.0


class Smsc:
    """The SMSC: one thread per bound ESME, all sharing the behaviour and the records."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        self.behaviour = Behaviour()
        self.record = record
        self.accepted: list[Submit] = []
        self.arrivals: list[float] = []
        self.counts = dict.fromkeys((
            "binds", "unbinds", "submits", "accepted", "throttled", "rejected", "drops",
            "swallowed", "receipts", "receipt_acks", "enquire_links", "enquire_link_resps",
            "max_pending", "drains"), 0)
        self._ids = itertools.count(655360)
        self._jitter = random.Random(0)
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Smsc:
        t = threading.Thread(target=self._accept_loop, name="smsc-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for t in self._threads[:1]:
            t.join(5)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _close(conn)
        for t in self._threads[1:]:
            t.join(5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.2)
                if not ready:
                    continue
                conn, _ = self._listener.accept()
            except (OSError, ValueError):
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="smsc-conn", daemon=True)
            t.start()
            self._threads.append(t)

    # -- what tests read -------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """Accepted submits with concatenated parts put back together, in arrival order."""
        out: list[Message] = []
        groups: dict[tuple, list[Submit]] = {}
        with self._lock:
            submits = list(self.accepted)
        for s in submits:
            if s.concat is None:
                out.append(Message(s.destination, s.text, [s.message_id], s.data_coding))
                continue
            key = (s.destination, s.concat[0], s.concat[1])
            group = groups.setdefault(key, [])
            group.append(s)
            if len(group) == s.concat[1]:
                group.sort(key=lambda p: p.concat[2])
                out.append(Message(s.destination, "".join(p.text for p in group),
                                   [p.message_id for p in group], s.data_coding))
                del groups[key]
        return out

    def number_ids_from(self, first: int) -> None:
        """Give message ids from ``first`` on (small ones make hex and decimal collide)."""
        with self._lock:
            self._ids = itertools.count(first)

    def send_enquire_link(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sendall(pdu(ENQUIRE, 0, 0x7000_0000))

    # -- one ESME --------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        receipt_seq = itertools.count(1)
        held: list[bytes] = []  # answers withheld while fewer than hold_responses are pending
        pending = 0
        delayed: list[tuple[float, int, bytes]] = []  # heap of (when, order, answer)
        order = itertools.count()
        unanswered = 0  # submits whose (delayed) answer is not written yet
        submits_seen = 0
        try:
            while not self._stopping.is_set():
                unanswered -= _write_due(conn, delayed)
                ready, _, _ = select.select([conn], [], [], _wait(held, delayed))
                if not ready:
                    if held:  # the client has nothing more in flight: answer what we have
                        conn.sendall(b"".join(held))
                        held, pending = [], 0
                    continue
                chunk = conn.recv(262144)
                if not chunk:
                    return
                buf += chunk
                out: list[bytes] = []
                before = self._answered()
                seen_before = self.counts["submits"]
                if self.behaviour.response_delay and submits_seen and not unanswered and \
                        _starts_with_submit(buf):
                    self._count("drains")  # the client let its window run empty
                keep = self._handle_buffer(buf, out, receipt_seq)
                submitted = self.counts["submits"] - seen_before
                submits_seen += submitted
                if self.behaviour.hold_responses and keep:
                    held += out
                    pending += self._answered() - before
                    with self._lock:
                        self.counts["max_pending"] = max(self.counts["max_pending"], pending)
                    if pending < self.behaviour.hold_responses:
                        continue
                    out, held, pending = held, [], 0
                if out and self.behaviour.response_delay > 0:
                    self._hold_back(out, delayed, order)
                    unanswered += submitted
                    out = []
                if out:
                    conn.sendall(b"".join(out))
                if not keep:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close(conn)

    def _hold_back(self, out: list[bytes], delayed: list[tuple[float, int, bytes]],
                   order: Iterator[int]) -> None:
        """Each answer after its own delay, between half and one and a half times the
        setting (a real SMSC's answers spread out, and may overtake one another)."""
        now = time.monotonic()
        for answer in out:
            heapq.heappush(delayed, (now + self.behaviour.response_delay * (
                0.5 + self._jitter.random()), next(order), answer))

    def _answered(self) -> int:
        with self._lock:
            return self.counts["accepted"] + self.counts["throttled"] + self.counts["rejected"]

    def _handle_buffer(self, buf: bytearray, out: list[bytes], receipt_seq: Iterator[int]) -> bool:
        """Answer every complete PDU in ``buf``; False when the link is to be closed."""
        while len(buf) >= 16:
            length, command, status, seq = HEADER.unpack_from(buf)
            if len(buf) < length:
                return True
            body = bytes(buf[16:length])
            del buf[:length]
            if not self._handle(command, status, seq, body, out, receipt_seq):
                return False
        return True

    def _handle(self, command: int, status: int, seq: int, body: bytes, out: list[bytes],
                receipt_seq: Iterator[int]) -> bool:
        if command == SUBMIT:
            return self._submit(seq, body, out, receipt_seq)
        if command in (BIND_TRX, BIND_TX, BIND_RX):
            out.append(self._bind(command, seq, body))
        elif command == ENQUIRE:
            self._count("enquire_links")
            out.append(pdu(ENQUIRE | RESP, 0, seq))
        elif command == ENQUIRE | RESP:
            self._count("enquire_link_resps")
        elif command == DELIVER | RESP:
            self._count("receipt_acks")
        elif command == UNBIND:
            self._count("unbinds")
            out.append(pdu(UNBIND | RESP, 0, seq))
            return False
        else:
            out.append(pdu(GENERIC_NACK, ESME_RINVCMDID, seq))
        return True

    def _bind(self, command: int, seq: int, body: bytes) -> bytes:
        system_id, pos = _cstr(body, 0)
        password, _ = _cstr(body, pos)
        b = self.behaviour
        ok = ((b.system_id is None or b.system_id == system_id.decode())
              and (b.password is None or b.password == password.decode()))
        self._count("binds")
        return pdu(command | RESP, 0 if ok else ESME_RINVPASWD, seq, b"SMSC\x00")

    def _submit(self, seq: int, body: bytes, out: list[bytes],
                receipt_seq: Iterator[int]) -> bool:
        b = self.behaviour
        with self._lock:
            self.counts["submits"] += 1
            self.arrivals.append(time.monotonic())
            if b.drop_after is not None:
                b.drop_after -= 1
                if b.drop_after <= 0:
                    b.drop_after = None
                    self.counts["drops"] += 1
                    return False
            if b.silent_next > 0:
                b.silent_next -= 1
                self.counts["swallowed"] += 1
                return True
            if b.throttle_next > 0:
                b.throttle_next -= 1
                self.counts["throttled"] += 1
                out.append(pdu(SUBMIT | RESP, b.throttle_status, seq, b"\x00"))
                return True
            n = next(self._ids)
        message_id = (f"{n:x}" if b.id_format == "hex" else str(uuid.UUID(int=n)) if
                      b.id_format == "uuid" else str(n))
        submit = parse_submit(body, message_id)
        refused = b.reject.get(submit.destination)
        if refused:
            self._count("rejected")
            out.append(pdu(SUBMIT | RESP, refused, seq, b"\x00"))
            return True
        resp = pdu(SUBMIT | RESP, 0, seq, message_id.encode() + b"\x00")
        receipt = None
        if b.receipts and submit.registered_delivery & 0x03:
            receipt = self._receipt(submit, n, next(receipt_seq))
        out.extend([receipt, resp] if b.receipts == "before" and receipt else
                   [resp, receipt] if receipt else [resp])
        with self._lock:
            self.counts["accepted"] += 1
            if receipt:
                self.counts["receipts"] += 1
            if self.record:
                self.accepted.append(submit)
        return True

    def _receipt(self, submit: Submit, n: int, seq: int) -> bytes:
        b = self.behaviour
        fmt = b.receipt_id_format if b.receipt_id_format != "same" else b.id_format
        rid = submit.message_id if fmt == "uuid" else f"{n:x}" if fmt == "hex" else str(n)
        stat = b.receipt_stats.get(submit.destination, b.receipt_stat)
        if b.undelivered_every and n % b.undelivered_every == 0:
            stat = "UNDELIV"
        err = "000" if stat == "DELIVRD" else "001"
        stamp = time.strftime("%y%m%d%H%M", time.gmtime())
        text = (f"id:{rid} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
                f"submit date:{stamp} done date:{stamp} stat:{stat} err:{err} text:").encode()
        body = (b"\x00" + bytes((1, 1)) + submit.destination.encode() + b"\x00"
                + bytes((5, 0)) + submit.source.encode() + b"\x00"
                + bytes((0x04, 0, 0)) + b"\x00\x00" + bytes((0, 0, 0, 0, len(text))) + text
                + struct.pack(">HH", 0x001E, len(rid) + 1) + rid.encode() + b"\x00"
                + struct.pack(">HHB", 0x0427, 1, STATES.get(stat, 7)))
        return pdu(DELIVER, 0, seq, body)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


def _write_due(conn: socket.socket, delayed: list[tuple[float, int, bytes]]) -> int:
    """Write the delayed answers now due; return how many submits they answered."""
    answered = 0
    while delayed and delayed[0][0] <= time.monotonic():
        _, _, data = heapq.heappop(delayed)
        conn.sendall(data)
        answered += HEADER.unpack_from(data)[1] == SUBMIT | RESP
    return answered


def _wait(held: list[bytes], delayed: list[tuple[float, int, bytes]]) -> float:
    timeout = 0.3 if held else 0.5
    if delayed:
        timeout = max(0.0, min(timeout, delayed[0][0] - time.monotonic()))
    return timeout


def _starts_with_submit(buf: bytearray) -> bool:
    return len(buf) >= 16 and HEADER.unpack_from(buf)[1] == SUBMIT


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll until ``condition()`` holds (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    server = Smsc().start()
    yield server
    server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--receipts", choices=["after", "before"], default=None)
    parser.add_argument("--response-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = Smsc(args.host, args.port, record=False)
    server.behaviour.receipts = args.receipts
    server.behaviour.response_delay = args.response_delay_ms / 1000
    server.start()
    print(f"PORT {server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()  # until the parent closes our stdin (or kills us)
    server.stop()
    print(f"ACCEPTED {server.counts['accepted']} DRAINS {server.counts['drains']}", flush=True)


if __name__ == "__main__":
    main()
