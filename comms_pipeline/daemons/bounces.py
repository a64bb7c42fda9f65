"""The bounce receiver: ``comms daemon run bounces``.

An SMTP server (:mod:`comms_pipeline.gateways.bounce_smtp`) on ``[bounces] listen_host`` /
``listen_port`` takes the DSNs and ARF reports remote MTAs send back to the VERP envelope
senders of ``[bounces] domain``. Each is parsed (:mod:`comms_pipeline.gateways.delivery_reports`)
and handed, one event per recipient, to :func:`comms_pipeline.pipeline.feedback.handle_feedback`
in one transaction; the report names its entry by the signed VERP address it came to (else
the original's Return-Path, else the signed id in its Message-ID). A report that cannot be
read is kept (``feedback_reports``, outcome ``malformed``) and counted, and answered 250: the
sender's MTA could do nothing better with it. A failure to store answers 451, and so does a
hard bounce that came back before its entry's batch was finished (the MTA sends it again).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.gateways.bounce_smtp import BounceSmtpServer
from comms_pipeline.gateways.delivery_reports import MalformedReport, parse_report
from comms_pipeline.pipeline.feedback import EntryInFlight, handle_feedback, record_malformed
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.queue.heartbeat import Heartbeat

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

SOURCE = "smtp"
IN_FLIGHT = "451 4.3.0 the message is still being sent; try again later"


class BounceDaemon:
    name = "bounces"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        verp = VerpAddresses.from_settings(settings)
        if verp is None:
            raise ConfigError("bounces.domain is not set: the bounce receiver takes mail for "
                              "the bounce domain only; set [bounces] domain (and send with it)")
        self.settings = settings
        self.engine = engine
        self.verp = verp
        cfg = settings.bounces
        self.heartbeat = Heartbeat(engine, self.name, settings.daemons.heartbeat_seconds)
        self.server = BounceSmtpServer(cfg.listen_host, cfg.listen_port, verp.accepts_domain,
                                       self.receive, max_bytes=cfg.max_message_bytes)
        self.received = 0

    def receive(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> str:
        """Record one report; the reply to its DATA (raises when it cannot be stored)."""
        now = utcnow()
        detail_id = next((d for d in map(self.verp.detail_id, rcpt_tos) if d is not None),
                         None)
        try:
            parsed = parse_report(data)
        except MalformedReport as exc:
            with self.engine.begin() as conn:
                record_malformed(conn, SOURCE, str(exc), data, now)
            self._count()
            return "250 2.0.0 kept: not a report this server can read"
        if detail_id is None and parsed.original_sender:
            detail_id = self.verp.detail_id(parsed.original_sender)
        try:
            with self.engine.begin() as conn:
                if not parsed.recipients:
                    record_malformed(conn, SOURCE, f"a {parsed.report_type} report with no "
                                     "failed or delayed recipient", data, now)
                for r in parsed.recipients:
                    handle_feedback(conn, FeedbackEvent(
                        kind=r.kind, detail_id=detail_id, message_id=parsed.message_id,
                        recipient=r.recipient, status=r.status, diagnostic=r.diagnostic,
                        source=SOURCE, received_at=now), verp=self.verp, raw=data,
                        suppressions=self.settings.suppressions)
        except EntryInFlight:  # back before its batch finished: nothing written, sent again
            log.info("bounces.in_flight", detail_id=detail_id)
            return IN_FLIGHT
        self._count()
        return "250 2.0.0 OK: report recorded"

    def _count(self) -> None:
        self.received += 1
        self.heartbeat.processed = self.received

    def serve(self, stop: threading.Event, once: bool = False) -> int:
        """Listen until ``stop`` is set (``once``: bind, beat once and return: a receiver has
        no backlog to drain); the reports received."""
        self.server.start()
        log.info("bounces.listening", host=self.server.host, port=self.server.port,
                 domain=self.verp.domain)
        try:
            self.heartbeat.beat(force=True)
            while not once and not stop.wait(1.0):
                self.heartbeat.beat()
        finally:
            self.server.stop()
            self.heartbeat.beat(force=True)
            self.heartbeat.stopped()
        log.info("bounces.stopped", received=self.received)
        return self.received

    def close(self) -> None:
        """Nothing held between runs (the server is stopped by :meth:`serve`)."""
