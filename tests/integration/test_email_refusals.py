"""Refused transactions on a kept-open SMTP connection never poison the next message.

The loopback server keeps a refused transaction's sender until RSET, as Postfix does, and
answers a MAIL before that ``503 5.5.1 Error: nested MAIL command``. One test also runs
Postfix's own ``smtp-sink`` (Debian's ``postfix`` package, installed by ``.ci/services``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.gateways.smtp import SmtpLane
from comms_pipeline.store.models import details_t
from tests.conftest import require_service
from tests.integration.documents_factory import add_entries, details
from tests.integration.test_email_daemon import run_once
from tests.servers.smtp import RecordingHandler, SmtpServer
from tests.servers.smtp_sink import SmtpSink, smtp_sink_path


def _due_now(engine, ids) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id.in_(ids))
                     .values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def _kind(i: int) -> str:
    return ("good", "soft-data", "good", "hard-data", "good", "soft-rcpt", "good",
            "hard-rcpt")[i % 8]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_refusals_mixed_with_good_messages_on_one_connection(db_url, smtp_server,
                                                             make_engine_for, pipelining,
                                                             monkeypatch):
    smtp_server.handler.pipelining = pipelining
    pipelined = _count_pipelined(monkeypatch)
    settings, engine = make_engine_for(db_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                       COMMS_DAEMONS_BATCH_SIZE="100", **smtp_server.env())
    handler = smtp_server.handler
    ids = add_entries(engine, "email", 40, address=lambda i: f"{_kind(i)}-{i}@example.com")
    kinds = dict(zip(ids, (_kind(i) for i in range(40)), strict=True))
    for i in range(40):
        to = f"{_kind(i)}-{i}@example.com"
        reply = {"soft-data": "451 4.3.0 Temporary lookup failure",
                 "hard-data": "554 5.7.1 Message refused as spam",
                 "soft-rcpt": "450 4.2.0 Mailbox busy",
                 "hard-rcpt": "550 5.1.1 No such user here"}.get(_kind(i))
        if _kind(i).endswith("-data"):
            handler.data_reply_for[to] = reply
        elif reply:
            handler.rcpt_replies[to] = reply

    run_once(settings, engine)

    rows = details(engine, ids)
    by_kind: dict[str, set] = {}
    for detail_id, kind in kinds.items():
        by_kind.setdefault(kind, set()).add(
            (rows[detail_id]["state"], rows[detail_id]["error_code"]))
    assert by_kind == {"good": {("completed", None)},
                       "soft-data": {("awaiting_send", "451")},
                       "hard-data": {("rejected", "554")},
                       "soft-rcpt": {("awaiting_send", "450")},
                       "hard-rcpt": {("rejected", "550")}}
    assert handler.nested_mail == 0  # every refusal ended with RSET before the next MAIL
    assert len({m.peer for m in smtp_server.messages}) == 1  # one kept-open connection

    # The soft refusals clear up and their backoff passes: each goes through, once.
    handler.data_reply_for.clear()
    handler.rcpt_replies.clear()
    soft = [i for i, k in kinds.items() if k.startswith("soft")]
    _due_now(engine, soft)
    run_once(settings, engine)
    rows = details(engine, ids)
    assert {rows[i]["state"] for i in soft} == {"completed"}
    counts = Counter(handler.message_ids())
    assert len(counts) == 30 and set(counts.values()) == {1}  # 20 good + 10 soft, none lost
    assert bool(pipelined) == pipelining


def _count_pipelined(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Which path the gateway took: pipelined transactions are counted."""
    calls: list[int] = []
    original = SmtpLane._pipelined

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SmtpLane, "_pipelined", counting)
    return calls


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_a_503_is_out_of_step_never_a_verdict_on_the_message(sqlite_url, smtp_server,
                                                            make_engine_for, pipelining):
    smtp_server.handler.pipelining = pipelining
    settings, engine = make_engine_for(sqlite_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                       **smtp_server.env())
    ids = add_entries(engine, "email", 3)
    # Once: sent again on a fresh session straight away. Twice in a row: kept for a retry.
    smtp_server.handler.mail_replies.extend([
        "503 5.5.1 Error: nested MAIL command", None, None,
        "503 5.5.1 Error: nested MAIL command", "503 5.5.1 Error: nested MAIL command"])
    run_once(settings, engine)
    rows = [details(engine, ids)[i] for i in ids]
    assert [(r["state"], r["error_code"]) for r in rows] == [
        ("completed", None), ("completed", None), ("awaiting_send", "503")]
    assert rows[2]["next_attempt_at"] > utcnow()
    _due_now(engine, ids)
    run_once(settings, engine)
    assert details(engine, ids)[ids[2]]["state"] == "completed"
    assert len(smtp_server.messages) == 3


def test_postfix_smtp_sink_refusing_then_taking(db_url, make_engine_for, monkeypatch):
    """Postfix's smtp-sink refusing every end-of-DATA with 450, then taking everything."""
    require_service(smtp_sink_path() is not None,
                    "smtp-sink (Debian package postfix, see .ci/services)")
    refusing = SmtpSink("-r", ".")
    try:
        settings, engine = make_engine_for(db_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                           **refusing.env())
        ids = add_entries(engine, "email", 12)
        run_once(settings, engine)
    finally:
        refusing.stop()
    rows = details(engine, ids)
    assert {(r["state"], r["error_code"], r["attempts"]) for r in rows.values()} == {
        ("awaiting_send", "450", 1)}  # soft: every one kept for a retry, none rejected

    taking = SmtpSink()  # offers PIPELINING (the refusing one does not: -r implies -p)
    pipelined = _count_pipelined(monkeypatch)
    try:
        settings, engine = make_engine_for(db_url, **taking.env())
        _due_now(engine, ids)
        run_once(settings, engine)
    finally:
        taking.stop()
    assert len(pipelined) == 12
    rows = details(engine, ids)
    assert {(r["state"], r["error_code"], r["attempts"]) for r in rows.values()} == {
        ("completed", None, 2)}
    assert {r["gateway_status"][:3] for r in rows.values()} == {"250"}


def test_pipelined_messages_arrive_intact(sqlite_url, smtp_server, make_engine_for, monkeypatch):
    """Dot-stuffing and the envelope are right on the pipelined path."""
    from tests.integration.documents_factory import make_eml

    smtp_server.handler.pipelining = True
    pipelined = _count_pipelined(monkeypatch)
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env())
    body = "line one\n.starts with a dot\n..two dots\n."
    ids = add_entries(engine, "email", 3, content=lambda i, to: make_eml(to, body=body))
    run_once(settings, engine)
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    assert len(pipelined) == 3
    for received in smtp_server.messages:
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        text = parsed.get_body(("plain",)).get_content()
        assert text.splitlines() == body.splitlines()
        assert received.rcpt_tos[0].endswith("@example.com")


def test_a_run_of_messages_costs_one_write_each_and_a_refusal_poisons_none(
        sqlite_url, smtp_server, make_engine_for, monkeypatch):
    """On a pipelining server, each message's content goes out in one write with RSET and the
    next message's envelope (RFC 2920 section 3.1), so a run of messages costs one write and
    one wait each; a refusal at the end of DATA in the middle still never meets the next MAIL
    (the strict server counts a MAIL before RSET as nested)."""
    from comms_pipeline.gateways.protocols import EmailMessage, SendResult
    from comms_pipeline.gateways.smtp import SmtpEmailSender, _Session
    from tests.integration.documents_factory import make_eml

    handler = smtp_server.handler
    handler.pipelining = True
    handler.data_reply_for["user3@example.com"] = "554 5.7.1 Message refused as spam"
    handler.data_reply_for["user4@example.com"] = "451 4.3.0 Try again later"
    writes: list[bytes] = []
    original = _Session.send

    def counting(self, s):  # type: ignore[no-untyped-def]
        writes.append(s if isinstance(s, bytes) else s.encode())
        return original(self, s)

    monkeypatch.setattr(_Session, "send", counting)
    settings, _ = make_engine_for(sqlite_url, **smtp_server.env())
    sender = SmtpEmailSender(settings.gateways.email)
    messages = [EmailMessage(i, "no-reply@example.com", (f"user{i}@example.com",),
                             make_eml(f"user{i}@example.com", body=f"message {i}"))
                for i in range(10)]
    try:
        sent = sender.send_many(messages)
        wire = list(writes)
    finally:
        sender.close()
    results = [(r.ref is not None) if isinstance(r, SendResult) else r.code for r in sent]
    assert results == [True, True, True, "554", "451", True, True, True, True, True]
    # EHLO, the first envelope, then one write per message: its content, and after it RSET
    # and the next envelope (none after the last message).
    assert wire[0].lower().startswith(b"ehlo") and wire[1].startswith(b"MAIL FROM")
    contents = wire[2:]
    assert len(contents) == 10
    assert all(w.count(b"\r\n.\r\nRSET\r\nMAIL FROM:") == 1 for w in contents[:9])
    assert contents[9].endswith(b"\r\n.\r\n") and b"MAIL FROM" not in contents[9]
    assert handler.nested_mail == 0
    assert handler.resets == 9
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"user{i}@example.com" for i in (0, 1, 2, 5, 6, 7, 8, 9)]
    for received, i in zip(smtp_server.messages, (0, 1, 2, 5, 6, 7, 8, 9), strict=True):
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert parsed.get_body(("plain",)).get_content().strip() == f"message {i}"
    assert len({m.peer for m in smtp_server.messages}) == 1  # one kept-open connection


def _messages(n: int):  # type: ignore[no-untyped-def]
    from comms_pipeline.gateways.protocols import EmailMessage
    from tests.integration.documents_factory import make_eml

    return [EmailMessage(i, "no-reply@example.com", (f"user{i}@example.com",),
                         make_eml(f"user{i}@example.com", body=f"message {i}"))
            for i in range(n)]


def test_lanes_look_ahead_yet_the_last_messages_spread_over_every_lane(
        sqlite_url, make_engine_for):
    """With four lanes, a lane sends its next message's envelope ahead only while a message
    per lane is left: four messages go out on four connections, forty arrive once each."""
    from comms_pipeline.gateways.protocols import SendResult
    from comms_pipeline.gateways.smtp import SmtpEmailSender

    class Slow(RecordingHandler):
        """Takes a while over each message, so that every lane is at work at once."""

        delay = 0.3

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            await asyncio.sleep(self.delay)
            return await super().handle_DATA(server, session, envelope)

    server = SmtpServer(Slow()).start()
    server.handler.pipelining = True
    settings, _ = make_engine_for(sqlite_url, COMMS_GATEWAYS_EMAIL_CONNECTIONS="4",
                                  **server.env())
    sender = SmtpEmailSender(settings.gateways.email)
    try:
        assert all(isinstance(r, SendResult) for r in sender.send_many(_messages(4)))
        assert len({m.peer for m in server.messages}) == 4  # none kept a second one back
        server.handler.delay = 0  # type: ignore[attr-defined]
        results = sender.send_many(_messages(40))
        assert all(isinstance(r, SendResult) for r in results), results
    finally:
        sender.close()
        server.stop()
    counts = Counter(m.rcpt_tos[0] for m in server.messages[4:])
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert server.handler.nested_mail == 0


def test_a_message_that_cannot_be_signed_after_its_envelope_went_ahead(
        sqlite_url, smtp_server, make_engine_for):
    """The envelope of the next message is open on the server when its DKIM signing fails:
    the lane hangs up on it (nothing is taken), and the message after goes out on a fresh
    session."""
    from comms_pipeline.core.errors import TransientGatewayError
    from comms_pipeline.gateways.protocols import SendResult
    from comms_pipeline.gateways.smtp import SmtpEmailSender

    class Signer:
        def sign(self, data: bytes) -> bytes:
            if b"message 1" in data:
                raise TransientGatewayError("DKIM", "signing failed: test")
            return data

    smtp_server.handler.pipelining = True
    settings, _ = make_engine_for(sqlite_url, **smtp_server.env())
    sender = SmtpEmailSender(settings.gateways.email)
    sender.lanes[0].signer = Signer()  # type: ignore[assignment]
    messages = _messages(3)
    try:
        results = sender.send_many(messages[:2])  # the unsignable one is the run's last
        assert sender.lanes[0]._smtp is None  # hung up, not left open in DATA
        results += sender.send_many(messages[2:])
    finally:
        sender.close()
    assert isinstance(results[0], SendResult) and isinstance(results[2], SendResult)
    assert isinstance(results[1], TransientGatewayError) and results[1].code == "DKIM"
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "user0@example.com", "user2@example.com"]
    assert len({m.peer for m in smtp_server.messages}) == 2  # hung up on the open envelope


def test_a_real_postfix_that_forbids_improper_pipelining_takes_the_look_ahead(sqlite_url):
    """Debian's Postfix smtpd, with the strictest pipelining checks (Postfix 3.9's default
    ``smtpd_forbid_unauth_pipelining = yes`` and ``reject_unauth_pipelining``), a recipient
    refused at RCPT and a message refused at the end of DATA by a body check: every other
    message is queued, and Postfix logs no pipelining violation."""
    from comms_pipeline.gateways.protocols import EmailMessage, SendResult
    from comms_pipeline.gateways.smtp import SmtpEmailSender
    from comms_pipeline.settings.config import load_settings
    from tests.integration.documents_factory import make_eml
    from tests.servers.postfix import PostfixInstance, postfix_usable
    from tests.servers.smtp import free_port

    require_service(postfix_usable(), "Postfix (Debian package postfix, run as root)")
    require_service(smtp_sink_path() is not None, "smtp-sink (Debian package postfix)")
    sink = SmtpSink()
    postfix = PostfixInstance("example.com", sink.port, "bounces.example.test", free_port())
    with open(postfix.conf / "main.cf", "a") as cf:
        cf.write("smtpd_forbid_unauth_pipelining = yes\n"
                 "smtpd_data_restrictions = reject_unauth_pipelining\n"
                 "smtpd_recipient_restrictions = check_recipient_access "
                 "inline:{ user2@example.com=REJECT }, permit_mynetworks, reject\n"
                 f"body_checks = regexp:{postfix.dir}/body_checks\n")
    (postfix.dir / "body_checks").write_text("/^message 4$/ REJECT looks like spam\n")
    postfix.start()
    try:
        settings = load_settings(environ={
            "COMMS_DATABASE_URL": sqlite_url, "COMMS_GATEWAYS_EMAIL_BACKEND": "smtp",
            "COMMS_GATEWAYS_EMAIL_HOST": "127.0.0.1",
            "COMMS_GATEWAYS_EMAIL_PORT": str(postfix.port)})
        sender = SmtpEmailSender(settings.gateways.email)
        try:
            results = sender.send_many([
                EmailMessage(i, "no-reply@example.com", (f"user{i}@example.com",),
                             make_eml(f"user{i}@example.com", body=f"message {i}"))
                for i in range(8)])
        finally:
            sender.close()
        log = postfix.log()
    finally:
        postfix.stop()
        sink.stop()
    verdicts = [r.reply[:3] if isinstance(r, SendResult) else r.code for r in results]
    assert verdicts == ["250", "250", "554", "250", "550", "250", "250", "250"]
    assert "pipelining" not in log.lower() and "synchronization" not in log.lower()
