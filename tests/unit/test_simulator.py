"""The simulator's reserved recipients, its answers, and the daemons' seam that fails closed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from comms_pipeline.core.errors import ConfigError, GatewayError
from comms_pipeline.core.simulated_targets import outcome_of
from comms_pipeline.daemons.delivery import DeliveryHandler
from comms_pipeline.gateways.protocols import EmailMessage, EmailSender, SendResult, SmsSender
from comms_pipeline.gateways.simulator import SimulatedEmailSender, SimulatedSmsSender
from comms_pipeline.pipeline.quotas import LimitsError, parse_daily


@pytest.mark.parametrize(("target", "outcome"), [
    ("delivered@simulator.comms.test", "delivered"),
    ("Bounce+run7@Simulator.Comms.Test", "bounce"),
    ("nobody@simulator.comms.test", "delivered"),
    ("+447700900002", "tempfail-then-ok"), ("+447700900005", "complaint"),
    ("+447700900999", "delivered"), ("sim-permfail", "permfail"),
    ("someone@example.com", "delivered")])
def test_reserved_targets(target, outcome):
    assert outcome_of(target) == outcome


def test_answers_by_target_and_tempfail_passes_on_the_second_attempt():
    sim = SimulatedEmailSender()
    assert isinstance(sim, EmailSender) and isinstance(SimulatedSmsSender(), SmsSender)
    msgs = [EmailMessage(i, "from@example.com", (f"{o}@simulator.comms.test",), b"x")
            for i, o in enumerate(("delivered", "tempfail-then-ok", "permfail", "bounce",
                                   "complaint"), 1)]
    first = sim.send_many(msgs)
    assert isinstance(first[0], SendResult) and first[0].ref == "sim-email-1"
    assert [r.code for r in first[1:4]] == ["SIM_TEMPFAIL", "SIM_PERMFAIL", "BOUNCED"]
    assert isinstance(first[1], GatewayError) and first[1].transient
    assert not first[2].transient and isinstance(first[4], SendResult)
    assert sim.complaints == {5}
    fresh = SimulatedEmailSender()  # another daemon copy takes the retry
    fresh.retrying([2])
    assert isinstance(fresh.send_many([msgs[1]])[0], SendResult)


class _NoGateway(DeliveryHandler):
    media = "email"

    def deliver(self, rows, ctx):  # type: ignore[no-untyped-def]
        raise AssertionError("must not be called")


def test_a_daemon_whose_gateway_is_not_found_refuses_test_entries():
    handler = _NoGateway(SimpleNamespace(), engine=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="test entries are not sent"):
        handler.simulate([SimpleNamespace(id=1, attempts=1)], ctx=None)  # type: ignore[arg-type]


def test_daily_limits_parse():
    assert parse_daily(["email=250000", "SMS=off"]) == {"email": 250000, "sms": None}
    for bad in ("fax=1", "email", "email=0", "email=many"):
        with pytest.raises(LimitsError):
            parse_daily([bad])
