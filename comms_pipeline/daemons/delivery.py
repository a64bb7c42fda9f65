"""The shared shape of every delivery daemon: checks, one gateway call per batch, outcomes.

A daemon supplies only :meth:`DeliveryHandler.deliver` (turn rows into gateway messages and
the gateway's answers into outcomes, usually with :func:`outcome_for`). Expiry and SPEC's
processing rules are applied here, once, for every media, and so is the one seam between live
and test traffic: a test entry (``is_test``, caused by a test API key) is delivered by a twin
of the daemon whose gateway is the simulator (:mod:`comms_pipeline.gateways.simulator`); a
live entry never is.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import structlog

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import ConfigError, GatewayError
from comms_pipeline.core.processing_rules import processing_refusal
from comms_pipeline.core.states import DetailState, ErrorCode
from comms_pipeline.daemons.gateway_pool import GatewayPool, Member, Routed
from comms_pipeline.gateways import simulator
from comms_pipeline.gateways.breaker import CircuitBreaker
from comms_pipeline.gateways.protocols import (
    EmailSender,
    LetterDrop,
    PushSender,
    SendResult,
    SmsSender,
    WebhookSender,
)
from comms_pipeline.pipeline.media import load_media_rules
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.store.dialect import reading

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

class _Entry(Protocol):
    """A message that names its entry (every gateway's message type does)."""

    @property
    def detail_id(self) -> int: ...


M = TypeVar("M", bound=_Entry)
R = TypeVar("R")
S = TypeVar("S")


def outcome_for(row_id: int, result: SendResult | GatewayError, media: str, *,
                log_sent: bool = True, gateway: str | None = None) -> Outcome:
    """Map a gateway's answer to the queue entry's next state; ``gateway`` (the name of the
    one that answered) is recorded on a sent or refused entry.

    A daemon sending thousands a second passes ``log_sent=False`` and logs each chunk's
    sends as one event instead (an INFO line costs about as much as an SMTP transaction);
    deferrals and rejections are always logged one by one.
    """
    via = {} if gateway is None else {"gateway": gateway}
    if isinstance(result, SendResult):
        if log_sent:
            log.info(f"{media}.sent", detail_id=row_id, ref=result.ref, **via)
        return Outcome.done(row_id, DetailState.COMPLETED, gateway_ref=result.ref,
                            gateway_status=result.reply, completed_at=utcnow(),
                            error_code=None, error_description=None, **via)
    if result.transient:
        log.warning(f"{media}.deferred", detail_id=row_id, code=result.code,
                    error=result.description, **via)
        return Outcome.retry(row_id, result.code, result.description)
    log.warning(f"{media}.rejected", detail_id=row_id, code=result.code,
                error=result.description, **via)
    return Outcome.done(row_id, DetailState.REJECTED, result.code, result.description,
                        completed_at=utcnow(), **via)


def send_in_chunks(messages: Sequence[M], send: Callable[[Sequence[M]], Sequence[R]],
                   ctx: BatchContext, chunk: int,
                   priorities: Sequence[int] | None = None) -> Iterator[tuple[M, R]]:
    """Send ``messages`` ``chunk`` at a time; before each chunk after the first, make sure
    the batch is still ours and no shutdown was asked for. Messages not sent have no outcome:
    the runner releases them if they are still held, and leaves them alone if another worker
    took them over (it sends them: sending them here too would be a duplicate).

    With ``priorities`` (one per message, best first), the batch also stops at a boundary
    when a better priority than the rest's waits in the queue (a priority-1 message that came
    in while a bulk batch is sent): the rest goes back, and the next claim takes it first.
    """
    for start in range(0, len(messages), chunk):
        part = messages[start:start + chunk]
        # The next chunk's rows only (a read of 20 ids, not of the whole batch at every chunk:
        # that read cost as much as the sends themselves, bench/email_daemon.py --profile).
        if start and not ctx.still_ours([m.detail_id for m in part]):
            break
        if ctx.stopping:
            break
        if start and priorities is not None and ctx.outranked(min(priorities[start:])):
            log.info("delivery.outranked", left=len(messages) - start)
            break
        yield from zip(part, send(part), strict=True)


#: What a daemon's gateway implements (a gateway object of any media).
_GATEWAYS = (SmsSender, EmailSender, PushSender, WebhookSender, LetterDrop)


def _simulated(outcome: Outcome, sim: simulator.Simulator) -> Outcome:
    """A simulated answer's outcome: a simulated temporary failure is tried again at once,
    and a simulated complaint is recorded on its (delivered) entry."""
    if outcome.action == "retry" and outcome.code == simulator.TEMPFAIL:
        outcome.delay = 0.0
    elif outcome.state == DetailState.COMPLETED and outcome.id in sim.complaints:
        outcome.values.update(
            gateway_status="complaint", error_code=simulator.COMPLAINED,
            error_description="simulated complaint: the recipient reported it as spam")
    return outcome


class DeliveryHandler(ABC):
    """Base of the daemons that send details of one media through a gateway."""

    media: str = ""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.name = self.media
        self.queue = detail_queue(self.media)
        self._sim_twin: tuple[DeliveryHandler, simulator.Simulator] | None = None

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        outcomes, sendable = self.screen(rows)
        live = [r for r in sendable if not r.is_test]
        test = [r for r in sendable if r.is_test]
        if test and not ctx.stopping:  # test entries: the simulator, never a real gateway
            outcomes.extend(self.simulate(test, ctx))
        if live and not ctx.stopping:
            outcomes.extend(self.deliver(live, ctx))
        return outcomes

    def screen(self, rows: Sequence[Row]) -> tuple[list[Outcome], list[Row]]:
        """The outcomes of rows that must not be sent (expired, or refused by the processing
        rules), and the rows to send."""
        with reading(self.engine) as conn:
            rule = load_media_rules(conn)[self.media]
        now = utcnow()
        outcomes: list[Outcome] = []
        sendable = []
        for row in rows:
            refusal = processing_refusal(row.media, row.direction, rule.enabled, self.media)
            if row.expires_at is not None and row.expires_at <= now:
                outcomes.append(Outcome.done(
                    row.id, DetailState.EXPIRED, ErrorCode.EXPIRED,
                    f"expired at {row.expires_at:%Y-%m-%d %H:%M} UTC before it was sent"))
            elif refusal:
                outcomes.append(Outcome.done(row.id, DetailState.REJECTED, *refusal,
                                             completed_at=now))
            else:
                sendable.append(row)
        sendable.sort(key=lambda r: (r.priority, r.id))  # the batch's best priority first
        return outcomes, sendable

    def simulate(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        """Deliver test entries through this daemon's own code with the simulator as its
        gateway: the same messages are built, only the last step is simulated."""
        twin, sim = self._simulated_twin()
        sim.retrying([r.id for r in rows if r.attempts > 1])
        outcomes = [_simulated(o, sim) for o in twin.deliver(rows, ctx)]
        log.info("simulator.sent", media=self.media, count=len(rows))
        return outcomes

    def _simulated_twin(self) -> tuple[DeliveryHandler, simulator.Simulator]:
        """A shallow copy of this daemon whose every gateway is the media's simulator.

        Fails closed: a daemon holding no gateway this can see (one attribute implementing
        its media's Protocol, a failover pool included) refuses to send test entries rather
        than risk sending them for real.
        """
        if self._sim_twin is None:
            sim = simulator.SIMULATORS[self.media]()
            twin = copy.copy(self)
            gateways = [name for name, value in vars(self).items()
                        if isinstance(value, _GATEWAYS) and not isinstance(value, type(sim))]
            if not gateways:
                raise ConfigError(f"the {self.name} daemon's gateway was not found: test "
                                  f"entries are not sent (none may reach a real gateway)")
            for name in gateways:
                value = getattr(self, name)
                if isinstance(value, GatewayPool):  # the failover list: one simulated member
                    setattr(twin, name, GatewayPool(value.media, [Member(
                        "simulator", cast(Any, sim), CircuitBreaker("simulator", 1_000_000, 1.0))]))
                else:
                    setattr(twin, name, sim)
            twin._sim_twin = None
            self._sim_twin = (twin, sim)
        return self._sim_twin

    @abstractmethod
    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        """Send ``rows`` through the gateway; return one outcome per row sent."""

    def close(self) -> None:  # noqa: B027 - optional hook: most daemons close their sender
        """Release gateway connections."""


class PooledDelivery(DeliveryHandler, Generic[M, S]):
    """A daemon that sends through a failover list of gateways (``self.gateways``, built by
    the subclass): email and SMS. ``S`` is the media's sender Protocol."""

    gateways: GatewayPool[M]

    def send_chunk(self, messages: Sequence[M]) -> list[Routed]:
        """Choose the gateway for these entries and send them: the seam where a gateway is
        picked (here: the first of the failover list whose circuit breaker lets it through)."""
        return self.gateways.send_many(messages)

    @property
    def sender(self) -> S:
        """The first gateway's sender."""
        return cast(S, self.gateways.members[0].sender)

    @sender.setter
    def sender(self, sender: S) -> None:
        self.gateways.members[0].sender = cast(Any, sender)

    def close(self) -> None:
        self.gateways.close()
