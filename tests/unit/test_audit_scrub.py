"""The audit log keeps no secret: fields named for one become fingerprints."""

from __future__ import annotations

from datetime import datetime

from comms_pipeline.pipeline import audit


def test_secrets_are_fingerprinted_and_values_made_plain():
    change = audit.scrub({"webhook_secret": {"before": None, "after": "x"},
                          "password": "p", "nested": {"api_key": "k", "ok": 1}})
    assert change == {"webhook_secret": {"before": None, "after": audit.fingerprint("x")},
                      "password": audit.fingerprint("p"),
                      "nested": {"api_key": audit.fingerprint("k"), "ok": 1}}
    assert audit.changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {
        "b": {"before": 2, "after": 3}}
    assert audit.scrub({"at": datetime(2026, 12, 2, 4, 0)}) == {"at": "2026-12-02T04:00:00"}


def test_the_actor_of_a_block_and_outside_it():
    assert audit.current_actor().startswith(("process:", "cli:"))
    with audit.acting_as("api-key:7:bot"):
        assert audit.current_actor() == "api-key:7:bot"
