"""Consent and data protection per classification (SPEC "Consent and data protection")."""

from __future__ import annotations

import pytest

from comms_pipeline.notifications.consent import (
    Policy,
    policy_for_rule,
    policy_for_type,
    refusal,
)

NOBODY = {"direct": False, "affiliate": False}
EVERYONE = {"direct": True, "affiliate": True}


@pytest.mark.parametrize("classification", ["financial", "customer_care"])
@pytest.mark.parametrize("respect", ["direct", "affiliate", "both"])
def test_financial_and_care_cannot_be_opted_out_of(classification, respect):
    assert refusal(classification, **NOBODY, policy=Policy(respect)) is None


@pytest.mark.parametrize("classification", ["marketing", "reward"])
def test_marketing_and_reward_need_the_direct_opt_in_by_default(classification):
    skip = refusal(classification, **NOBODY)
    assert skip is not None
    assert (skip.code, skip.reason) == (
        "OPTED_OUT", "the contact has not opted in to direct marketing")
    assert refusal(classification, direct=True, affiliate=False) is None


def test_affiliate_marketing_respects_the_affiliate_opt_in():
    policy = policy_for_rule("PARTNER_OFFER", "affiliate")
    skip = refusal("marketing", direct=True, affiliate=False, policy=policy)
    assert skip is not None and skip.reason.endswith("affiliate marketing")
    assert refusal("marketing", direct=False, affiliate=True, policy=policy) is None


def test_both_names_every_missing_opt_in():
    skip = refusal("marketing", **NOBODY, policy=Policy("both"))
    assert skip is not None
    assert skip.reason == "the contact has not opted in to direct and affiliate marketing"
    assert refusal("marketing", **EVERYONE, policy=Policy("both")) is None


def test_a_type_without_data_protection_communicates_regardless():
    policy = policy_for_type("SUMMER_SALE", apply_data_protection=False, respect_consent="both")
    assert refusal("marketing", **NOBODY, policy=policy) is None
    applied = policy_for_type("SUMMER_SALE", apply_data_protection=True, respect_consent=None)
    assert refusal("marketing", **NOBODY, policy=applied) is not None


def test_a_rule_can_say_consent_does_not_apply():
    assert refusal("marketing", **NOBODY, policy=policy_for_rule("R", "none")) is None


@pytest.mark.parametrize("classification", ["marketing", "reward", "financial", "customer_care"])
def test_override_for_important_messages(classification):
    assert refusal(classification, **NOBODY, policy=Policy("both"), override=True) is None
