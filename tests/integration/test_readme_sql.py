"""The README's plain-SQL trigger, run exactly as written, on both backends."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import details_t, headers_t
from tests import factories

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_sql() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-sql-trigger -->\s*```sql\n(.*?)```", text, re.S)
    assert match, "README lost its SQL trigger example"
    return match.group(1).strip().rstrip(";")


def test_readme_insert_creates_a_header_the_monitor_expands(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1001", name="Maria")
        factories.sms_template(conn, code="PAYMENT_RECEIPT_SMS",
                               text="Payment #payment.number of EUR #payment.amount received",
                               referring_entities=["payment"])
    sql = readme_sql()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql)
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        header = conn.execute(select(headers_t)).one()
    assert (header.status, header.priority, header.send_to) == ("awaiting_processing", 2,
                                                                "primary")
    assert header.created_at is not None
    assert header.entities == {"payment": {"number": "P-77", "amount": "25.00", "currency": "EUR",
                                           "posted_on": "2026-12-01"}}
    run_job("monitor", settings, engine)
    with engine.connect() as conn:
        detail = conn.execute(select(details_t)).one()
    assert detail.state == "awaiting_send"
    assert detail.body == "Payment P-77 of EUR 25.00 received"
