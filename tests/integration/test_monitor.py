"""The Comms Monitor job on SQLite and PostgreSQL: expansion into queue entries, and every
kind of bad input ending visibly while the rest of the batch carries on."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import VariantSpec
from comms_pipeline.pipeline.admin_records import AddressSpec, add_external_system, set_media
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import details_t, headers_t, transitions_t
from tests import factories


def _details(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.header_id == header_id)
                            .order_by(details_t.c.id)).all()


def _header(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(headers_t).where(headers_t.c.id == header_id)).one()


def test_sms_is_merged_and_email_waits_for_merge(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, name="Maria")
        factories.sms_template(conn)
        factories.email_template(conn)
    sms = trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    email = trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    assert run_job("monitor", settings, engine) == 2
    (s,) = _details(engine, sms)
    assert (s.state, s.address, s.body, s.parts, s.language) == (
        "awaiting_send", "+35799123456", "Hello Maria", 1, "en")
    (e,) = _details(engine, email)
    assert (e.state, e.address) == ("awaiting_merge", "maria@example.com")
    assert _header(engine, sms).status == "processed"
    with engine.connect() as conn:
        kinds = conn.execute(select(transitions_t.c.kind, transitions_t.c.to_state)).all()
    assert ("header", "processed") in kinds and ("detail", "awaiting_send") in kinds


def test_send_to_all_primary_and_type(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, more=[AddressSpec("email", "work@example.com", "work"),
                                      AddressSpec("email", "other@example.com", "home")])
        factories.email_template(conn)
    ids = {rule: trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO", send_to=rule,
                         address_type="work" if rule == "type" else None)
           for rule in ("all", "primary", "type")}
    run_job("monitor", settings, engine)
    assert [d.address for d in _details(engine, ids["all"])] == [
        "maria@example.com", "work@example.com", "other@example.com"]
    assert [d.address for d in _details(engine, ids["primary"])] == ["maria@example.com"]
    assert [(d.address, d.address_type) for d in _details(engine, ids["type"])] == [
        ("work@example.com", "work")]


def test_preferred_language_then_default(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-EL", language="el")
        factories.contact(conn, ref="C-DE", language="de")
        factories.sms_template(conn, variants=[VariantSpec("en", body_text="Hello"),
                                               VariantSpec("el", body_text="Γεια σας")])
    el = trigger(engine, contact_ref="C-EL", template_code="SMS_HELLO")
    de = trigger(engine, contact_ref="C-DE", template_code="SMS_HELLO")
    forced = trigger(engine, contact_ref="C-EL", template_code="SMS_HELLO", language="en")
    run_job("monitor", settings, engine)
    assert [(d.language, d.body) for d in _details(engine, el)] == [("el", "Γεια σας")]
    assert [(d.language, d.body) for d in _details(engine, de)] == [("en", "Hello")]
    assert [d.language for d in _details(engine, forced)] == ["en"]


def test_bad_input_ends_visibly_and_the_batch_carries_on(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn)
        factories.contact(conn, ref="C-BADPHONE", phone="12ab", email="bad@@example")
        factories.contact(conn, ref="C-NOEMAIL", email=None)
        factories.sms_template(conn)
        factories.sms_template(conn, code="SMS_LONG", text="x" * 200)
        factories.email_template(conn)
        factories.email_template(conn, code="PROMO", classification="marketing")
    past = utcnow() - timedelta(hours=1)
    cases = {
        "ok": trigger(engine, contact_ref="C-1", template_code="SMS_HELLO"),
        "unknown_template": trigger(engine, contact_ref="C-1", template_code="NOPE"),
        "unknown_contact": trigger(engine, contact_ref="C-404", template_code="SMS_HELLO"),
        "bad_phone": trigger(engine, contact_ref="C-BADPHONE", template_code="SMS_HELLO"),
        "bad_email": trigger(engine, contact_ref="C-BADPHONE", template_code="EMAIL_HELLO"),
        "no_email": trigger(engine, contact_ref="C-NOEMAIL", template_code="EMAIL_HELLO"),
        "too_long": trigger(engine, contact_ref="C-1", template_code="SMS_LONG"),
        "opted_out": trigger(engine, contact_ref="C-1", template_code="PROMO"),
        "expired": trigger(engine, contact_ref="C-1", template_code="SMS_HELLO", expires_at=past),
        "ok_after": trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO"),
    }
    run_job("monitor", settings, engine)
    h = {name: _header(engine, hid) for name, hid in cases.items()}
    assert (h["unknown_template"].status, h["unknown_template"].status_code) == (
        "error", "UNKNOWN_TEMPLATE")
    assert "'NOPE'" in h["unknown_template"].status_reason
    assert (h["unknown_contact"].status, h["unknown_contact"].status_code) == (
        "error", "UNKNOWN_CONTACT")
    assert (h["no_email"].status, h["no_email"].status_code) == ("not_sent", "NO_ADDRESS")
    assert "no email address" in h["no_email"].status_reason
    assert (h["opted_out"].status, h["opted_out"].status_code) == ("opted_out", "OPTED_OUT")
    assert (h["expired"].status, h["expired"].status_code) == ("not_sent", "EXPIRED")
    d = {name: _details(engine, cases[name]) for name in ("bad_phone", "bad_email", "too_long")}
    assert [(x.state, x.error_code) for x in d["bad_phone"]] == [("rejected", "INVALID_ADDRESS")]
    assert "malformed phone number '12ab'" in d["bad_phone"][0].error_description
    assert [(x.state, x.error_code) for x in d["bad_email"]] == [("rejected", "INVALID_ADDRESS")]
    assert [(x.state, x.error_code) for x in d["too_long"]] == [("rejected", "TOO_LONG")]
    assert "200 characters; the limit is 160" in d["too_long"][0].error_description
    assert [x.state for x in _details(engine, cases["ok"])] == ["awaiting_send"]
    assert [x.state for x in _details(engine, cases["ok_after"])] == ["awaiting_merge"]


def test_processing_rules_keep_the_exact_messages(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
        factories.sms_template(conn, code="SMS_IN", direction="incoming")
        factories.email_template(conn)
        factories.email_template(conn, code="EMAIL_IN", direction="incoming")
        set_media(conn, "email", enabled=False)
    ids = [trigger(engine, contact_ref="C-1", template_code=c)
           for c in ("SMS_IN", "EMAIL_IN", "EMAIL_HELLO")]
    run_job("monitor", settings, engine)
    got = [(d.state, d.error_description) for hid in ids for d in _details(engine, hid)]
    assert got == [("rejected", "Incoming SMS not Supported"),
                   ("rejected", "Incoming Emails not Supported"),
                   ("rejected", "Email Server not Enabled")]


def test_external_system_limit_is_the_lower_one(engine, settings):
    with engine.begin() as conn:
        add_external_system(conn, "PORTAL", "Customer portal", max_chars=10)
        factories.contact(conn)
        factories.sms_template(conn, code="PORTAL_SMS", text="Twelve chars",
                               external_system="PORTAL")
        factories.sms_template(conn, code="PORTAL_OK", text="short", external_system="PORTAL")
    long_id = trigger(engine, contact_ref="C-1", template_code="PORTAL_SMS")
    ok_id = trigger(engine, contact_ref="C-1", template_code="PORTAL_OK")
    run_job("monitor", settings, engine)
    assert [(d.state, d.error_code) for d in _details(engine, long_id)] == [
        ("rejected", "TOO_LONG")]
    (ok,) = _details(engine, ok_id)
    assert ok.state == "awaiting_external" and ok.external_system_id is not None


def test_send_after_is_respected(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
    later = trigger(engine, contact_ref="C-1", template_code="SMS_HELLO",
                    send_after=utcnow() + timedelta(hours=1))
    assert run_job("monitor", settings, engine) == 0
    assert _header(engine, later).status == "awaiting_processing"


def test_idempotency_key_creates_one_header(engine):
    first = trigger(engine, contact_ref="C-1", template_code="T", idempotency_key="evt-1")
    again = trigger(engine, contact_ref="C-1", template_code="T", idempotency_key="evt-1")
    other = trigger(engine, contact_ref="C-1", template_code="T", idempotency_key="evt-2")
    assert first == again != other
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from request_headers")).scalar() == 2


def test_a_header_that_crashes_the_job_fails_alone_with_its_error(engine, settings):
    """Entities that are not an object (a SQL trigger's mistake) make the job raise: the
    batch is retried row by row, the good header is processed, the bad one carries
    INTERNAL_ERROR and, after claims.max_attempts runs, ends Error; the job exits non-zero."""
    from comms_pipeline.runtime.run import JobFailed

    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
        conn.execute(text("INSERT INTO request_headers (contact_ref, template_code, entities) "
                          "VALUES ('C-1', 'SMS_HELLO', '\"oops\"')"))
    good = trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    with pytest.raises(JobFailed, match="1 batch"):
        run_job("monitor", settings, engine)
    bad = _header(engine, good - 1)
    assert _header(engine, good).status == "processed"
    assert (bad.status, bad.status_code) == ("awaiting_processing", "INTERNAL_ERROR")
    assert "AttributeError" in bad.status_reason
    for _ in range(settings.claims.max_attempts):  # the backoff passes, and it fails again
        with engine.begin() as conn:
            conn.execute(headers_t.update().values(next_attempt_at=None))
        with contextlib.suppress(JobFailed):
            run_job("monitor", settings, engine)
    bad = _header(engine, good - 1)
    assert (bad.status, bad.status_code) == ("error", "INTERNAL_ERROR")
    assert "gave up after" in bad.status_reason
