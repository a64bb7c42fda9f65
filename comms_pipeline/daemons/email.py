"""Email daemon: sends merged emails (.eml documents) through the configured email gateway.

The document bytes of a whole claimed batch are read in one query; the envelope is
``MAIL FROM`` = the configured sender's address (with ``[bounces] domain`` set, a signed VERP
address per entry, ``bounces+<id>.<sig>@domain``, so its bounce names it), ``RCPT TO`` = the
entry's address. The message goes out as merged: its recorded Message-ID is kept. The batch
goes to the gateway in chunks so that a slow (rate-limited) batch keeps its lease alive, a
shutdown request is honoured between chunks (unsent entries are released, not failed) and a
batch whose lease was lost (the daemon was frozen and another copy took over) stops there.
The gateway is chosen per chunk by :meth:`EmailDaemon.send_chunk` from the failover list
(``gateways.email`` then ``gateways.email_fallbacks``); the entry records which one sent it.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.states import DetailState, ErrorCode
from comms_pipeline.daemons.delivery import PooledDelivery, outcome_for, send_in_chunks
from comms_pipeline.daemons.gateway_pool import GatewayPool, build_pool
from comms_pipeline.gateways.protocols import EmailMessage, EmailSender, SendResult
from comms_pipeline.pipeline.documents import document_contents
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.store.dialect import reading

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.gateways.rate import RateGate
    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings
    from comms_pipeline.settings.gateways import EmailGateway

log = structlog.get_logger(__name__)

NO_DOCUMENT = "NO_DOCUMENT"


def make_email_sender(settings: Settings, cfg: EmailGateway | None = None,
                      rate: RateGate | None = None) -> EmailSender:
    """The backend of ``cfg`` (default: ``gateways.email``); SMTP takes ``rate``'s tokens
    message by message."""
    cfg = cfg or settings.gateways.email
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_files import LocalEmailSender

        return LocalEmailSender(settings.var_dir / "out" / "email")
    if cfg.backend == "smtp":
        from comms_pipeline.gateways.smtp import SmtpEmailSender

        return SmtpEmailSender(cfg, rate)
    raise ConfigError(f"unknown email backend {cfg.backend!r}")


class EmailDaemon(PooledDelivery[EmailMessage, EmailSender]):
    media = "email"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        self.mail_from = parseaddr(settings.email.from_address)[1]
        if not self.mail_from:
            raise ConfigError(f"email.from_address has no address: "
                              f"{settings.email.from_address!r}")
        self.gateways: GatewayPool[EmailMessage] = build_pool(
            "email", settings.gateways.email_pool(), engine,
            lambda cfg, rate: make_email_sender(settings, cfg, rate),
            lambda cfg: cfg.backend == "smtp")
        self.verp = VerpAddresses.from_settings(settings)
        self.chunk = max(20, 10 * settings.gateways.email.connections)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        with reading(self.engine) as conn:
            contents = document_contents(conn, [r.id for r in rows])
        outcomes: list[Outcome] = []
        messages: list[EmailMessage] = []
        priorities: list[int] = []
        for row in rows:
            data = contents.get(row.id)
            if not data:
                outcomes.append(Outcome.done(row.id, DetailState.REJECTED, NO_DOCUMENT,
                                             "no merged email document for this entry",
                                             completed_at=utcnow()))
            elif not row.address:
                outcomes.append(Outcome.done(row.id, DetailState.REJECTED, ErrorCode.NO_ADDRESS,
                                             "no email address on this entry",
                                             completed_at=utcnow()))
            else:
                mail_from = self.verp.address(row.id) if self.verp else self.mail_from
                messages.append(EmailMessage(row.id, mail_from, (row.address,), data))
                priorities.append(row.priority)
        sent: list[int] = []
        for m, (res, via) in send_in_chunks(messages, self.send_chunk, ctx, self.chunk,
                                            priorities):
            outcomes.append(outcome_for(m.detail_id, res, self.media, log_sent=False,
                                        gateway=via))
            if isinstance(res, SendResult):
                sent.append(m.detail_id)
        if sent:  # one event per batch: per message it cost as much as the send itself
            log.info("email.sent", count=len(sent), detail_ids=sent)
        return outcomes

