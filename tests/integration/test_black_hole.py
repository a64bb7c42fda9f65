"""Hung peers cannot freeze a worker: every gateway, pointed at a loopback server that accepts
the connection and then never answers (or trickles bytes and never finishes), gives a
transient failure within its configured timeouts, and the entry waits for its retry."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from comms_pipeline.core.errors import GatewayError, TransientGatewayError
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.gateways.fcm import FcmPushSender
from comms_pipeline.gateways.http_sms import HttpSmsSender
from comms_pipeline.gateways.protocols import (
    EmailMessage,
    Letter,
    PushMessage,
    SmsMessage,
    WebhookMessage,
)
from comms_pipeline.gateways.s3 import S3DocumentStore
from comms_pipeline.gateways.sftp import SftpDocumentStore, SftpLetterDrop
from comms_pipeline.gateways.smpp import SmppSender
from comms_pipeline.gateways.smtp import SmtpEmailSender
from comms_pipeline.gateways.webhook import HttpWebhookSender
from comms_pipeline.queue.runner import Runner
from comms_pipeline.settings.gateways import (
    EmailGateway,
    LetterGateway,
    PushGateway,
    SmsGateway,
    StorageGateway,
    WebhookGateway,
)
from comms_pipeline.store.models import details_t
from tests.integration.details_factory import add_details
from tests.integration.documents_factory import add_entries
from tests.servers.blackhole import BlackHole

FAST = {"timeout": 0.5, "connect_timeout": 0.5, "total_timeout": 3.0}
#: A safety net against a hang (the test fails instead of freezing), not a timing check.
HANG = 60


def returns(call):  # type: ignore[no-untyped-def]
    """Run ``call`` in a thread; fail the test if it never comes back."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        pytest.fail("the gateway call hung on a peer that never answers")
    return box


def transient(box) -> TransientGatewayError:  # type: ignore[no-untyped-def]
    """The one transient error a call returned (as an outcome) or raised."""
    found = box.get("error") or box["result"]
    if isinstance(found, list):
        assert len(found) == 1
        found = found[0]
    assert isinstance(found, TransientGatewayError), found
    return found


def smtp_cfg(hole):  # type: ignore[no-untyped-def]
    return EmailGateway(backend="smtp", host=hole.host, port=hole.port, **FAST)


def email():  # type: ignore[no-untyped-def]
    return EmailMessage(1, "a@example.com", ("b@example.com",), b"Subject: x\r\n\r\nhi\r\n")


def test_smtp(black_hole):
    sender = SmtpEmailSender(smtp_cfg(black_hole))
    err = transient(returns(lambda: sender.send_many([email()])))
    sender.close()
    assert err.code == "TIMEOUT"
    assert black_hole.accepted >= 1


def test_smtp_trickling_banner_is_cut_by_the_total_timeout():
    with BlackHole(trickle=b"220-still here\r\n") as hole:
        sender = SmtpEmailSender(smtp_cfg(hole))
        err = transient(returns(lambda: sender.send_many([email()])))
        sender.close()
    assert err.code == "TIMEOUT"
    assert "more than 3 s" in err.description


def test_smpp(black_hole):
    sender = SmppSender(SmsGateway(backend="smpp", host=black_hole.host, port=black_hole.port,
                                   reconnect_attempts=1, **FAST))
    err = transient(returns(lambda: sender.send_many([SmsMessage(1, "+447700900001", "hi")])))
    sender.close()
    assert err.code.startswith("SMPP")


def test_http_sms(black_hole):
    sender = HttpSmsSender(SmsGateway(backend="http", url=black_hole.url, **FAST))
    err = transient(returns(lambda: sender.send_many([SmsMessage(1, "+447700900001", "hi")])))
    sender.close()
    assert err.code == "HTTP_TIMEOUT"


def test_fcm(black_hole):
    sender = FcmPushSender(PushGateway(backend="fcm", url=black_hole.url, access_token="t",
                                       **FAST))
    err = transient(returns(lambda: sender.send_many([PushMessage(1, "tok", "T", "hi")])))
    sender.close()
    assert err.code == "HTTP_TIMEOUT"


def test_webhook(black_hole):
    sender = HttpWebhookSender(WebhookGateway(backend="http", allow_loopback_targets=True,
                                              **FAST))
    message = WebhookMessage(1, black_hole.url + "/hook", "s" * 32, "evt-1", b"{}")
    err = transient(returns(lambda: sender.send_many([message])))
    sender.close()
    assert err.code == "HTTP_TIMEOUT"


def test_s3(black_hole):
    store = S3DocumentStore(StorageGateway(backend="s3", bucket="docs",
                                           endpoint_url=black_hole.url, access_key_id="k",
                                           secret_access_key="s", attempts=2, **FAST))
    err = transient(returns(lambda: store.put("a/b.eml", b"x", "message/rfc822", {})))
    store.close()
    assert err.code == "TIMEOUT"


@pytest.mark.parametrize("kind", ["letter", "storage"])
def test_sftp(black_hole, kind, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    common = dict(host=black_hole.host, port=black_hole.port, username="u", password="p",
                  known_hosts_file=str(known), **FAST)
    if kind == "letter":
        drop = SftpLetterDrop(LetterGateway(backend="sftp", **common))
        call = lambda: drop.deliver([Letter(1, "1.pdf", b"%PDF-")])  # noqa: E731
    else:
        drop = SftpDocumentStore(StorageGateway(backend="sftp", **common))
        call = lambda: drop.put("a/b.eml", b"x", "message/rfc822", {})  # noqa: E731
    box = returns(call)
    drop.close()
    err = transient(box)
    assert isinstance(err, GatewayError)


def pending(engine, ids):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(details_t.c.state, details_t.c.error_code,
                                   details_t.c.next_attempt_at, details_t.c.claimed_by)
                            .where(details_t.c.id.in_(ids))).all()


@pytest.mark.parametrize("media", ["email", "sms"])
def test_daemon_leaves_the_entry_pending_with_a_retry_time(db_url, make_engine_for,
                                                           black_hole, media):
    fast = {"TIMEOUT": "0.5", "CONNECT_TIMEOUT": "0.5", "TOTAL_TIMEOUT": "3"}
    if media == "email":
        env = {"COMMS_GATEWAYS_EMAIL_BACKEND": "smtp"}
    else:
        env = {"COMMS_GATEWAYS_SMS_BACKEND": "smpp", "COMMS_GATEWAYS_SMS_RECONNECT_ATTEMPTS": "1"}
    prefix = f"COMMS_GATEWAYS_{media.upper()}_"
    env.update({prefix + "HOST": black_hole.host, prefix + "PORT": str(black_hole.port),
                **{prefix + k: v for k, v in fast.items()}})
    settings, engine = make_engine_for(db_url, **env)
    if media == "email":
        ids = add_entries(engine, "email", 2)
        daemon = EmailDaemon(settings, engine)
    else:
        ids = add_details(engine, "sms", [("+447700900001", "hi"), ("+447700900002", "ho")])
        daemon = SmsDaemon(settings, engine)
    runner = Runner(settings, engine, daemon, once=True)
    box = returns(lambda: (runner.run_batch(), runner.handler.close()))
    assert "error" not in box, box.get("error")

    rows = pending(engine, ids)
    assert len(rows) == 2
    for state, code, retry_at, claimed_by in rows:
        assert state == "awaiting_send"
        assert code and (code == "TIMEOUT" or code.startswith("SMPP"))
        assert retry_at is not None and claimed_by is None


def test_sftp_trickling_peer_is_cut_by_the_total_timeout(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    with BlackHole(trickle=b"please wait\r\n") as hole:
        store = SftpDocumentStore(StorageGateway(
            backend="sftp", host=hole.host, port=hole.port, username="u", password="p",
            known_hosts_file=str(known), **FAST))
        box = returns(lambda: store.put("a/b.eml", b"x", "message/rfc822", {}))
        store.close()
    assert transient(box).code in ("TIMEOUT", "SSH")
