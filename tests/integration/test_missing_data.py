"""Missing data is an error, not a blank (issue 10 item 1), on SQLite and PostgreSQL.

A tag of an entity the communication refers to (or of the contact, the notification or an
unrestricted parameter) whose value is missing ends the detail Rejected ``MISSING_DATA`` with
every missing tag named; the rest of the batch carries on. Tags of entities not referred to
render empty, ``$fmt.default`` / ``$!{...}`` mark a value optional and ``#if`` guards work.
"""

from __future__ import annotations

from sqlalchemy import select

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import details_t

BILL_SMS = ("Dear #bill.accounts_receivable.name, bill #bill.number: "
            "$fmt.money($bill.total_amount_to_be_paid, $bill.currency)."
            "#if($bill.period) Period #bill.period.#end"
            " Ref $fmt.default($bill.reference, 'none')$!{bill.note} #payment.number")
BILL_HTML = ("<p>Dear #bill.accounts_receivable.name,</p>"
             "<p>Owed: $fmt.money($bill.total_amount_to_be_paid, $bill.currency)</p>")
PROMO_SMS = "Use #param.promo_code, #contact_information.name"
FULL_BILL = {"number": "B-1", "total_amount_to_be_paid": "25.00", "currency": "EUR",
             "accounts_receivable": {"name": "Maria Georgiou"}}


def seed(engine) -> None:
    with engine.begin() as conn:
        add_contact(conn, "C-1", "Maria Georgiou", language="en", addresses=[
            AddressSpec("phone", "+35799123456", "mobile", True),
            AddressSpec("email", "maria@example.com", "home", True),
            AddressSpec("postal", "12 Makariou Avenue\n1065 Nicosia", "home", True)])
        save_template(conn, TemplateSpec(
            "BILL_SMS", "Bill SMS", "sms", classification="financial",
            referring_entities=["bill"], variants=[VariantSpec("en", body_text=BILL_SMS)]))
        save_template(conn, TemplateSpec(
            "PROMO_SMS", "Promo", "sms", classification="financial",
            unrestricted_params=["promo_code"],
            variants=[VariantSpec("en", body_text=PROMO_SMS)]))
        for code, media in (("BILL_EMAIL", "email"), ("BILL_LETTER", "letter")):
            save_template(conn, TemplateSpec(
                code, code, media, classification="financial", referring_entities=["bill"],
                variants=[VariantSpec("en", "Your bill #bill.number", BILL_HTML)]))


def detail(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.header_id == header_id)).one()


def test_sms_missing_fields_reject_naming_every_tag_and_the_batch_carries_on(engine,
                                                                               settings):
    seed(engine)
    bad = trigger(engine, contact_ref="C-1", template_code="BILL_SMS",
                  entities={"bill": {"number": "B-1", "total_amount": "25.00"}})
    good = trigger(engine, contact_ref="C-1", template_code="BILL_SMS",
                   entities={"bill": FULL_BILL, "payment": {"number": None}})
    null = trigger(engine, contact_ref="C-1", template_code="BILL_SMS", entities={"bill": {
        **FULL_BILL, "total_amount_to_be_paid": None}})
    no_param = trigger(engine, contact_ref="C-1", template_code="PROMO_SMS")
    assert run_job("monitor", settings, engine) == 4
    rejected = detail(engine, bad)
    assert (rejected.state, rejected.error_code) == ("rejected", "MISSING_DATA")
    assert rejected.error_description.startswith(
        "missing: #bill.accounts_receivable.name, #bill.total_amount_to_be_paid")
    assert rejected.body is None
    sent = detail(engine, good)
    # optional values and a tag of an entity not referred to (payment) render empty
    assert (sent.state, sent.body) == (
        "awaiting_send", "Dear Maria Georgiou, bill B-1: €25.00. Ref none ")
    assert detail(engine, null).error_description.startswith(
        "missing: #bill.total_amount_to_be_paid (")
    missing_param = detail(engine, no_param)
    assert (missing_param.error_code, missing_param.error_description.split(" (")[0]) == (
        "MISSING_DATA", "missing: #param.promo_code")


def test_email_and_letter_merges_reject_missing_data(engine, settings):
    seed(engine)
    ids = {}
    for code in ("BILL_EMAIL", "BILL_LETTER"):
        ids[code, "bad"] = trigger(engine, contact_ref="C-1", template_code=code,
                                   entities={"bill": {"number": "B-1"}})
        ids[code, "good"] = trigger(engine, contact_ref="C-1", template_code=code,
                                    entities={"bill": FULL_BILL})
    run_job("monitor", settings, engine)
    run_job("email-monitor", settings, engine)
    run_job("letter-monitor", settings, engine)
    for code in ("BILL_EMAIL", "BILL_LETTER"):
        bad = detail(engine, ids[code, "bad"])
        assert (bad.state, bad.error_code) == ("rejected", "MISSING_DATA"), code
        assert bad.error_description.startswith(
            "missing: #bill.accounts_receivable.name, #bill.total_amount_to_be_paid"), code
        assert detail(engine, ids[code, "good"]).state in ("awaiting_send", "sent"), code
