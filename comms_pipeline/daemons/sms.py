"""SMS daemon: sends SMS details through the configured SMS gateway.

With the SMPP backend it also owns a :class:`~comms_pipeline.pipeline.receipts.ReceiptApplier`,
which records the delivery receipts the SMSC sends back on the details they belong to.
A number the SMSC calls invalid (``suppressions.smpp_destination_statuses`` in the submit
response, or an UNDELIV receipt with one of ``receipt_destination_errors``) goes on the
suppression list, reason ``smpp_permanent``.

The gateway is chosen per chunk by :meth:`SmsDaemon.send_chunk` from the failover list
(``gateways.sms`` then ``gateways.sms_fallbacks``); the entry records which one sent it.
With one SMPP gateway (no fallbacks) and ``daemons.prefetch_batches`` set, the daemon streams
through its window across batches (for a distant SMSC; see bench/RESULTS.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.errors import ConfigError, GatewayError
from comms_pipeline.daemons.delivery import PooledDelivery, outcome_for, send_in_chunks
from comms_pipeline.daemons.gateway_pool import GatewayPool, build_pool
from comms_pipeline.gateways.protocols import Outcome as SendOutcome
from comms_pipeline.gateways.protocols import SendResult, SmsMessage, SmsSender
from comms_pipeline.pipeline.suppressions import DeadTarget, suppress_dead

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from comms_pipeline.gateways.rate import RateGate
    from comms_pipeline.queue.claims import Outcome
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings
    from comms_pipeline.settings.gateways import SmsGateway

log = structlog.get_logger(__name__)


def make_sms_sender(settings: Settings, on_receipts=None,
                    on_message_id=None, cfg: SmsGateway | None = None,
                    rate: RateGate | None = None) -> SmsSender:
    """The backend of ``cfg`` (default: ``gateways.sms``); ``on_receipts`` stores SMPP
    delivery receipts, ``on_message_id`` hears the SMSC's ids as they are given, and SMPP
    takes ``rate``'s tokens submit by submit."""
    cfg = cfg or settings.gateways.sms
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_jsonl import LocalSmsSender

        return LocalSmsSender(settings.var_dir / "out" / "sms", cfg.source_addr)
    if cfg.backend == "smpp":
        from comms_pipeline.gateways.smpp import SmppSender

        return SmppSender(cfg, on_receipts, on_message_id, rate)
    if cfg.backend == "http":
        from comms_pipeline.gateways.http_sms import HttpSmsSender

        return HttpSmsSender(cfg)
    raise ConfigError(f"gateways.sms.backend: unknown backend {cfg.backend!r}")


class SmsDaemon(PooledDelivery[SmsMessage, SmsSender]):
    media = "sms"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        cfg = settings.gateways.sms
        pool = settings.gateways.sms_pool()
        self.receipts = None
        on_receipts = on_message_id = None
        if any(gateway.backend == "smpp" for _, gateway in pool):
            from comms_pipeline.pipeline.receipts import ReceiptApplier

            self.receipts = ReceiptApplier(
                engine, fmt=cfg.receipt_id_format, hold_seconds=cfg.receipt_hold_seconds,
                destination_errors=settings.suppressions.receipt_destination_errors)
            self.receipts.start()  # also matches what an earlier run left stored
            on_receipts = self.receipts.take
            on_message_id = self.receipts.expect
        self.gateways: GatewayPool[SmsMessage] = build_pool(
            "sms", pool, engine,
            lambda gateway, rate: make_sms_sender(settings, on_receipts, on_message_id,
                                                  gateway, rate),
            lambda gateway: gateway.backend == "smpp")
        self.dead_statuses = frozenset(settings.suppressions.smpp_destination_statuses
                                       if any(g.backend == "smpp" for _, g in pool) else ())
        #: Messages sent between two looks at the claim (a lost lease stops the batch there);
        #: a few SMPP windows, so that the window rarely drains at a boundary.
        self.chunk = max(50, 5 * cfg.window)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        # No sender named: each gateway sends with its own source_addr.
        messages = [SmsMessage(r.id, r.address, r.body or "") for r in rows]
        if self.settings.daemons.prefetch_batches and len(self.gateways.members) == 1 and \
                getattr(self.sender, "streams", False):
            return self._stream(messages, ctx)
        outcomes = []
        for m, (res, via) in send_in_chunks(messages, self.send_chunk, ctx, self.chunk,
                                            [r.priority for r in rows]):
            outcomes.append(self._outcome(m, res, via))
        return outcomes


    def _stream(self, messages: list[SmsMessage], ctx: BatchContext) -> list[Outcome]:
        """One stream through the window for the batch and the batches claimed into it while
        it is in flight (``daemons.prefetch_batches``): the window never drains at a batch
        boundary. What is answered is finished (committed) each time the stream asks for
        more; before each chunk, the claim is checked (a lost lease stops the stream) and
        whether a better priority waits (the rest then goes back for the next claim)."""
        waiting = deque(messages)
        answered: list[Outcome] = []
        via = self.gateways.members[0].name

        def on_done(message: SmsMessage, result: SendOutcome) -> None:
            answered.append(self._outcome(message, result, via))

        def more() -> list[SmsMessage]:
            if ctx.stopping:
                return []  # what was answered is finished by the runner, if still ours
            if len(answered) >= ctx.batch_size:  # commit a batch's worth at a time
                done = answered[:]
                answered.clear()
                ctx.finish(done)
            if waiting and ctx.outranked(min((ctx.rows[m.detail_id].priority for m in waiting
                                              if m.detail_id in ctx.rows), default=9)):
                log.info("delivery.outranked", left=len(waiting))
                return []  # the rest goes back: the next claim takes the better one first
            if not waiting:
                screened, sendable = self.screen(ctx.claim_more())
                test = [r for r in sendable if r.is_test]  # never to a real gateway
                ctx.finish(screened + (self.simulate(test, ctx) if test else []))
                waiting.extend(SmsMessage(r.id, r.address, r.body or "") for r in sendable
                               if not r.is_test)
            chunk = [waiting.popleft() for _ in range(min(self.chunk, len(waiting)))]
            if chunk and not ctx.still_ours([m.detail_id for m in chunk]):
                return []  # taken over: none of it goes out (the runner leaves it alone)
            return chunk

        first = [waiting.popleft() for _ in range(min(self.chunk, len(waiting)))]
        self.sender.send_many(first, more=more, on_done=on_done)  # type: ignore[call-arg]
        return answered

    def _outcome(self, message: SmsMessage, result: SendOutcome,
                 gateway: str | None = None) -> Outcome:
        outcome = outcome_for(message.detail_id, result, self.media, gateway=gateway)
        if isinstance(result, SendResult) and result.parts:
            outcome.payload = result.parts  # written to sms_parts by persist()
        elif (isinstance(result, GatewayError) and not result.transient
              and result.code in self.dead_statuses and message.to):
            outcome.payload = DeadTarget(message.to, self.media, "smpp_permanent",
                                         f"SMSC: {result.code} {result.description}"[:500])
        return outcome

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Every part's id, in full, in the transaction that completes the detail; and the
        numbers the SMSC refused, in the one that rejects it."""
        from comms_pipeline.pipeline.receipts import record_parts

        record_parts(conn, [(o.id, o.payload) for o in outcomes
                            if o.payload and not isinstance(o.payload, DeadTarget)])
        suppress_dead(conn, [(o.id, o.payload) for o in outcomes
                             if isinstance(o.payload, DeadTarget)], "sms")

    def close(self) -> None:
        """Acknowledge the receipts taken in while the link lives, unbind (receipts still on
        the wire are taken in and stored; the SMSC sends those again), then match them."""
        if self.receipts is not None:
            self.receipts.drain()
        self.gateways.close()
        if self.receipts is not None:
            self.receipts.close()
