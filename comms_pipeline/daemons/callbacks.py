"""Callbacks daemon: delivers the callback outbox to client systems as signed webhooks.

It claims outbox rows (:mod:`comms_pipeline.queue.callbacks`) with the shared claim
mechanism and posts each through the webhook gateway that pushes external systems' entries
(:func:`~comms_pipeline.daemons.push_external.make_webhook_sender`: Standard Webhooks
signature, network guard, timeouts), signed with the endpoint's secret. ``webhook-id`` is the
outbox row's, the same on every retry, so the receiver can drop duplicates: delivery is at
least once. Only the first pending event of each entry is claimable, so events of one entry
arrive in order. A 5xx, a 429, a timeout or a connection failure is retried on
``callbacks.retry_schedule_seconds`` (hours); after ``callbacks.max_attempts`` the event is
failed and the entry's next event goes. Any other answer fails the event at once. Failures
are counted per endpoint and the endpoint is disabled after
``callbacks.disable_after_failures`` in a row (at once for a refused target or a bad
secret); its events wait, pending, until it is enabled again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import GatewayError
from comms_pipeline.daemons.push_external import make_webhook_sender
from comms_pipeline.gateways.protocols import SendResult, WebhookMessage
from comms_pipeline.gateways.webhook import ENDPOINT_ERRORS
from comms_pipeline.queue.callbacks import DELIVERED, FAILED, deliverable, forget_endpoints
from comms_pipeline.queue.claims import Outcome, WorkQueue
from comms_pipeline.queue.machine import CALLBACKS
from comms_pipeline.queue.retry import FixedSchedule
from comms_pipeline.store.dialect import reading
from comms_pipeline.store.models import callback_endpoints_t, callback_outbox_t, systems_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: Answers worth trying again: the receiver is busy or broken for now.
RETRIED_STATUSES = frozenset({408, 425, 429})


def callback_queue(retry: FixedSchedule) -> WorkQueue:
    return WorkQueue(machine=CALLBACKS, pending=deliverable,
                     order_by=(callback_outbox_t.c.id,), retry=retry)


def event_id(row_id: int) -> str:
    """The webhook-id of one outbox row (the same on every retry)."""
    return f"msg_comms_callback_{row_id}"


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def payload(row: Row, system_code: str) -> bytes:
    """The event as sent: ids, states, codes and timestamps; never a body or an address."""
    data: dict[str, Any] = {
        "event": row.event, "sequence": row.seq, "external_system": system_code,
        "request_id": row.header_id, "detail_id": row.detail_id, "state": row.entry_state,
        "code": row.code, "at": _iso(row.created_at),
    }
    if row.payload:
        data["details"] = row.payload
    event = {"type": f"communication.{row.event}", "timestamp": _iso(utcnow()), "data": data}
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def retried(res: GatewayError) -> bool:
    """5xx, 429 (and 408/425), timeouts and connection failures; not other 4xx answers."""
    if not res.transient:
        return False
    if res.code.startswith("HTTP ") and res.code[5:].isdigit():
        status = int(res.code[5:])
        return status >= 500 or status in RETRIED_STATUSES
    return True


class CallbacksDaemon:
    name = "callbacks"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.cfg = settings.callbacks
        self.schedule = FixedSchedule(tuple(self.cfg.retry_schedule_seconds),
                                      self.cfg.max_attempts)
        self.queue = callback_queue(self.schedule)
        self.sender = make_webhook_sender(settings)

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        e = callback_endpoints_t
        with reading(self.engine) as conn:
            endpoints = {r.id: r for r in conn.execute(
                select(e.c.id, e.c.url, e.c.secret, e.c.enabled, systems_t.c.code)
                .join(systems_t, systems_t.c.id == e.c.system_id)
                .where(e.c.id.in_({r.endpoint_id for r in rows})))}
        sendable = [r for r in rows if r.endpoint_id in endpoints
                    and endpoints[r.endpoint_id].enabled]
        if ctx.stopping or not sendable:
            return []
        messages = [WebhookMessage(r.id, endpoints[r.endpoint_id].url,
                                   endpoints[r.endpoint_id].secret, event_id(r.id),
                                   payload(r, endpoints[r.endpoint_id].code))
                    for r in sendable]
        results = self.sender.send_many(messages)
        outcomes: list[Outcome] = []
        tallies: dict[int, list[GatewayError | None]] = {}
        now = utcnow()
        for r, res in zip(sendable, results, strict=True):
            tallies.setdefault(r.endpoint_id, []).append(
                None if isinstance(res, SendResult) else res)
            outcomes.append(self._outcome(r, res, now))
        self._record(tallies)
        return outcomes

    def _outcome(self, row: Row, res: SendResult | GatewayError, now: Any) -> Outcome:
        if isinstance(res, SendResult):
            log.info("callback.sent", event_id=row.id, endpoint=row.endpoint_id,
                     kind=row.event, reply=res.reply)
            return Outcome.done(row.id, DELIVERED, delivered_at=now, error_code=None,
                                error_description=None)
        if res.code in ENDPOINT_ERRORS:
            return Outcome.release(row.id)  # the endpoint is disabled below
        if retried(res) and self.schedule.delay(row.attempts) is not None:
            log.warning("callback.deferred", event_id=row.id, endpoint=row.endpoint_id,
                        code=res.code, attempt=row.attempts)
            return Outcome.retry(row.id, res.code, res.description)
        why = ("not retried" if not retried(res)
               else f"gave up after {row.attempts} attempts")
        log.warning("callback.failed", event_id=row.id, endpoint=row.endpoint_id,
                    code=res.code, attempts=row.attempts)
        return Outcome.done(row.id, FAILED, res.code, f"{res.description} ({why})"[:1000])

    def _record(self, tallies: dict[int, list[GatewayError | None]]) -> None:
        """Keep each endpoint's run of failures; disable it when the run is too long."""
        e = callback_endpoints_t
        limit = self.cfg.disable_after_failures
        with self.engine.begin() as conn:
            for endpoint_id, results in tallies.items():
                run = 0
                reset = False
                for res in results:
                    run, reset = (0, True) if res is None else (run + 1, reset)
                if reset and run == 0:
                    conn.execute(update(e).where(e.c.id == endpoint_id,
                                                 e.c.consecutive_failures != 0)
                                 .values(consecutive_failures=0))
                    continue
                new = run if reset else e.c.consecutive_failures + run
                count = conn.execute(update(e).where(e.c.id == endpoint_id)
                                     .values(consecutive_failures=new)
                                     .returning(e.c.consecutive_failures)).scalar_one()
                last = next(r for r in reversed(results) if r is not None)
                refused = last.code in ENDPOINT_ERRORS
                if not (refused or count >= limit):
                    continue
                reason = (f"{last.code}: {last.description}" if refused else
                          f"disabled after {count} consecutive callback failures; last: "
                          f"{last.code}: {last.description}")
                done = conn.execute(update(e).where(e.c.id == endpoint_id,
                                                    e.c.enabled.is_(True))
                                    .values(enabled=False, disabled_at=utcnow(),
                                            disabled_reason=reason[:1000]))
                if done.rowcount:
                    log.warning("callback.endpoint_disabled", endpoint=endpoint_id,
                                failures=count, code=last.code)
                    forget_endpoints()

    def close(self) -> None:
        self.sender.close()
