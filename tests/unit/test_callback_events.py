"""Which changes are callback events, which names are events, and what an event may carry."""

from __future__ import annotations

import pytest

from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.daemons.callbacks import retried
from comms_pipeline.queue.callbacks import (
    EVENTS,
    UnknownEvent,
    detail_event,
    header_event,
    parse_events,
    scrub,
)


def test_detail_moves_and_their_events():
    assert detail_event(None, "awaiting_merge") == "accepted"
    assert detail_event(None, "rejected") == "rejected"
    assert detail_event("awaiting_merge", "awaiting_send") is None  # still Pending
    assert detail_event("rejected", "awaiting_send") == "accepted"  # an operator's retry
    assert detail_event("awaiting_send", "completed") == "completed"
    assert detail_event("completed", "rejected") == "rejected"  # a bounce, a failed receipt
    assert detail_event("awaiting_external", "completed_removed") == "removed"
    assert detail_event("awaiting_send", "expired") == "expired"


def test_header_moves_and_their_events():
    assert header_event("awaiting_processing", "not_sent") == "rejected"
    assert header_event("awaiting_processing", "opted_out") == "rejected"
    assert header_event("awaiting_processing", "processed") is None
    assert header_event(None, "awaiting_processing") is None


def test_event_names():
    assert parse_events("all") == list(EVENTS)
    assert parse_events(" Rejected, accepted ,rejected") == ["accepted", "rejected"]
    with pytest.raises(UnknownEvent, match="sent"):
        parse_events(["accepted", "sent"])
    with pytest.raises(UnknownEvent):
        parse_events("")


def test_extra_fields_carry_no_address():
    out = scrub({"status": "5.1.1", "diagnostic": "550 5.1.1 <bob@example.com>: unknown",
                 "msisdn": "call +357 99 123456", "nested": {"a": 1}, "n": 3})
    assert out == {"status": "5.1.1", "diagnostic": "550 5.1.1 <[address]>: unknown",
                   "msisdn": "call [address]", "n": 3}
    assert scrub(None) is None and scrub({"x": {"y": 1}}) is None


def test_what_is_retried():
    assert retried(TransientGatewayError("HTTP 503", "busy"))
    assert retried(TransientGatewayError("HTTP 429", "slow down"))
    assert retried(TransientGatewayError("HTTP_TIMEOUT", "no answer"))
    assert retried(TransientGatewayError("HTTP_ERROR", "ConnectError"))
    assert not retried(TransientGatewayError("HTTP 404", "no such path"))
    assert not retried(PermanentGatewayError("TARGET_REFUSED", "private"))
