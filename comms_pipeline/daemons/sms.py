"""SMS daemon: sends SMS details through the configured SMS gateway.

With the SMPP backend it also owns a :class:`~comms_pipeline.pipeline.receipts.ReceiptApplier`,
which records the delivery receipts the SMSC sends back on the details they belong to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from comms_pipeline.core.errors import ConfigError
from comms_pipeline.daemons.delivery import DeliveryHandler, outcome_for, send_in_chunks
from comms_pipeline.gateways.protocols import SendResult, SmsMessage, SmsSender

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.pipeline.receipts import Receipt
    from comms_pipeline.queue.claims import Outcome
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings


def make_sms_sender(settings: Settings, on_receipt=None) -> SmsSender:  # type: ignore[no-untyped-def]
    """The configured backend; ``on_receipt`` receives SMPP delivery receipts."""
    cfg = settings.gateways.sms
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_jsonl import LocalSmsSender

        return LocalSmsSender(settings.var_dir / "out" / "sms")
    if cfg.backend == "smpp":
        from comms_pipeline.gateways.smpp import SmppSender

        return SmppSender(cfg, on_receipt)
    if cfg.backend == "http":
        from comms_pipeline.gateways.http_sms import HttpSmsSender

        return HttpSmsSender(cfg)
    raise ConfigError(f"gateways.sms.backend: unknown backend {cfg.backend!r}")


class SmsDaemon(DeliveryHandler):
    media = "sms"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        cfg = settings.gateways.sms
        self.receipts = None
        on_receipt = None
        if cfg.backend == "smpp":
            from comms_pipeline.pipeline.receipts import ReceiptApplier

            self.receipts = ReceiptApplier(engine, fmt=cfg.receipt_id_format,
                                           hold_seconds=cfg.receipt_hold_seconds)
            on_receipt = self._on_receipt
        self.sender = make_sms_sender(settings, on_receipt)
        self.source = cfg.source_addr
        #: Messages sent between two looks at the claim (a lost lease stops the batch there);
        #: a few SMPP windows, so that the window rarely drains at a boundary.
        self.chunk = max(50, 5 * cfg.window)

    def _on_receipt(self, receipt: Receipt) -> None:
        if self.receipts is not None:
            self.receipts.submit(receipt)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        messages = [SmsMessage(r.id, r.address, r.body or "", self.source) for r in rows]
        outcomes = []
        for m, res in send_in_chunks(messages, self.sender.send_many, ctx, self.chunk):
            if self.receipts is not None and isinstance(res, SendResult):
                self.receipts.remember(res.ref)
            outcomes.append(outcome_for(m.detail_id, res, self.media))
        return outcomes

    def close(self) -> None:
        """Unbind first (receipts still on the wire are taken in), then apply the receipts."""
        self.sender.close()
        if self.receipts is not None:
            self.receipts.close()
