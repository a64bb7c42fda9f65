"""Standard Webhooks signing (sender side) and verification (receiver side)."""

from __future__ import annotations

import base64

import pytest

from comms_pipeline.gateways.webhook import (
    SignatureError,
    new_secret,
    sign,
    signed_headers,
    verify,
)

# The example of the Standard Webhooks specification: another implementation's answer.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_example():
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_headers_verify_on_the_receiving_side():
    secret = new_secret()
    body = b'{"type":"communication.created","data":{"id":1}}'
    headers = signed_headers(secret, "msg_comms_detail_1", body, timestamp=1_700_000_000)
    assert headers["webhook-id"] == "msg_comms_detail_1"
    assert headers["webhook-timestamp"] == "1700000000"
    upper = {k.upper(): v for k, v in headers.items()}  # header names in any case
    verify(secret, upper, body, now=1_700_000_100)


def test_new_secrets_are_whsec_base64_of_random_keys():
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 24


@pytest.mark.parametrize("change", ["body", "secret", "id", "timestamp"])
def test_any_change_breaks_the_signature(change):
    secret, body = new_secret(), b'{"a":1}'
    headers = signed_headers(secret, "msg_1", body, timestamp=1_700_000_000)
    if change == "body":
        body = b'{"a":2}'
    elif change == "secret":
        secret = new_secret()
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    else:
        headers["webhook-timestamp"] = "1700000001"
    with pytest.raises(SignatureError):
        verify(secret, headers, body, now=1_700_000_000)


def test_stale_or_future_timestamps_are_refused():
    secret, body = new_secret(), b"{}"
    headers = signed_headers(secret, "msg_1", body, timestamp=1_700_000_000)
    verify(secret, headers, body, now=1_700_000_000 + 299)
    for now in (1_700_000_000 + 301, 1_700_000_000 - 301):
        with pytest.raises(SignatureError, match="tolerance"):
            verify(secret, headers, body, now=now)


def test_one_valid_signature_among_several_is_enough():
    """During a secret rotation the sender lists a signature per secret."""
    old, new, body = new_secret(), new_secret(), b"{}"
    headers = signed_headers(old, "msg_1", body, timestamp=1_700_000_000)
    other = sign(new, "msg_1", 1_700_000_000, body)
    headers["webhook-signature"] = f"v1a,xyz {other} {headers['webhook-signature']}"
    verify(old, headers, body, now=1_700_000_000)
    verify(new, headers, body, now=1_700_000_000)


def test_missing_headers_and_bad_secrets_are_clear_errors():
    with pytest.raises(SignatureError, match="missing"):
        verify(new_secret(), {"webhook-id": "msg_1"}, b"{}")
    with pytest.raises(SignatureError, match="whsec_"):
        sign("whsec_not base64!", "msg_1", 1, b"{}")
