"""Pure rules, no database: processing rules, public states, target selection, outcomes."""

from __future__ import annotations

import pytest

from comms_pipeline.core.addressing import Address, InvalidAddress, normalise, select_targets
from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.core.processing_rules import processing_refusal
from comms_pipeline.core.states import DetailState, PublicState, public_state
from comms_pipeline.daemons.delivery import outcome_for
from comms_pipeline.gateways.protocols import SendResult, SmsMessage, SmsSender
from comms_pipeline.testing import FakeSender


@pytest.mark.parametrize(("media", "direction", "enabled", "expected"), [
    ("email", "incoming", True, "Incoming Emails not Supported"),
    ("email", "outgoing", False, "Email Server not Enabled"),
    ("email", "outgoing", True, None),
    ("sms", "incoming", True, "Incoming SMS not Supported"),
    ("sms", "outgoing", False, "SMS Server not Enabled"),
    ("sms", "outgoing", True, None),
])
def test_processing_rules_of_spec(media, direction, enabled, expected):
    refusal = processing_refusal(media, direction, enabled)
    assert (refusal[1] if refusal else None) == expected


def test_public_states():
    assert public_state("awaiting_merge") == PublicState.PENDING
    assert public_state("awaiting_external") == PublicState.PENDING
    assert public_state("completed_removed").value == "Completed and Removed"
    assert {public_state(s) for s in DetailState} == set(PublicState)


ADDRESSES = [Address("email", "a@x.com", "home", False), Address("email", "b@x.com", "work", True),
             Address("email", "c@x.com", "work", False, invalid_reason="bounced"),
             Address("phone", "+35799123456", "mobile", False)]


def test_send_to_rules():
    assert [a.value for a in select_targets(ADDRESSES, "email", "all", None)[0]] == [
        "a@x.com", "b@x.com"]
    assert [a.value for a in select_targets(ADDRESSES, "email", "primary", None)[0]] == [
        "b@x.com"]
    assert [a.value for a in select_targets(ADDRESSES, "phone", "primary", None)[0]] == [
        "+35799123456"]
    assert select_targets(ADDRESSES, "postal", "primary", None) == (
        [], "the contact has no postal address")
    assert select_targets(ADDRESSES, "email", "type", "office")[1] == (
        "the contact has no office email address")


def test_ambiguous_primary_is_explained():
    two = [Address("email", "a@x.com", "home", False), Address("email", "b@x.com", "home", False)]
    assert select_targets(two, "email", "primary", None) == (
        [], "the contact has 2 email addresses and none is marked primary")


def test_normalise_addresses():
    assert normalise("phone", "99 123456", "CY") == "+35799123456"
    assert normalise("email", "Maria@Example.COM") == "Maria@example.com"
    for kind, bad in (("phone", "+1 555"), ("email", "no-at-sign"), ("device", "a b"),
                      ("email", "")):
        with pytest.raises(InvalidAddress):
            normalise(kind, bad)


def test_outcomes_from_gateway_answers():
    ok = outcome_for(1, SendResult(ref="abc", reply="250 queued"), "sms")
    assert (ok.action, ok.state, ok.values["gateway_ref"]) == ("done", "completed", "abc")
    later = outcome_for(2, TransientGatewayError("421", "busy"), "sms")
    assert (later.action, later.code) == ("retry", "421")
    refused = outcome_for(3, PermanentGatewayError("550", "no such user"), "sms")
    assert (refused.state, refused.code, refused.description) == (
        "rejected", "550", "no such user")


def test_fake_sender_keeps_its_own_state_and_fails_on_demand():
    a, b = FakeSender(), FakeSender()
    assert isinstance(a, SmsSender)
    a.fail("+2", "0x0000000B", "ESME_RINVDSTADR")
    results = a.send_many([SmsMessage(1, "+1", "hi"), SmsMessage(2, "+2", "hi")])
    assert isinstance(results[0], SendResult) and results[1].code == "0x0000000B"
    assert len(a.sent) == 1 and b.sent == []
