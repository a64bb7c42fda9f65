"""The Email Monitor job on SQLite and PostgreSQL: triggers -> monitor -> merged .eml files."""

from __future__ import annotations

import email
import hashlib
import json
from email import policy
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.jobs.email_monitor import UNSUBSCRIBE_ACTION, EmailMonitorJob
from comms_pipeline.pipeline.admin_records import (
    AddressSpec,
    add_contact,
    add_external_system,
    save_template,
    set_media,
)
from comms_pipeline.pipeline.links import verify_link
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.claims import Claimer
from comms_pipeline.queue.runner import Runner
from comms_pipeline.rendering.mime import parse_mailbox
from comms_pipeline.runtime.registry import build_job
from comms_pipeline.store.db import make_engine
from comms_pipeline.store.models import Contact, details_t, documents_t, transitions_t
from tests.conftest import make_settings

OFFER_EN = ("<h1>Hello #contact_information.first_name</h1>"
            "<p>Our <b>#offer.name</b> costs #offer.price.</p>"
            '<p>See <a href="https://shop.example/offers/#offer.code">the offer</a>.</p>'
            "<p>#dynamic_link.opt_out_direct_marketing</p>")
OFFER_EL = ("<h1>Γεια σας #contact_information.first_name</h1>"
            "<p>Η προσφορά <b>#offer.name</b> κοστίζει #offer.price.</p>")


def seed(engine) -> None:
    with engine.begin() as conn:
        add_contact(conn, "C-EN", "Jane Smith", language="en", direct_marketing=True,
                    addresses=[AddressSpec("email", "jane@example.com", is_primary=True)])
        add_contact(conn, "C-EL", "Γιώργος Παπαδόπουλος", language="el", direct_marketing=True,
                    addresses=[AddressSpec("email", "giorgos@example.gr", is_primary=True)])
        save_template(conn, TemplateSpec(
            "OFFER", "Monthly offer", "email", classification="marketing",
            referring_entities=["offer"], variants=[
                VariantSpec("en", "#offer.name for you, #contact_information.first_name",
                            OFFER_EN),
                VariantSpec("el", "Προσφορά: #offer.name", OFFER_EL)]))
        save_template(conn, TemplateSpec(
            "RECEIPT", "Payment receipt", "email", classification="financial",
            referring_entities=["payment"], variants=[VariantSpec(
                "en", "Receipt #payment.number",
                "<p>We received <b>#payment.amount</b>.</p>",
                "We received #payment.amount (receipt #payment.number).")]))


def run(settings, engine, name: str) -> int:
    return Runner(settings, engine, build_job(name, settings, engine), once=True).run()


def details(engine) -> dict[int, object]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(details_t).order_by(details_t.c.id))}


def documents(engine) -> dict[int, object]:
    with engine.connect() as conn:
        return {r.detail_id: r for r in conn.execute(select(documents_t))}


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


def test_email_details_become_messages(settings, engine) -> None:
    seed(engine)
    offer = {"offer": {"name": "Fibre 500", "price": "€29.90", "code": "F500"}}
    trigger(engine, contact_ref="C-EN", template_code="OFFER", entities=offer)
    trigger(engine, contact_ref="C-EL", template_code="OFFER", entities=offer)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-77", "amount": "€12.00"}})
    assert run(settings, engine, "monitor") == 3
    assert {d.state for d in details(engine).values()} == {"awaiting_merge"}
    assert run(settings, engine, "email-monitor") == 3

    rows = details(engine)
    docs = documents(engine)
    assert {d.state for d in rows.values()} == {"awaiting_send"}
    assert set(docs) == set(rows)
    offers = {d.address: d for d in rows.values() if d.classification == "marketing"}

    en = offers["jane@example.com"]
    doc = docs[en.id]
    assert (doc.kind, doc.content_type) == ("email", "message/rfc822")
    assert doc.size == len(doc.content) and doc.sha256 == hashlib.sha256(doc.content).hexdigest()
    msg = parse(doc.content)
    assert en.subject == msg["Subject"] == "Fibre 500 for you, Jane"
    assert msg.get_content_type() == "multipart/alternative"
    assert str(msg["To"]) == "Jane Smith <jane@example.com>"
    assert str(msg["From"]) == str(parse_mailbox(settings.email.from_address))
    assert msg["Message-ID"].endswith(f"@{settings.email.message_id_domain}>")
    plain, html = msg.get_payload()
    text = plain.get_content()
    assert "Our Fibre 500 costs €29.90." in text
    assert "the offer (https://shop.example/offers/F500)" in text  # derived from the HTML
    assert "<b>Fibre 500</b>" in html.get_content()
    assert en.body == text.strip().replace("\r\n", "\n")
    unsubscribe = msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = unsubscribe.strip("<>")
    assert url.startswith(settings.email.unsubscribe_url + "?t=")
    payload = verify_link(parse_qs(urlsplit(url).query)["t"][0], UNSUBSCRIBE_ACTION, settings)
    assert (payload.contact_ref, payload.subject) == ("C-EN", str(en.id))

    el = offers["giorgos@example.gr"]
    msg = parse(docs[el.id].content)
    assert el.language == "el"
    assert msg["Subject"] == el.subject == "Προσφορά: Fibre 500"
    assert msg["To"].addresses[0].display_name == "Γιώργος Παπαδόπουλος"
    assert "Η προσφορά Fibre 500 κοστίζει €29.90." in msg.get_payload()[0].get_content()
    assert msg["List-Unsubscribe"] is not None

    receipt = next(d for d in rows.values() if d.subject == "Receipt P-77")
    msg = parse(docs[receipt.id].content)
    assert msg["List-Unsubscribe"] is None  # financial, not marketing
    assert msg.get_payload()[0].get_content().strip() == "We received €12.00 (receipt P-77)."

    with engine.connect() as conn:
        moves = conn.execute(select(transitions_t.c.row_id, transitions_t.c.from_state,
                                    transitions_t.c.to_state)
                             .where(transitions_t.c.kind == "detail",
                                    transitions_t.c.to_state == "awaiting_send")).all()
    assert sorted(moves) == sorted((i, "awaiting_merge", "awaiting_send") for i in rows)


def test_bad_details_are_rejected_and_the_rest_carry_on(settings, engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        save_template(conn, TemplateSpec("BROKEN", "Broken", "email", variants=[
            VariantSpec("en", "Broken", "<p>#if($x</p>")]))
        save_template(conn, TemplateSpec("LONG", "Long", "email", variants=[
            VariantSpec("en", "Long", "<p>" + "word " * 300 + "</p>")]))
        add_external_system(conn, "PORTAL", "Customer portal")
        save_template(conn, TemplateSpec("INBOX", "Portal inbox", "email",
                                         external_system="PORTAL", variants=[
                                             VariantSpec("en", "Hi", "<p>Hi</p>")]))
    receipt = {"payment": {"number": "P-1", "amount": "€1.00"}}
    for code in ("BROKEN", "LONG", "RECEIPT", "INBOX"):
        trigger(engine, contact_ref="C-EN", template_code=code, entities=receipt)
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    rows = list(details(engine).values())
    states = {(r.error_code, r.state) for r in rows}
    assert ("TEMPLATE_ERROR", "rejected") in states
    assert ("TOO_LONG", "rejected") in states
    assert (None, "awaiting_send") in states
    assert (None, "awaiting_external") in states
    for r in rows:
        if r.state == "rejected":
            assert r.error_description and r.completed_at is not None
        if r.error_code == "TEMPLATE_ERROR":
            assert "BROKEN" in r.error_description and "line 1" in r.error_description
        if r.error_code == "TOO_LONG":
            assert "limit is 1000" in r.error_description
    docs = documents(engine)
    assert {d for d in docs} == {r.id for r in rows if r.state != "rejected"}


def test_media_limit_applies_to_the_text_alternative(settings, engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        set_media(conn, "email", max_chars=20)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-1", "amount": "€1.00"}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    (row,) = details(engine).values()
    assert (row.state, row.error_code) == ("rejected", "TOO_LONG")
    assert "limit is 20" in row.error_description


def test_line_breaks_in_data_never_add_a_header(settings, engine) -> None:
    seed(engine)
    evil = "P-1\r\nBcc: evil@attacker.example\r\n\r\n<script>x</script>"
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": evil, "amount": "€1.00"}})
    run(settings, engine, "monitor")
    # A detail whose stored address and contact name carry line breaks (written by hand).
    with engine.begin() as conn:
        template_id, header_id, contact_id = conn.execute(
            select(details_t.c.template_id, details_t.c.header_id, details_t.c.contact_id)
        ).one()
        conn.execute(insert(details_t).values(
            header_id=header_id, contact_id=contact_id, template_id=template_id, media="email",
            classification="financial", address="jane@example.com\r\nBcc: evil@attacker.example",
            language="en", state="awaiting_merge", created_at=utcnow()))
    run(settings, engine, "email-monitor")
    rows = sorted(details(engine).values(), key=lambda r: r.id)
    sent, forged = rows
    assert (forged.state, forged.error_code) == ("rejected", "INVALID_ADDRESS")
    assert sent.state == "awaiting_send"
    data = documents(engine)[sent.id].content
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in head
    msg = parse(data)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Receipt P-1 Bcc: evil@attacker.example <script>x</script>"
    assert evil.replace("\r\n", "\n") in msg.get_payload()[0].get_content().replace("\r\n", "\n")


def test_expired_details_are_not_merged(settings, engine) -> None:
    seed(engine)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-1", "amount": "€1.00"}})
    run(settings, engine, "monitor")
    with engine.begin() as conn:
        conn.execute(update(details_t).values(expires_at=utcnow().replace(year=2000)))
    run(settings, engine, "email-monitor")
    (row,) = details(engine).values()
    assert (row.state, row.error_code) == ("expired", "EXPIRED")
    assert documents(engine) == {}


def test_no_document_when_the_lease_was_lost(settings, engine) -> None:
    seed(engine)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-1", "amount": "€1.00"}})
    run(settings, engine, "monitor")
    job = EmailMonitorJob(settings, engine)
    claimer = Claimer(engine, "worker-a", settings.claims)
    rows = claimer.claim(job.queue, 10)
    outcomes = job.handle(rows, SimpleNamespace(stopping=False, keep_alive=lambda: None))
    assert outcomes and outcomes[0].payload is not None
    with engine.begin() as conn:  # another worker took the row over meanwhile
        conn.execute(update(details_t).values(claimed_by="worker-b"))
    assert claimer.finish(job.queue, outcomes, persist=job.persist) == {rows[0].id}
    assert documents(engine) == {}
    assert details(engine)[rows[0].id].state == "awaiting_merge"


def test_entity_data_sources_complete_the_trigger(db_url, tmp_path) -> None:
    sources = {"payment": {"query": "SELECT CAST(:payment_id AS TEXT) || '-X' AS number"},
               "offer": {"query": "SELECT 'never' AS name WHERE CAST(:offer_id AS TEXT) = 'x'",
                         "database_url": "postgresql+psycopg2://postgres@127.0.0.1:1/none"}}
    settings = make_settings(db_url, tmp_path / "var", COMMS_ENTITY_SOURCES=json.dumps(sources))
    engine = make_engine(settings.database_url)
    try:
        seed(engine)
        trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
                entities={"payment": {"id": 77, "amount": "€1.00"}})
        trigger(engine, contact_ref="C-EN", template_code="OFFER",
                entities={"offer": {"id": 5, "name": "Fibre", "price": "€1", "code": "F"}})
        run(settings, engine, "monitor")
        run(settings, engine, "email-monitor")
        rows = {r.classification: r for r in details(engine).values()}
        receipt, offer = rows["financial"], rows["marketing"]
        assert (receipt.state, receipt.subject) == ("awaiting_send", "Receipt 77-X")
        # The offer's source is down: not the message's fault, so it waits for a retry.
        assert (offer.state, offer.error_code) == ("awaiting_merge", "ENTITY_DATA")
        assert offer.next_attempt_at is not None
        assert set(documents(engine)) == {receipt.id}
    finally:
        engine.dispose()


def test_encoded_words_in_data_never_add_a_header(settings, engine) -> None:
    """An RFC 2047 encoded word standing for CR LF (in a tag value and in the contact's
    name) stays text of its one header: no Reply-To or Bcc appears."""
    seed(engine)
    evil = "=?utf-8?q?P-1=0D=0AReply-To:_attacker@evil.example?="
    with engine.begin() as conn:
        conn.execute(Contact.__table__.update().where(Contact.__table__.c.ref == "C-EN")
                     .values(name="Jane =?utf-8?q?x=0D=0ABcc:_spy@evil.example?="))
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": evil, "amount": "€1.00"}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    (row,) = details(engine).values()
    assert row.state == "awaiting_send"
    data = documents(engine)[row.id].content
    msg = parse(data)
    assert msg["Reply-To"] is None and msg["Bcc"] is None
    assert msg["Subject"] == "Receipt P-1 Reply-To: attacker@evil.example"
