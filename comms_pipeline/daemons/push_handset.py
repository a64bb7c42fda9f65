"""Push-to-Handset daemon: sends push details to device tokens through the push provider.

A token the provider reports as unregistered rejects the entry and flags the contact's device
address (``contact_addresses.invalid_reason``), so that later communications skip it instead
of failing on it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import and_, update

from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.states import AddressKind
from comms_pipeline.daemons.delivery import DeliveryHandler, outcome_for
from comms_pipeline.gateways.fcm import UnregisteredToken
from comms_pipeline.gateways.protocols import PushMessage, PushSender
from comms_pipeline.store.models import addresses_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.claims import Outcome
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)


def make_push_sender(settings: Settings) -> PushSender:
    cfg = settings.gateways.push
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_jsonl import LocalPushSender

        return LocalPushSender(settings.var_dir / "out" / "push")
    if cfg.backend == "fcm":
        from comms_pipeline.gateways.fcm import FcmPushSender

        return FcmPushSender(cfg)
    raise ConfigError(f"gateways.push.backend: unknown backend {cfg.backend!r}")


class PushHandsetDaemon(DeliveryHandler):
    media = "push"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        self.name = "push-handset"
        self.sender = make_push_sender(settings)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        messages = [PushMessage(r.id, r.address or "", r.subject, r.body or "",
                                {"detail_id": str(r.id), "header_id": str(r.header_id)})
                    for r in rows]
        results = self.sender.send_many(messages)
        gone = [(r, res) for r, res in zip(rows, results, strict=True)
                if isinstance(res, UnregisteredToken)]
        if gone:
            self._flag(gone)
        return [outcome_for(r.id, res, self.media) for r, res in zip(rows, results, strict=True)]

    def _flag(self, gone: Sequence[tuple[Row, UnregisteredToken]]) -> None:
        """Mark the device addresses the provider no longer knows."""
        with self.engine.begin() as conn:
            for row, err in gone:
                where = and_(addresses_t.c.kind == AddressKind.DEVICE,
                             addresses_t.c.value == row.address)
                if row.contact_id is not None:
                    where = and_(where, addresses_t.c.contact_id == row.contact_id)
                conn.execute(update(addresses_t).where(where).values(
                    invalid_reason=f"push provider: {err.code} ({err.description})"[:500]))
                log.info("push.token_flagged", detail_id=row.id, contact_id=row.contact_id,
                         code=err.code)

    def close(self) -> None:
        self.sender.close()
