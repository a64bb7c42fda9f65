"""An ordered list of gateways for one media, each behind a circuit breaker: failover.

A batch goes to the first gateway whose breaker lets it through; every message that gateway
fails *transiently* (a connection refused, a bind failing, a 4xx, a throttle given up) goes
on to the next gateway in the same call, so a gateway that dies mid-batch costs a retry
delay to nothing it held. Permanent refusals stay refusals (the next gateway would refuse
them too). A gateway whose breaker is open is skipped; half-open, it gets one message as a
probe and, if that goes through, the rest. When every breaker is open the messages go to
the first gateway anyway, as with a single gateway (and fail transiently if it is still
down, to be retried with backoff). A list of one gateway (the plain ``[gateways.sms]``
configuration) has no breaker: it behaves as before.

Each answer comes back with the name of the gateway that gave it, which the daemon records
on the entry (``request_details.gateway``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import structlog

from comms_pipeline.core.errors import GatewayError, TransientGatewayError
from comms_pipeline.gateways.breaker import CircuitBreaker
from comms_pipeline.gateways.protocols import Outcome
from comms_pipeline.gateways.rate import RateGate
from comms_pipeline.settings.gateways import EmailGateway, SmsGateway

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = structlog.get_logger(__name__)

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

#: One message's answer and the gateway that gave it (None: no gateway was tried).
Routed = tuple[Outcome, str | None]


class BatchSender(Protocol[M_contra]):
    """Any of the gateway Protocols' senders (``send_many`` and ``close``)."""

    def send_many(self, messages: Sequence[M_contra]) -> list[Outcome]: ...

    def close(self) -> None: ...


@dataclass
class Member(Generic[M]):
    """One gateway of the list. ``gate`` paces sends here, for a sender that does not take
    its tokens itself (SMTP and SMPP do, message by message or PDU by PDU)."""

    name: str
    sender: BatchSender[M]
    breaker: CircuitBreaker
    gate: RateGate | None = None

    def send(self, messages: Sequence[M]) -> list[Outcome]:
        if self.gate is None:
            return self.sender.send_many(messages)
        out: list[Outcome] = []
        step = self.gate.lease_size
        for start in range(0, len(messages), step):
            part = messages[start:start + step]
            for _ in part:
                self.gate.acquire()
            out.extend(self.sender.send_many(part))
        return out


def _transient(answer: Outcome) -> bool:
    return isinstance(answer, GatewayError) and answer.transient


class GatewayPool(Generic[M]):
    """The gateways of one media in order of preference."""

    def __init__(self, media: str, members: Sequence[Member[M]]) -> None:
        if not members:
            raise ValueError("a gateway pool needs at least one gateway")
        self.media = media
        self.members = list(members)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def send_many(self, messages: Sequence[M]) -> list[Routed]:
        """One answer per message, in order, each with the gateway that gave it."""
        results: list[Routed | None] = [None] * len(messages)
        todo = list(range(len(messages)))
        single = len(self.members) == 1
        for member in self.members:
            while todo:
                allowed = None if single else member.breaker.allowance()
                if allowed == 0:
                    break
                batch, rest = (todo, []) if allowed is None else (todo[:allowed],
                                                                  todo[allowed:])
                todo = rest + self._send(member, messages, batch, results, single)
                if allowed is None:
                    break  # its failures go on to the next gateway
            if not todo:
                break
        untried = [i for i in todo if results[i] is None]
        if untried:  # every breaker open: the first gateway, as if there were no others
            log.warning(f"{self.media}.every_gateway_open", gateways=self.names,
                        messages=len(untried))
            self._send(self.members[0], messages, untried, results, single)
        return [r if r is not None else
                (TransientGatewayError("NO_GATEWAY", "no gateway took the message"), None)
                for r in results]

    def _send(self, member: Member[M], messages: Sequence[M], batch: list[int],
              results: list[Routed | None], single: bool) -> list[int]:
        """Send ``batch`` (indexes) through ``member``; return the ones failed transiently."""
        answers = member.send([messages[i] for i in batch])
        failed = []
        for i, answer in zip(batch, answers, strict=True):
            results[i] = (answer, member.name)
            transient = _transient(answer)
            if not single:
                member.breaker.record(not transient)
            if transient:
                failed.append(i)
        if failed and not single and member is not self.members[-1]:
            log.info(f"{self.media}.failing_over", gateway=member.name, messages=len(failed))
        return failed

    def close(self) -> None:
        for member in self.members:
            member.sender.close()


G = TypeVar("G", EmailGateway, SmsGateway)


def build_pool(media: str, gateways: Sequence[tuple[str, G]], engine: Engine | None,
               make_sender: Callable[[G, RateGate | None], BatchSender[M]],
               paces_itself: Callable[[G], bool]) -> GatewayPool[M]:
    """The pool of ``media``'s configured gateways (``settings.gateways.<media>_pool()``):
    each with its breaker and, when it has a maximum rate, its gate (given to the sender
    when ``paces_itself(cfg)``, else applied by the pool)."""
    from comms_pipeline.daemons.shared_rate import rate_gate

    members: list[Member[M]] = []
    for name, cfg in gateways:
        gate = rate_gate(engine, f"{media}:{name}", cfg)
        inside = paces_itself(cfg)
        members.append(Member(name, make_sender(cfg, gate if inside else None),
                              CircuitBreaker(f"{media}:{name}", cfg.breaker_failures,
                                             cfg.breaker_open_seconds,
                                             rate=cfg.breaker_failure_rate,
                                             window_seconds=cfg.breaker_window_seconds,
                                             min_calls=cfg.breaker_min_calls),
                              None if inside else gate))
    return GatewayPool(media, members)
