"""SMS over SMPP v3.4 (smpplib), with the window of outstanding submits smpplib lacks.

smpplib's client sends a ``submit_sm`` and blocks for its response, which caps throughput at
one message per round trip. :class:`SmppSender` keeps up to ``window`` submits outstanding
and matches each ``submit_sm_resp`` to its submit by sequence number. One bound transceiver
session is kept across batches. While a batch is sent, the calling thread does all the
link's I/O itself (no hand-offs between threads on the hot path); between batches a reader
thread answers ``enquire_link``, sends its own when the link is idle, and passes delivery
receipts (``deliver_sm``) to a callback. A per-link lock decides who reads.

Failure handling, per part of a message:

* ``ESME_RTHROTTLED`` / ``ESME_RMSGQFUL``: the part is resubmitted after a pause that doubles
  while throttling lasts, and the window is halved (it grows back one by one). With a
  maximum rate (a :class:`~comms_pipeline.gateways.rate.RateGate`, one token per submit_sm)
  the shared rate of every copy is lowered too. After
  ``throttle_give_up_seconds`` of throttling the rest of the batch is returned as transient.
* any other command_status: the message is rejected with the code and its name.
* a lost link (closed, reset, no response within ``timeout``): the answers the SMSC sent
  before it went are still read, every submit still unanswered is queued again and the
  session is rebound; if binding fails the unsent messages are returned as transient.
  Nothing is lost and nothing is left in flight; a submit the SMSC took but could not answer
  before the link broke is sent again (SMPP gives at-least-once delivery here).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from comms_pipeline.core.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.protocols import Outcome, SendResult, SmsMessage
from comms_pipeline.gateways.rate import RateGate
from comms_pipeline.gateways.smpp_pdu import (
    ESM_UDHI,
    MAX_PDU,
    SUBMIT_SM_RESP,
    THROTTLED,
    command_id,
    encode_text,
    require_smpplib,
    split_frames,
    status_error,
    submit_sm,
    submit_sm_body,
    submit_sm_resp,
)
from comms_pipeline.gateways.smpp_receipts import Receipt, parse_receipt

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import SmsGateway

log = structlog.get_logger(__name__)

REF_LIMIT = 128  # request_details.gateway_ref: for people; receipts match on sms_parts


class _Seq:
    """Sequence numbers, shared with smpplib's PDU classes (1 .. 0x7FFFFFFF, wrapping)."""

    def __init__(self) -> None:
        self.sequence = 0
        self._lock = threading.Lock()

    def next_sequence(self) -> int:
        with self._lock:
            self.sequence = self.sequence % 0x7FFFFFFF + 1
            return self.sequence


@dataclass
class _Part:
    msg: int
    number: int
    body: bytes
    sent_at: float = 0.0


class _Batch:
    """The parts of one ``send_many`` call: still to send, and what became of each message.

    A batch may grow while it is sent: when its queue runs dry and the window has room,
    ``more()`` is asked for the next messages (the daemon claims its next batch), so the
    window does not drain between batches. ``on_done(message, outcome)`` hears of each message
    as soon as its last part is answered."""

    def __init__(self, more: Callable[[], Sequence[SmsMessage]] | None = None,
                 on_done: Callable[[SmsMessage, Outcome], None] | None = None) -> None:
        self.queue: deque[_Part] = deque()
        self.redo: list[_Part] = []
        self.messages: list[SmsMessage] = []
        self.ids: list[dict[int, str]] = []
        self.parts: list[int] = []
        self.open: list[int] = []  # parts of each message not answered yet
        self.errors: dict[int, GatewayError] = {}
        self.more = more
        self.on_done = on_done
        self.result: Callable[[_Batch, int], Outcome] | None = None

    def has_work(self) -> bool:
        return bool(self.queue or self.redo or self.more)

    def add(self, message: SmsMessage, parts: Sequence[_Part] | GatewayError) -> None:
        self.messages.append(message)
        self.ids.append({})
        if isinstance(parts, GatewayError):
            self.parts.append(0)
            self.open.append(0)
            self.errors[len(self.messages) - 1] = parts
            self._closed(len(self.messages) - 1)
            return
        self.parts.append(len(parts))
        self.open.append(len(parts))
        self.queue.extend(parts)

    def answered(self, msg: int, error: GatewayError | None = None) -> None:
        """One part of message ``msg`` is answered (accepted, or refused with ``error``)."""
        if error is not None:
            self.errors.setdefault(msg, error)
        self.open[msg] -= 1
        if self.open[msg] == 0:
            self._closed(msg)

    def _closed(self, msg: int) -> None:
        if self.on_done is not None and self.result is not None:
            self.on_done(self.messages[msg], self.result(self, msg))

    def pending(self) -> int:
        return len(self.queue) + len(self.redo)

    def push_back(self, parts: Sequence[_Part]) -> None:
        """Parts to send again (throttled, or lost with the link), ahead of the rest."""
        self.redo.extend(parts)

    def take(self) -> _Part | None:
        if self.redo:
            self.queue.extendleft(sorted(self.redo, key=lambda p: (p.msg, p.number),
                                         reverse=True))
            self.redo.clear()
        return self.queue.popleft() if self.queue else None

    def fail_queued(self, error: GatewayError) -> None:
        self.more = None  # nothing more is taken on: the caller keeps what it did not give
        for part in [*self.queue, *self.redo]:
            self.answered(part.msg, error)
        self.queue.clear()
        self.redo.clear()


class _Link:
    """One bound session: the socket, its receive buffer, and the lock on reading it."""

    def __init__(self, sender: SmppSender, sock: socket.socket) -> None:
        self.sender = sender
        self.sock = sock
        self.alive = True
        self.broken = False  # a send failed: read what is still coming, send nothing more
        self.unbound = threading.Event()
        self.io_lock = threading.Lock()
        self.last_rx = time.monotonic()
        self.enquiry_since: float | None = None
        self._buf = bytearray()
        self._send_lock = threading.Lock()
        #: Receipts of the current read and their deliver_sm sequence numbers: acknowledged
        #: once the callback has stored them.
        self.receipts: list[tuple[Receipt, int]] = []
        self.thread = threading.Thread(target=self._idle_loop, name="smpp-reader", daemon=True)

    def send(self, pdus: Sequence[bytes]) -> None:
        """Send, or mark the link broken. Reading goes on: answers the SMSC sent before it
        closed are still in our socket buffer, and dropping them would resubmit messages it
        accepted."""
        if self.broken or not self.alive:
            return
        try:
            with self._send_lock:
                self.sock.sendall(b"".join(pdus))
        except OSError as exc:
            log.warning("sms.link_send_failed", error=str(exc))
            self.broken = True

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def pump(self, timeout: float) -> None:
        """Read what arrives within ``timeout`` and dispatch it (caller holds ``io_lock``)."""
        try:
            ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            if not ready:
                return
            chunk = self.sock.recv(262144)
            if not chunk:
                self.kill()
                return
            self.last_rx = time.monotonic()
            self._buf += chunk
            frames = split_frames(self._buf)
        except (OSError, ValueError) as exc:
            if self.alive:
                log.warning("sms.link_error", error=str(exc))
            self.kill()
            return
        for raw in frames:
            self.sender.on_pdu(self, raw)
        if self.receipts:
            self.sender.take_receipts(self)

    def keepalive(self) -> None:
        now = time.monotonic()
        cfg = self.sender.cfg
        if self.enquiry_since is not None:
            if now - self.enquiry_since > cfg.timeout:
                log.warning("sms.enquire_link_timeout")
                self.kill()
        elif now - self.last_rx > cfg.enquire_link_seconds:
            self.enquiry_since = now
            self.send([self.sender.pdu("enquire_link").generate()])

    def _idle_loop(self) -> None:
        """Between batches: keep the link alive and take in receipts."""
        try:
            while self.alive:
                with contextlib.suppress(OSError, ValueError):
                    select.select([self.sock], [], [], 0.5)
                with self.io_lock:
                    if self.alive:
                        self.pump(0)
                        self.keepalive()
        finally:
            self.kill()
            self.sock.close()


class SmppSender:
    """:class:`~comms_pipeline.gateways.protocols.SmsSender` over one SMPP transceiver bind."""

    #: ``send_many`` takes ``more`` and ``on_done``: one stream across batches.
    streams = True

    def __init__(self, cfg: SmsGateway,
                 on_receipts: Callable[[list[Receipt], Callable[[], None]], None]
                 | None = None,
                 on_message_id: Callable[[str], None] | None = None,
                 rate: RateGate | None = None) -> None:
        self._smpp = require_smpplib()
        self.cfg = cfg
        #: The gateway's maximum rate: a token per submit_sm, shared with the other copies.
        self.rate = rate
        #: Receives the receipts of each read and the acknowledgement to send once stored.
        self.on_receipts = on_receipts
        #: Told every id the SMSC gives in a submit_sm_resp, as soon as it is read.
        self.on_message_id = on_message_id
        self._seq = _Seq()
        self._link: _Link | None = None
        self._inflight: dict[int, _Part] = {}
        self._batch: _Batch | None = None
        self._window = cfg.window
        self._delay = cfg.throttle_delay_seconds
        self._throttled_until = 0.0
        self._throttled_since: float | None = None
        self._ref = 0
        self._answered = 0
        self.binds = 0

    # -- PDUs ------------------------------------------------------------------------------
    def pdu(self, command: str, **fields: Any) -> Any:
        return self._smpp.make_pdu(command, client=self._seq, **fields)

    def _reply(self, command: str, sequence: int) -> bytes:
        resp = self.pdu(command)
        resp.sequence = sequence
        return resp.generate()

    def _parts(self, index: int, m: SmsMessage) -> list[_Part]:
        coding, payloads = encode_text(m.text)
        if len(payloads) > self.cfg.max_parts:
            raise PermanentGatewayError("TOO_MANY_PARTS", f"the text needs {len(payloads)} "
                                        f"parts; at most {self.cfg.max_parts} are allowed")
        esm = 0
        if len(payloads) > 1:
            self._ref = (self._ref + 1) % 256
            udh = bytes((5, 0, 3, self._ref, len(payloads)))
            payloads = [udh + bytes((n,)) + p for n, p in enumerate(payloads, 1)]
            esm = ESM_UDHI
        cfg = self.cfg
        fields = {
            "service_type": cfg.system_type, "source_addr": m.sender or cfg.source_addr,
            "source_addr_ton": cfg.source_addr_ton, "source_addr_npi": cfg.source_addr_npi,
            "dest_addr_ton": cfg.dest_addr_ton, "dest_addr_npi": cfg.dest_addr_npi,
            "destination_addr": m.to.lstrip("+"), "esm_class": esm, "data_coding": coding,
            "registered_delivery": 1 if cfg.receipts else 0,
        }
        return [_Part(index, n, submit_sm_body({**fields, "short_message": p}))
                for n, p in enumerate(payloads, 1)]

    # -- connecting ------------------------------------------------------------------------
    def _connect(self) -> None:
        cfg = self.cfg
        last: Exception | None = None
        for attempt in range(cfg.reconnect_attempts):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            try:
                self._bind()
                return
            except (OSError, GatewayError, ValueError) as exc:
                last = exc
                log.warning("sms.bind_failed", host=cfg.host, port=cfg.port, attempt=attempt + 1,
                            error=str(exc))
        raise TransientGatewayError("SMPP_BIND", f"cannot bind to {cfg.host}:{cfg.port}: {last}")

    def _bind(self) -> None:
        cfg = self.cfg
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout)
        try:
            sock.settimeout(cfg.timeout)  # the bind_resp: an SMSC that never answers is a timeout
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bind = self.pdu("bind_transceiver", system_id=cfg.system_id, password=cfg.password,
                            system_type=cfg.system_type, interface_version=0x34)
            sock.sendall(bind.generate())
            resp = self._smpp.parse_pdu(_read_one(sock), client=self._seq,
                                        allow_unknown_opt_params=True)
            if resp.command != "bind_transceiver_resp" or resp.status != 0:
                raise status_error(resp.status or 0x0D)
        except BaseException:
            sock.close()
            raise
        self._link = _Link(self, sock)
        self._window = cfg.window
        self._link.thread.start()
        self.binds += 1
        log.info("sms.bound", host=cfg.host, port=cfg.port, binds=self.binds)

    # -- the window ------------------------------------------------------------------------
    def send_many(self, messages: Sequence[SmsMessage], *,
                  more: Callable[[], Sequence[SmsMessage]] | None = None,
                  on_done: Callable[[SmsMessage, Outcome], None] | None = None
                  ) -> list[Outcome]:
        """Send ``messages`` through the window; return one outcome per message, in order.

        ``more()``, when given, is asked for further messages whenever the queue runs dry
        while the window has room (an empty answer ends the stream); ``on_done`` hears each
        message's outcome as soon as it is known. The outcomes returned cover every message
        sent, the ones ``more()`` gave included."""
        batch = _Batch(more, on_done)
        batch.result = self._result
        self._add(batch, messages)
        self._batch = batch
        try:
            self._run(batch)
        finally:
            self._batch = None
        return [self._result(batch, i) for i in range(len(batch.messages))]

    def _add(self, batch: _Batch, messages: Sequence[SmsMessage]) -> None:
        for m in messages:
            try:
                parts: Sequence[_Part] | GatewayError = self._parts(len(batch.messages), m)
            except GatewayError as exc:
                parts = exc
            batch.add(m, parts)

    def _refill(self, batch: _Batch) -> bool:
        """The queue is dry and the window has room: ask for the next messages."""
        if batch.more is None:
            return False
        more = batch.more()
        if not more:
            batch.more = None
            return False
        self._add(batch, more)
        return True

    def _result(self, batch: _Batch, i: int) -> Outcome:
        if i in batch.errors:
            return batch.errors[i]
        ids = [batch.ids[i][n] for n in sorted(batch.ids[i])]
        if len(ids) != batch.parts[i]:
            return TransientGatewayError("SMPP_INCOMPLETE", "not every part was accepted")
        ref = ids[0][:REF_LIMIT]
        for more in ids[1:]:
            if len(ref) + 1 + len(more) > REF_LIMIT:
                break
            ref += "," + more
        return SendResult(ref=ref, parts=tuple(ids))

    def _run(self, batch: _Batch) -> None:
        """Bind as needed and send until every part is answered or given up."""
        fruitless = 0  # binds in a row after which the link died before any answer
        answered = self._answered
        while batch.has_work() or self._inflight:
            link = self._link
            if link is not None and link.alive:
                with link.io_lock:
                    self._exchange(link, batch)
                continue
            if self._inflight:
                log.warning("sms.link_lost", resubmitting=len(self._inflight))
                batch.push_back(list(self._inflight.values()))
                self._inflight.clear()
            fruitless = 0 if self._answered > answered else fruitless + 1
            answered = self._answered
            if fruitless > self.cfg.reconnect_attempts:
                batch.fail_queued(TransientGatewayError(
                    "SMPP_LINK", "the SMSC keeps closing the link; retrying later"))
                return
            try:
                self._connect()
            except TransientGatewayError as exc:
                batch.fail_queued(exc)
                return

    def _exchange(self, link: _Link, batch: _Batch) -> None:
        """Keep the window full and read answers while the link lives (holding io_lock)."""
        while link.alive and (batch.has_work() or self._inflight):
            now = time.monotonic()
            wait = self._throttle_wait(batch, now)
            out = [] if link.broken or wait > 0 else self._take(batch, now)
            if out:
                link.send(out)
            full = len(self._inflight) >= self._window or not batch.has_work()
            if self.rate is not None and not full and wait <= 0:
                # Short of tokens: wait for them (or for answers, whichever comes first).
                wait = max(self.rate.wait_seconds(), 0.001)
            link.pump(0 if out and not full else min(wait, 0.5) if wait > 0 else 0.5)
            self._check_overdue(link)
            link.keepalive()

    def _throttle_wait(self, batch: _Batch, now: float) -> float:
        """Seconds still to pause for throttling; gives up on the rest after too long."""
        if self._throttled_since is not None and \
                now - self._throttled_since > self.cfg.throttle_give_up_seconds:
            batch.fail_queued(TransientGatewayError(
                "0x00000058", "ESME_RTHROTTLED: still throttled; retrying later"))
            self._throttled_since = None
        return self._throttled_until - now

    def _take(self, batch: _Batch, now: float) -> list[bytes]:
        room = self._window - len(self._inflight)
        if room > 0 and not batch.pending():
            self._refill(batch)  # the queue is dry: the stream's next messages, if any
        if self.rate is not None and room > 0:
            room = self.rate.take(min(room, batch.pending()))
        out: list[bytes] = []
        while len(out) < room:
            part = batch.take()
            if part is None and self._refill(batch):
                part = batch.take()
            if part is None:
                break
            if part.msg in batch.errors:  # another part of it was refused: not sent
                batch.answered(part.msg)
                continue
            sequence = self._seq.next_sequence()
            part.sent_at = now
            self._inflight[sequence] = part
            out.append(submit_sm(sequence, part.body))
        return out

    def _check_overdue(self, link: _Link) -> None:
        if self._inflight:
            oldest = next(iter(self._inflight.values())).sent_at  # dicts keep sending order
            if time.monotonic() - oldest > self.cfg.timeout:
                log.warning("sms.response_timeout", outstanding=len(self._inflight))
                link.kill()

    # -- what arrives ----------------------------------------------------------------------
    def on_pdu(self, link: _Link, raw: bytes) -> None:
        if command_id(raw) == SUBMIT_SM_RESP:
            self._on_response(*submit_sm_resp(raw))
            return
        try:
            pdu = self._smpp.parse_pdu(raw, client=self._seq, allow_unknown_opt_params=True)
        except Exception as exc:  # smpplib raises assorted errors on bad input
            log.warning("sms.bad_pdu", error=str(exc))
            return
        command = pdu.command
        if command == "generic_nack":
            self._on_response(pdu.status, pdu.sequence, "")
        elif command == "deliver_sm":
            receipt = self._on_deliver(pdu)
            if receipt is not None and self.on_receipts is not None:
                link.receipts.append((receipt, pdu.sequence))  # acknowledged once stored
            else:
                link.send([self._reply("deliver_sm_resp", pdu.sequence)])
        elif command == "enquire_link":
            link.send([self._reply("enquire_link_resp", pdu.sequence)])
        elif command == "enquire_link_resp":
            link.enquiry_since = None
        elif command == "unbind":
            link.send([self._reply("unbind_resp", pdu.sequence)])
            log.info("sms.unbound_by_smsc")
            link.kill()
        elif command == "unbind_resp":
            link.unbound.set()

    def _on_response(self, status: int, sequence: int, message_id: str) -> None:
        part = self._inflight.pop(sequence, None)
        batch = self._batch
        if part is None or batch is None:
            log.warning("sms.unexpected_response", sequence=sequence)
            return
        self._answered += 1
        if status == 0:
            batch.ids[part.msg][part.number] = message_id
            if self.on_message_id is not None:
                self.on_message_id(message_id)
            self._throttled_since = None
            self._delay = self.cfg.throttle_delay_seconds
            self._window = min(self.cfg.window, self._window + 1)
            batch.answered(part.msg)
        elif status in THROTTLED:
            now = time.monotonic()
            batch.push_back([part])
            self._throttled_since = self._throttled_since or now
            self._throttled_until = now + self._delay
            self._delay = min(self._delay * 2, 2.0)
            self._window = max(1, self._window // 2)
            log.info("sms.throttled", status=f"0x{status:08X}", window=self._window)
            if self.rate is not None:
                self.rate.throttled()
        else:
            batch.answered(part.msg, status_error(status))

    def _on_deliver(self, pdu: Any) -> Receipt | None:
        if (pdu.esm_class or 0) & 0x3C != 0x04:
            log.warning("sms.incoming_ignored", reason="Incoming SMS not Supported")
            return None
        receipt = parse_receipt(pdu.short_message, getattr(pdu, "receipted_message_id", None),
                                getattr(pdu, "message_state", None))
        if receipt is None:
            log.warning("sms.receipt_unreadable")
        return receipt

    def take_receipts(self, link: _Link) -> None:
        """Hand one read's receipts to ``on_receipts(receipts, ack)``, which stores them and
        then calls ``ack()`` to acknowledge them; what is never stored is never
        acknowledged, and the SMSC sends it again."""
        taken, link.receipts = link.receipts, []
        acks = [self._reply("deliver_sm_resp", seq) for _, seq in taken]
        try:
            if self.on_receipts is not None:
                self.on_receipts([r for r, _ in taken], lambda: link.send(acks))
        except Exception as exc:  # leave them to the SMSC
            log.warning("sms.receipts_not_stored", count=len(taken), error=str(exc))

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Unbind politely (receipts sent before the unbind_resp are still taken in)."""
        link, self._link = self._link, None
        if link is None:
            return
        if link.alive:
            link.send([self.pdu("unbind").generate()])
            deadline = time.monotonic() + self.cfg.timeout
            with link.io_lock:
                while link.alive and not link.unbound.is_set() and time.monotonic() < deadline:
                    link.pump(0.2)
        link.kill()
        link.thread.join(self.cfg.timeout)


def _read_one(sock: socket.socket) -> bytes:
    """One PDU, read synchronously (the bind response, before the link has a reader)."""
    head = _recv_exact(sock, 4)
    length = int.from_bytes(head, "big")
    if length < 16 or length > MAX_PDU:
        raise ValueError(f"malformed PDU length {length}")
    return head + _recv_exact(sock, length - 4)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the SMSC closed the connection")
        data += chunk
    return data
