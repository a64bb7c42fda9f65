"""Small builders of test data on top of comms_pipeline.pipeline.admin_records and
comms_pipeline.pipeline.triggers."""

from __future__ import annotations

from sqlalchemy import insert

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.store.models import details_t, headers_t


def contact(conn, ref="C-1", name="Maria Georgiou", language="en", email="maria@example.com",
            phone="+35799123456", **kw):
    addresses = []
    if email:
        addresses.append(AddressSpec("email", email, "home", True))
    if phone:
        addresses.append(AddressSpec("phone", phone, "mobile", True))
    addresses += kw.pop("more", [])
    return add_contact(conn, ref, name, language=language, addresses=addresses, **kw)


def sms_template(conn, code="SMS_HELLO", text="Hello #contact_information.name", **kw):
    variants = kw.pop("variants", None) or [VariantSpec("en", body_text=text)]
    return save_template(conn, TemplateSpec(code=code, name=code, media="sms",
                                            variants=variants, **kw))


def email_template(conn, code="EMAIL_HELLO", **kw):
    variants = kw.pop("variants", None) or [
        VariantSpec("en", subject="Hello #contact_information.name",
                    body_html="<p>Dear #contact_information.name</p>")]
    return save_template(conn, TemplateSpec(code=code, name=code, media="email",
                                            variants=variants, **kw))


def bulk_sms_details(conn, n: int, contact_id: int, header_id: int | None = None,
                     batch: int = 5000) -> None:
    """``n`` SMS queue entries ready to send (for daemon and crash tests)."""
    now = utcnow()
    if header_id is None:
        header_id = conn.execute(insert(headers_t).values(
            contact_ref="C-1", template_code="SMS_HELLO", status="processed", created_at=now,
        ).returning(headers_t.c.id)).scalar_one()
    for start in range(0, n, batch):
        conn.execute(insert(details_t), [
            {"header_id": header_id, "contact_id": contact_id, "media": "sms",
             "direction": "outgoing", "address": f"+3579900{i:04d}", "body": f"message {i}",
             "state": "awaiting_send", "priority": 2, "created_at": now}
            for i in range(start, min(start + batch, n))])
