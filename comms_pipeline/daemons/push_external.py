"""Push-to-External daemon: delivers external systems' queue entries as signed webhooks.

It works the entries waiting for an external system (``awaiting_external``) whose system has a
webhook URL and is enabled; systems without one pull their entries through the Web API. A
delivered entry becomes Completed. A failed delivery is retried on a schedule that spans
hours (``gateways.webhook.retry_schedule_seconds``; the number of attempts is the Claimer's,
and after the last one the entry is Rejected). Failures are counted per endpoint and the
endpoint is disabled, with its reason, after ``disable_after_failures`` in a row; a target the
network guard refuses, or a secret that cannot sign, disables it at once. Entries of a
disabled endpoint stay Pending: they can still be pulled, or pushed again once the endpoint
is re-enabled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import ConfigError, GatewayError
from comms_pipeline.core.states import DetailState
from comms_pipeline.daemons.delivery import DeliveryHandler, outcome_for
from comms_pipeline.gateways.protocols import SendResult, WebhookMessage, WebhookSender
from comms_pipeline.gateways.webhook import ENDPOINT_ERRORS
from comms_pipeline.pipeline import audit
from comms_pipeline.queue.claims import Outcome, WorkQueue
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.queue.retry import FixedSchedule, RetryPolicy
from comms_pipeline.queue.wake import EXTERNAL_CHANNEL
from comms_pipeline.store.dialect import reading
from comms_pipeline.store.models import details_t, headers_t, systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)


def external_queue(retry: RetryPolicy | None = None) -> WorkQueue:
    """Entries for external systems that take webhooks and are enabled."""
    hooked = select(systems_t.c.id).where(systems_t.c.webhook_url.isnot(None),
                                          systems_t.c.webhook_url != "",
                                          systems_t.c.enabled.is_(True))
    return WorkQueue(
        machine=DETAILS,
        pending=lambda: and_(details_t.c.state == DetailState.AWAITING_EXTERNAL,
                             details_t.c.external_system_id.in_(hooked)),
        order_by=(details_t.c.priority, details_t.c.id),
        retry=retry,
        # One system's webhook backlog does not hold back another's (queue.lanes).
        lane=details_t.c.external_system_id,
        lane_domain=systems_t.c.id,
        channel=EXTERNAL_CHANNEL,
    )


def make_webhook_sender(settings: Settings) -> WebhookSender:
    cfg = settings.gateways.webhook
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_jsonl import LocalWebhookSender

        return LocalWebhookSender(settings.var_dir / "out" / "webhooks")
    if cfg.backend == "http":
        from comms_pipeline.gateways.webhook import HttpWebhookSender

        return HttpWebhookSender(cfg)
    raise ConfigError(f"gateways.webhook.backend: unknown backend {cfg.backend!r}")


def event_id(detail_id: int) -> str:
    """The webhook-id: the same on every retry of an entry, so receivers can deduplicate."""
    return f"msg_comms_detail_{detail_id}"


def payload(row: Row, system_code: str, header: Row | None) -> bytes:
    def iso(value: Any) -> str | None:
        return value.isoformat() + "Z" if value is not None else None

    data = {
        "id": row.id, "header_id": row.header_id, "external_system": system_code,
        "contact_ref": header.contact_ref if header else None,
        "template_code": header.template_code if header else None,
        "media": row.media, "direction": row.direction, "classification": row.classification,
        "address": row.address, "language": row.language, "subject": row.subject,
        "body": row.body, "priority": row.priority, "expires_at": iso(row.expires_at),
        "created_at": iso(row.created_at),
    }
    event = {"type": "communication.created", "timestamp": iso(utcnow()), "data": data}
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class _Tally:
    """One endpoint's results in a batch, in order."""

    failures: int = 0
    reset: bool = False
    last: GatewayError | None = None
    refused: bool = False


class PushExternalDaemon(DeliveryHandler):
    media = "external"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        self.name = "push-external"
        self.cfg = settings.gateways.webhook
        self.queue = external_queue(FixedSchedule(
            tuple(self.cfg.retry_schedule_seconds), settings.claims.max_attempts))
        self.sender = make_webhook_sender(settings)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        with reading(self.engine) as conn:
            systems = {s.id: s for s in conn.execute(select(systems_t).where(
                systems_t.c.id.in_({r.external_system_id for r in rows})))}
            headers = {h.id: h for h in conn.execute(
                select(headers_t.c.id, headers_t.c.contact_ref, headers_t.c.template_code)
                .where(headers_t.c.id.in_({r.header_id for r in rows})))}
        outcomes: list[Outcome] = []
        sendable, messages = [], []
        tallies: dict[int, _Tally] = {}
        for r in rows:
            system = systems[r.external_system_id]
            if not system.webhook_secret:
                tallies[system.id] = _Tally(refused=True, last=GatewayError(
                    "NO_SECRET", "the external system has no webhook secret to sign with"))
                outcomes.append(Outcome.release(r.id))
                continue
            sendable.append(r)
            messages.append(WebhookMessage(r.id, system.webhook_url, system.webhook_secret,
                                           event_id(r.id),
                                           payload(r, system.code, headers.get(r.header_id))))
        results = self.sender.send_many(messages) if messages else []
        for r, res in zip(sendable, results, strict=True):
            tally = tallies.setdefault(r.external_system_id, _Tally())
            outcomes.append(self._outcome(r, res, tally))
        self._record(tallies, systems)
        return outcomes

    def _outcome(self, row: Row, res: SendResult | GatewayError, tally: _Tally) -> Outcome:
        if isinstance(res, SendResult):
            tally.failures, tally.reset = 0, True
            return outcome_for(row.id, res, "webhook")
        tally.failures += 1
        tally.last = res
        if res.code in ENDPOINT_ERRORS:
            tally.refused = True
            return Outcome.release(row.id)
        delay = self.queue.policy(self.settings.claims).delay(row.attempts)
        if not res.transient or delay is None:
            return outcome_for(row.id, res, "webhook")
        log.warning("webhook.deferred", detail_id=row.id, code=res.code, attempt=row.attempts,
                    retry_in=delay)
        return Outcome.retry(row.id, res.code, res.description)

    def _record(self, tallies: dict[int, _Tally], systems: dict[int, Row]) -> None:
        """Keep each endpoint's run of failures; disable it when the run is too long."""
        if not tallies:
            return
        limit = self.cfg.disable_after_failures
        with self.engine.begin() as conn:
            for system_id, tally in tallies.items():
                col = systems_t.c.consecutive_failures
                new = tally.failures if tally.reset else col + tally.failures
                count = conn.execute(update(systems_t).where(systems_t.c.id == system_id)
                                     .values(consecutive_failures=new)
                                     .returning(col)).scalar_one()
                if tally.last is None or not (tally.refused or count >= limit):
                    continue
                reason = (f"{tally.last.code}: {tally.last.description}" if tally.refused else
                          f"disabled after {count} consecutive webhook failures; last: "
                          f"{tally.last.code}: {tally.last.description}")
                done = conn.execute(update(systems_t).where(systems_t.c.id == system_id,
                                                            systems_t.c.enabled.is_(True))
                                    .values(enabled=False, disabled_reason=reason[:1000]))
                if done.rowcount:
                    log.warning("webhook.endpoint_disabled", system=systems[system_id].code,
                                failures=count, code=tally.last.code)
                    audit.record(conn, actor="daemon:push-external",
                                 action="external_system.disable",
                                 target_kind="external_system",
                                 target_id=systems[system_id].code,
                                 change={"enabled": {"before": True, "after": False},
                                         "disabled_reason": {"after": reason[:1000]}})

    def close(self) -> None:
        self.sender.close()
