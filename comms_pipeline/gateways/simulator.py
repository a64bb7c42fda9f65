"""The simulator: a gateway of every media that sends nothing and answers by the target.

Test API keys' communications go through the whole pipeline (validation, merge, documents,
states) and, at the last step, to these senders instead of a real gateway: the daemons swap
their gateway for the one here when an entry is a test entry (see
:meth:`comms_pipeline.daemons.delivery.DeliveryHandler.handle`). Each sender implements its
media's Protocol of :mod:`.protocols`; what it answers depends only on the target
(:mod:`comms_pipeline.core.simulated_targets`), so outcomes are the same on every run:

- ``delivered``: accepted, reference ``sim-<media>-<detail id>``;
- ``tempfail-then-ok``: a transient failure on the entry's first attempt, accepted after;
- ``permfail``: refused for good (``SIM_PERMFAIL``);
- ``bounce``: accepted, then bounced (``BOUNCED``): the entry ends Rejected;
- ``complaint``: accepted and delivered, then reported as spam (``COMPLAINED``).

Every message handed over is kept in :attr:`Simulator.sent` (detail id, target, outcome), for
tests and for the daemon's log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.core.simulated_targets import outcome_of
from comms_pipeline.gateways.protocols import (
    EmailMessage,
    Letter,
    Outcome,
    PushMessage,
    SendResult,
    SmsMessage,
    WebhookMessage,
)

TEMPFAIL = "SIM_TEMPFAIL"
PERMFAIL = "SIM_PERMFAIL"
BOUNCED = "BOUNCED"
COMPLAINED = "COMPLAINED"


@dataclass(frozen=True)
class Simulated:
    """One message the simulator took: whose, to where, and what it made of it."""

    detail_id: int
    target: str
    outcome: str


class Simulator:
    """The answers shared by every media's simulated sender."""

    media = ""

    def __init__(self) -> None:
        self.sent: list[Simulated] = []
        #: Entries already tried once (their ``tempfail-then-ok`` now succeeds); the daemon
        #: says which (:meth:`retrying`), so the outcome does not depend on which copy of a
        #: daemon makes the second attempt.
        self._tried: set[int] = set()
        #: Entries accepted and then complained about: the daemon records it on them.
        self.complaints: set[int] = set()

    def retrying(self, detail_ids: Sequence[int]) -> None:
        """These entries were attempted before: their transient failure is behind them."""
        self._tried.update(detail_ids)

    def answer(self, detail_id: int, target: str) -> Outcome:
        outcome = outcome_of(target)
        self.sent.append(Simulated(detail_id, target, outcome))
        accepted = SendResult(ref=f"sim-{self.media}-{detail_id}",
                              reply=f"simulated: {outcome}")
        if outcome == "tempfail-then-ok" and detail_id not in self._tried:
            self._tried.add(detail_id)
            return TransientGatewayError(TEMPFAIL, "simulated temporary failure (the next "
                                         "attempt succeeds)")
        if outcome == "permfail":
            return PermanentGatewayError(PERMFAIL, "simulated permanent failure: the "
                                         "recipient does not exist")
        if outcome == "bounce":
            return PermanentGatewayError(BOUNCED, f"simulated hard bounce (5.1.1) after the "
                                         f"gateway accepted it as {accepted.ref}")
        if outcome == "complaint":
            self.complaints.add(detail_id)
        return accepted

    def close(self) -> None:
        """Nothing to release."""


class SimulatedEmailSender(Simulator):
    media = "email"

    def send_many(self, messages: Sequence[EmailMessage]) -> list[Outcome]:
        return [self.answer(m.detail_id, m.rcpt_to[0] if m.rcpt_to else "") for m in messages]


class SimulatedSmsSender(Simulator):
    media = "sms"

    def send_many(self, messages: Sequence[SmsMessage]) -> list[Outcome]:
        return [self.answer(m.detail_id, m.to) for m in messages]


class SimulatedPushSender(Simulator):
    media = "push"

    def send_many(self, messages: Sequence[PushMessage]) -> list[Outcome]:
        return [self.answer(m.detail_id, m.token) for m in messages]


class SimulatedWebhookSender(Simulator):
    media = "external"

    def send_many(self, messages: Sequence[WebhookMessage]) -> list[Outcome]:
        return [self.answer(m.detail_id, m.url) for m in messages]


class SimulatedLetterDrop(Simulator):
    media = "letter"

    def deliver(self, letters: Sequence[Letter]) -> list[Outcome]:
        return [self.answer(letter.detail_id, letter.name) for letter in letters]


#: The simulated gateway of each media.
SIMULATORS: dict[str, type[Simulator]] = {
    cls.media: cls for cls in (SimulatedEmailSender, SimulatedSmsSender, SimulatedPushSender,
                               SimulatedWebhookSender, SimulatedLetterDrop)}
