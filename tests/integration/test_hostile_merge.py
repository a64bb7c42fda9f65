"""Hostile values through the Email Monitor, on SQLite and PostgreSQL: an injected subject and
an unusable amount end Rejected the first time, with a code and a description in the
product's words (never Pending INTERNAL_ERROR, never a Python exception's text)."""

from __future__ import annotations

import base64

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.pipeline.triggers import trigger
from tests.integration.test_email_monitor import details, documents, run, seed

PYTHON_WORDS = ("Error", "decimal", "<class", "object at", "__", "lambda", "sys.")


def _nested(text: str, levels: int) -> str:
    for _ in range(levels):
        text = "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="
    return text


def test_nested_encoded_words_in_a_subject_end_rejected_at_once(settings, engine) -> None:
    seed(engine)
    lenient = "=?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3D0D=3D0ABcc:_spy@evil.example=3F=3D?="
    for number in (_nested("P-1\r\nBcc: spy@evil.example", 6), lenient):
        trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
                entities={"payment": {"number": number, "amount": "€1.00"}})
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-2", "amount": "€2.00"}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    first, second, good = sorted(details(engine).values(), key=lambda r: r.id)
    for row in (first, second):
        assert (row.state, row.error_code) == ("rejected", "HEADER_INJECTION")
        assert "encoded words" in row.error_description
        assert row.completed_at is not None
    assert good.state == "awaiting_send"
    assert set(documents(engine)) == {good.id}
    run(settings, engine, "email-monitor")  # nothing left to retry
    assert [r.state for r in sorted(details(engine).values(), key=lambda r: r.id)] == [
        "rejected", "rejected", "awaiting_send"]


def test_an_unusable_amount_is_rejected_in_the_products_words(settings, engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        save_template(conn, TemplateSpec(
            "PAID", "Paid", "email", classification="financial", referring_entities=["payment"],
            variants=[VariantSpec("en", "Paid", "<p>$fmt.money($payment.amount)</p>")]))
    for amount in ("NaN", "Infinity", "-sNaN", "1e999999"):
        trigger(engine, contact_ref="C-EN", template_code="PAID",
                entities={"payment": {"number": "P-1", "amount": amount}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    rows = list(details(engine).values())
    assert len(rows) == 4
    for row in rows:
        assert (row.state, row.error_code) == ("rejected", "TEMPLATE_ERROR")
        assert "number" in row.error_description
        for word in PYTHON_WORDS:
            assert word not in row.error_description, row.error_description
