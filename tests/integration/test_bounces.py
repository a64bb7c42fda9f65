"""The bounce receiver against real SMTP on loopback: DSNs and ARF reports sent with smtplib,
after real sends by the Email daemon (aiosmtpd as the outgoing server)."""

from __future__ import annotations

import smtplib
from email.utils import make_msgid

import pytest
from sqlalchemy import update

from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.pipeline.feedback import REPORTS
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.bounce_support import (
    CORPUS,
    Receiver,
    bounce_env,
    history,
    postfix_dsn,
    reports,
)
from tests.integration.documents_factory import add_entries, details


@pytest.fixture
def bounced(db_url, smtp_server, make_engine_for):  # type: ignore[no-untyped-def]
    settings, engine = make_engine_for(db_url, **smtp_server.env(**bounce_env()))
    receiver = Receiver(settings, engine).start()
    yield settings, engine, receiver
    receiver.stop()


def _send(settings, engine, count, **kw):  # type: ignore[no-untyped-def]
    ids = add_entries(engine, "email", count, **kw)
    Runner(settings, engine, EmailDaemon(settings, engine), once=True).run()
    return ids


def _completed(engine, ids):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:  # as the Email daemon leaves them (for reports alone)
        conn.execute(update(details_t).where(details_t.c.id.in_(ids)).values(state="completed"))


def test_sent_message_bounces_back_and_its_entry_is_rejected_5_1_1(bounced, smtp_server):
    settings, engine, receiver = bounced
    ids = _send(settings, engine, 2, address=lambda i: f"user{i}@example.org")
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    verp = VerpAddresses.from_settings(settings)
    sent = {verp.detail_id(m.mail_from): m for m in smtp_server.messages}
    assert sorted(sent) == sorted(ids)  # every envelope sender is its entry's signed VERP
    first = sent[ids[0]]
    assert receiver.send(first.mail_from, postfix_dsn(first.mail_from, first.message_id,
                                                      first.rcpt_tos[0])) == {}

    row, other = details(engine, ids)[ids[0]], details(engine, ids)[ids[1]]
    assert (row["state"], row["error_code"]) == ("rejected", "5.1.1")
    assert "550 5.1.1 <user0@example.org>: Recipient address rejected: User unknown" \
        in row["error_description"]
    assert other["state"] == "completed"
    assert history(engine, ids[0])[-1] == ("completed", "rejected", "bounce:smtp", "5.1.1")
    [report] = reports(engine)
    assert (report["detail_id"], report["kind"], report["status"], report["outcome"]) == \
        (ids[0], "hard_bounce", "5.1.1", "rejected")
    assert report["message_id"] == first.message_id and report["raw"] is None


def test_rcpt_outside_the_bounce_domain_is_refused_550(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url, **bounce_env())  # SMTP alone: one database
    receiver = Receiver(settings, engine).start()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        receiver.send("someone@example.com", b"Subject: relay me\r\n\r\nhi")
    receiver.stop()
    code, text = err.value.recipients["someone@example.com"]
    assert code == 550 and b"5.7.1" in text


def test_no_bounce_domain_means_no_receiver():
    from comms_pipeline.core.errors import ConfigError
    from comms_pipeline.daemons.bounces import BounceDaemon
    from tests.conftest import load_test_settings

    with pytest.raises(ConfigError, match=r"set \[bounces\] domain"):
        BounceDaemon(load_test_settings(), None)  # type: ignore[arg-type]


def test_forged_verp_is_kept_unmatched_and_the_signed_message_id_matches(bounced):
    settings, engine, receiver = bounced
    ids = add_entries(engine, "email", 1)
    _completed(engine, ids)
    forged = f"bounces+{ids[0]}.000000000000@bounces.example.com"
    receiver.send(forged, postfix_dsn(forged, make_msgid(), "user0@example.com"))
    assert details(engine, ids)[ids[0]]["state"] == "completed"
    [report] = reports(engine)
    assert (report["detail_id"], report["outcome"]) == (None, "unmatched")
    assert report["raw"] and b"User unknown" in report["raw"]

    # The same report without VERP (a DSN forwarded by hand to postmaster@ the bounce
    # domain) is matched by the signed id in the original's Message-ID.
    verp = VerpAddresses.from_settings(settings)
    message_id = make_msgid(idstring=verp.message_id_tag(ids[0]), domain="comms.example.com")
    receiver.send("postmaster@bounces.example.com",
                  postfix_dsn("no-reply@example.com", message_id, "user0@example.com"))
    row = details(engine, ids)[ids[0]]
    assert (row["state"], row["error_code"]) == ("rejected", "5.1.1")


def test_soft_bounce_complaint_and_malformed_are_kept_without_a_state_change(bounced):
    settings, engine, receiver = bounced
    ids = add_entries(engine, "email", 2)
    _completed(engine, ids)
    verp = VerpAddresses.from_settings(settings)
    receiver.send(verp.address(ids[0]), (CORPUS / "gmail_over_quota_delayed.eml").read_bytes())
    receiver.send(verp.address(ids[1]), (CORPUS / "yahoo_arf_abuse.eml").read_bytes())
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    got = [(r["detail_id"], r["kind"], r["status"], r["outcome"]) for r in reports(engine)]
    assert got == [(ids[0], "soft_bounce", "4.2.2", "recorded"),
                   (ids[1], "complaint", None, "recorded")]

    # Malformed reports are kept and counted, and the receiver goes on.
    before = REPORTS.labels("smtp", "unknown", "malformed")._value.get()
    for name in ("qmail_plain_text_bounce.eml", "truncated_binary_garbage.eml"):
        assert receiver.send(verp.address(ids[0]), (CORPUS / name).read_bytes()) == {}
    receiver.send(verp.address(ids[0]), b"\x00\x01\x02 garbage\r\n")
    assert REPORTS.labels("smtp", "unknown", "malformed")._value.get() - before == 3
    kept = reports(engine)[2:]
    assert [r["outcome"] for r in kept] == ["malformed"] * 3
    assert all(r["raw"] and r["problem"] for r in kept)
    # Still serving: a real bounce after the junk is matched and acted on.
    receiver.send(verp.address(ids[0]), postfix_dsn(verp.address(ids[0]), make_msgid(),
                                                    "user0@example.com"))
    assert details(engine, ids)[ids[0]]["state"] == "rejected"


def test_no_bounce_domain_means_mail_from_stays_the_configured_sender(sqlite_url, smtp_server,
                                                                      make_engine_for):
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env())
    _send(settings, engine, 1)
    assert [m.mail_from for m in smtp_server.messages] == ["no-reply@example.com"]


def test_a_bounce_back_before_its_batch_finished_is_answered_451_and_kept_by_the_mta(bounced):
    settings, engine, receiver = bounced
    ids = add_entries(engine, "email", 1)  # still Awaiting Send: its sending batch is open
    verp = VerpAddresses.from_settings(settings)
    dsn = postfix_dsn(verp.address(ids[0]), make_msgid(), "user0@example.com")
    with pytest.raises(smtplib.SMTPDataError) as err:
        receiver.send(verp.address(ids[0]), dsn)
    assert err.value.smtp_code == 451
    assert reports(engine) == [] and details(engine, ids)[ids[0]]["state"] == "awaiting_send"
    _completed(engine, ids)  # the batch finishes; the MTA sends the DSN again
    receiver.send(verp.address(ids[0]), dsn)
    assert details(engine, ids)[ids[0]]["error_code"] == "5.1.1"


def test_with_a_bounce_domain_the_merged_message_id_names_its_entry(sqlite_url,
                                                                   make_engine_for):
    from tests.integration.test_email_monitor import details as all_details
    from tests.integration.test_email_monitor import documents, parse, run, seed

    settings, engine = make_engine_for(sqlite_url, **bounce_env())
    seed(engine)
    from comms_pipeline.pipeline.triggers import trigger

    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-1", "amount": "€1.00"}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    [detail_id] = all_details(engine)
    message_id = parse(documents(engine)[detail_id].content)["Message-ID"]
    assert message_id.endswith(f"@{settings.email.message_id_domain}>")
    assert VerpAddresses.from_settings(settings).detail_id_from_message_id(message_id) \
        == detail_id


def test_the_configured_soft_bounce_threshold_applies_to_what_the_receiver_takes(
        sqlite_url, smtp_server, make_engine_for):
    """``[suppressions] soft_bounce_threshold`` reaches the receiver: with 2, the second
    soft bounce of an address suppresses it (the default would need 3)."""
    from comms_pipeline.core.clock import utcnow
    from comms_pipeline.pipeline import suppressions as sup

    settings, engine = make_engine_for(sqlite_url, **smtp_server.env(**bounce_env(
        COMMS_SUPPRESSIONS_SOFT_BOUNCE_THRESHOLD="2")))
    receiver = Receiver(settings, engine).start()
    try:
        ids = add_entries(engine, "email", 2, address=lambda i: "full@example.org")
        _completed(engine, ids)
        verp = VerpAddresses.from_settings(settings)
        soft = (CORPUS / "gmail_over_quota_delayed.eml").read_bytes()
        receiver.send(verp.address(ids[0]), soft)
        with engine.connect() as conn:
            assert sup.is_suppressed(conn, "full@example.org", "email", "service",
                                     utcnow()) is None
        receiver.send(verp.address(ids[1]), soft)
        with engine.connect() as conn:
            found = sup.is_suppressed(conn, "full@example.org", "email", "service", utcnow())
        assert found is not None and found.reason == "soft_bounce_threshold"
    finally:
        receiver.stop()
