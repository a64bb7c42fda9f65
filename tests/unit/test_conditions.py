"""Conditions of notification types and event rules ("more than" is inclusive)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from comms_pipeline.notifications.conditions import ConditionError, evaluate, lookup, parse

TODAY = date(2024, 11, 1)


def check(conditions, data, mode="all"):
    return evaluate(parse(conditions, mode), data, TODAY)


def test_more_than_is_inclusive_for_amounts():
    rule = [{"field": "ar.outstanding_amount", "op": "more_than", "value": 10}]
    assert check(rule, {"ar": {"outstanding_amount": "10.00"}}) is None
    assert check(rule, {"ar": {"outstanding_amount": Decimal("10.01")}}) is None
    why = check(rule, {"ar": {"outstanding_amount": 9.99}})
    assert why == "ar.outstanding_amount is 9.99, not more than (or equal to) 10"


def test_less_than_is_strict_and_at_most_inclusive():
    assert check([{"field": "x", "op": "less_than", "value": 5}], {"x": "5"}) is not None
    assert check([{"field": "x", "op": "less_than", "value": 5}], {"x": "4.99"}) is None
    assert check([{"field": "x", "op": "at_most", "value": 5}], {"x": 5}) is None


def test_due_n_days_ago():
    rule = [{"field": "due_date", "op": "due_days_ago", "value": 1}]
    assert check(rule, {"due_date": "2024-10-31"}) is None
    assert check(rule, {"due_date": date(2024, 10, 1)}) is None
    assert check(rule, {"due_date": "2024-11-01"}) is not None  # due today: not 1 day ago
    assert check(rule, {"due_date": None}) == "due_date is missing, not due at least 1 day(s) ago"


def test_all_for_types_and_any_for_rules():
    rules = [{"field": "a", "op": "equals", "value": 1}, {"field": "b", "op": "equals", "value": 2}]
    data = {"a": 1, "b": 3}
    assert check(rules, data, "all") == "b is 3, not equal to 2"
    assert check(rules, data, "any") is None
    assert check(rules, {"a": 0, "b": 0}, "any").startswith("none of the conditions holds")
    assert check({"all": rules}, data, "any") is not None  # explicit wins over the default


def test_equality_membership_and_presence():
    assert check([{"field": "state", "op": "in", "value": ["active", "new"]}],
                 {"state": "active"}) is None
    assert check([{"field": "state", "op": "not_in", "value": ["suspended"]}],
                 {"state": "suspended"}) is not None
    assert check([{"field": "amount", "op": "==", "value": "42.5"}], {"amount": 42.50}) is None
    assert check([{"field": "ref", "op": "is_set"}], {"ref": ""}) is not None
    assert check([{"field": "ref", "op": "is_not_set"}], {}) is None
    assert check([{"field": "n", "op": "not_equals", "value": 1}], {"n": 2}) is None


def test_a_missing_or_non_numeric_field_does_not_hold():
    rule = [{"field": "ar.balance", "op": "more_than", "value": 0}]
    assert check(rule, {}) is not None
    assert check(rule, {"ar": "not a mapping"}) is not None
    assert check(rule, {"ar": {"balance": "n/a"}}) is not None


def test_no_conditions_always_hold():
    assert check(None, {}) is None
    assert check([], {}) is None


@pytest.mark.parametrize("bad", [
    [{"field": "x", "op": "bigger", "value": 1}],
    [{"field": "x", "op": "more_than"}],
    [{"op": "more_than", "value": 1}],
    [{"field": "x", "op": "in", "value": 3}],
    [{"field": "x", "op": "due_days_ago", "value": -1}],
    [{"field": "x", "op": "equals", "value": 1, "unit": "EUR"}],
    {"any": [], "all": []},
    "amount > 3",
])
def test_malformed_conditions_are_refused(bad):
    with pytest.raises(ConditionError):
        parse(bad)


def test_lookup_nested_paths():
    assert lookup({"payment": {"accounts_receivable": {"balance": 3}}},
                  "payment.accounts_receivable.balance") == 3
    assert lookup({"payment": None}, "payment.number") is None
