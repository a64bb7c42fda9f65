"""SMTP replies and library errors become transient or permanent gateway errors."""

from __future__ import annotations

import errno
import smtplib
import ssl

import pytest

from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways import smtp
from comms_pipeline.gateways.smtp import (
    RateLimiter,
    accepted,
    error_from_exception,
    reply_error,
    setup_error,
)


@pytest.mark.parametrize(("code", "kind"), [
    (421, TransientGatewayError), (450, TransientGatewayError), (451, TransientGatewayError),
    (452, TransientGatewayError), (550, PermanentGatewayError), (552, PermanentGatewayError),
    (554, PermanentGatewayError), (354, TransientGatewayError),
    (503, TransientGatewayError),  # bad sequence: our session state, not the message
])
def test_reply_codes(code, kind):
    err = reply_error(code, b"4.2.0  some   text\r\n")
    assert type(err) is kind
    assert (err.code, err.description) == (str(code), "4.2.0 some text")


@pytest.mark.parametrize(("exc", "kind", "code"), [
    (smtplib.SMTPRecipientsRefused({"a@b": (550, b"5.1.1 unknown")}), PermanentGatewayError,
     "550"),
    (smtplib.SMTPSenderRefused(451, b"4.3.0 later", "x@y"), TransientGatewayError, "451"),
    (smtplib.SMTPDataError(554, b"5.7.1 spam"), PermanentGatewayError, "554"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), TransientGatewayError,
     "DISCONNECTED"),
    (smtplib.SMTPNotSupportedError("no STARTTLS"), TransientGatewayError, "NOT_SUPPORTED"),
    (ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]"), TransientGatewayError, "TLS"),
    (TimeoutError("timed out"), TransientGatewayError, "TIMEOUT"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), TransientGatewayError,
     "ECONNREFUSED"),
    (OSError("no errno"), TransientGatewayError, "NETWORK"),
    (ValueError("odd"), TransientGatewayError, "SMTP"),
])
def test_library_errors(exc, kind, code):
    err = error_from_exception(exc)
    assert type(err) is kind and err.code == code and err.description


def test_authentication_failure_at_setup_is_transient():
    err = setup_error(smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"))
    assert type(err) is TransientGatewayError
    assert err.code == "535" and "bad credentials" in err.description


@pytest.mark.parametrize(("reply", "ref"), [
    (b"2.0.0 Ok: queued as 4Xyz12AbC", "4Xyz12AbC"),           # Postfix
    (b"OK id=1tYx7a-0004Kd-2Q", "1tYx7a-0004Kd-2Q"),           # Exim
    (b"2.0.0 OK  1700000000 x1-2.3 - gsmtp", "2.0.0 OK 1700000000 x1-2.3 - gsmtp"),
])
def test_queue_id_is_the_reference(reply, ref):
    result = accepted(250, reply)
    assert result.ref == ref
    assert result.reply.startswith("250 ") and len(result.reply) <= smtp.STATUS_MAX


def test_rate_limiter_spaces_sends(monkeypatch):
    clock = {"now": 100.0}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock["now"] += seconds

    monkeypatch.setattr(smtp.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(smtp.time, "sleep", sleep)
    limiter = RateLimiter(4.0)
    for _ in range(5):
        limiter.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25]  # the first goes at once, then every 1/4 s
    clock["now"] += 10  # idle time is not banked as a burst
    limiter.wait()
    limiter.wait()
    assert slept[-1] == 0.25 and len(slept) == 5


def test_unlimited_rate_never_sleeps(monkeypatch):
    monkeypatch.setattr(smtp.time, "sleep", lambda s: pytest.fail("slept"))
    limiter = RateLimiter(0)
    for _ in range(3):
        limiter.wait()


def test_end_of_data_is_dot_stuffed_and_terminated():
    assert smtp._end_of_data(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert smtp._end_of_data(b".x") == b"..x\r\n.\r\n"
    assert smtp._end_of_data(b"plain\r\n") == b"plain\r\n.\r\n"


@pytest.mark.parametrize("address", ["a@example.com", "o'brien+tag@mail.example.org",
                                     '"two words"@example.com', "user@[127.0.0.1]", ""])
def test_bracketed_address_matches_smtplib(address):
    assert smtp._bracketed(address) == smtplib.quoteaddr(address)
