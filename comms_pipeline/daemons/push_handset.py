"""Push-to-Handset daemon: sends push details to device tokens through the push provider.

A token the provider reports as unregistered rejects the entry, flags the contact's device
address (``contact_addresses.invalid_reason``) and puts the token on the suppression list
(reason ``unregistered``), in the transaction that rejects the entry, so that later
communications skip it instead of failing on it again.
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
from comms_pipeline.pipeline.suppressions import DeadTarget, suppress_dead
from comms_pipeline.store.models import addresses_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

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
        outcomes = []
        for r, res in zip(rows, results, strict=True):
            outcome = outcome_for(r.id, res, self.media)
            if isinstance(res, UnregisteredToken) and r.address:
                outcome.payload = (r.contact_id, DeadTarget(
                    r.address, self.media, "unregistered",
                    f"push provider: {res.code} ({res.description})"[:500]))
            outcomes.append(outcome)
        return outcomes

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Flag and suppress the tokens the provider no longer knows, with the rejection."""
        gone = [(o.id, o.payload) for o in outcomes if o.payload]
        for detail_id, (contact_id, target) in gone:
            where = and_(addresses_t.c.kind == AddressKind.DEVICE,
                         addresses_t.c.value == target.address)
            if contact_id is not None:
                where = and_(where, addresses_t.c.contact_id == contact_id)
            conn.execute(update(addresses_t).where(where).values(
                invalid_reason=target.description))
            log.info("push.token_flagged", detail_id=detail_id, contact_id=contact_id,
                     code="UNREGISTERED")
        suppress_dead(conn, [(detail_id, target) for detail_id, (_, target) in gone],
                      self.name)

    def close(self) -> None:
        self.sender.close()
