"""An external system never writes into another system's queue through event rules: the
Web API refuses an event whose rules deliver there (403 ``foreign_system``), and the Comms
Monitor checks again, so a system's header yields no entry in another's queue whatever
path created it (the rule changed after the request was taken, or a header written by SQL
in the system's name). On SQLite and PostgreSQL, through HTTP."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.notifications.types import Definitions, RuleDef, save_definitions
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import SkippedRecipient, details_t, headers_t, rules_t
from tests.factories import contact, sms_template
from tests.integration.web_support import add_system, bearer, client, role_key

PAYMENT = {"payment": {"number": "P-1", "amount": "10.00"}}


def _setup(settings, engine):  # type: ignore[no-untyped-def]
    portal_id, portal = add_system(engine, "PORTAL")
    crm_id, crm = add_system(engine, "CRM")
    with engine.begin() as conn:
        contact(conn, ref="C-1001")
        sms_template(conn, code="PORTAL_INBOX", text="Paid #payment.amount",
                     external_system="PORTAL")
        sms_template(conn, code="CRM_INBOX", text="Paid #payment.amount",
                     external_system="CRM")
        save_definitions(conn, Definitions({}, {}, {
            "CRM_PAYMENT": RuleDef(name="CRM payment", entity="payment", event="posted",
                                   sms_template="CRM_INBOX"),
            "PORTAL_REFUND": RuleDef(name="Portal refund", entity="refund", event="made",
                                     sms_template="PORTAL_INBOX")}))
    return client(settings, engine), (portal_id, portal), (crm_id, crm)


def _headers(engine):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(headers_t).order_by(headers_t.c.id)).all()


def _queue(engine, system_id):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(details_t.c.id).where(
            details_t.c.external_system_id == system_id)).all()


def test_an_event_whose_rules_deliver_elsewhere_is_refused(settings, engine):
    api, (_, portal), (crm_id, crm) = _setup(settings, engine)
    for event, entities in (("posted", PAYMENT), ("payment.posted", None),
                            ("Payment.Posted", {"other": {}})):
        body = {"contact_ref": "C-1001", "event": event, "entities": entities}
        r = api.post("/v1/requests", headers=bearer(portal), json=body)
        assert r.status_code == 403, r.json()
        assert r.json()["code"] == "foreign_system"
        assert "CRM_PAYMENT" in r.json()["message"] and "another external system" in \
            r.json()["message"]
        assert r.json()["details"] == {"rule_code": "CRM_PAYMENT", "template_code": "CRM_INBOX"}
    # With the rule named, the same answer; an event no foreign rule expands is taken.
    named = api.post("/v1/requests", headers=bearer(portal), json={
        "contact_ref": "C-1001", "event": "posted", "rule_code": "CRM_PAYMENT",
        "entities": PAYMENT})
    assert (named.status_code, named.json()["code"]) == (403, "foreign_system")
    assert _headers(engine) == []
    own = {"contact_ref": "C-1001", "event": "made", "entities": {"refund": {"n": 1}}}
    assert api.post("/v1/requests", headers=bearer(portal), json=own).status_code == 202
    assert api.post("/v1/requests", headers=bearer(crm), json={
        "contact_ref": "C-1001", "event": "posted", "entities": PAYMENT}).status_code == 202
    assert api.post("/v1/requests", headers=bearer(role_key(engine, "admin")), json={
        "contact_ref": "C-1001", "event": "posted", "entities": PAYMENT}).status_code == 202
    run_job("monitor", settings, engine)
    assert len(_queue(engine, crm_id)) == 2  # CRM's own request and the admin's


def test_the_monitor_never_delivers_a_systems_header_into_another_queue(settings, engine):
    api, (portal_id, portal), (crm_id, _) = _setup(settings, engine)
    # Taken while the rule delivered into PORTAL's own queue ...
    with engine.begin() as conn:
        conn.execute(update(rules_t).where(rules_t.c.code == "CRM_PAYMENT")
                     .values(sms_template="PORTAL_INBOX"))
    taken = api.post("/v1/requests", headers=bearer(portal), json={
        "contact_ref": "C-1001", "event": "posted", "entities": PAYMENT})
    assert taken.status_code == 202, taken.json()
    # ... then the rule is pointed at CRM's queue before the monitor runs.
    with engine.begin() as conn:
        conn.execute(update(rules_t).where(rules_t.c.code == "CRM_PAYMENT")
                     .values(sms_template="CRM_INBOX"))
        # And a header written by SQL in PORTAL's name, naming CRM's template directly.
        sql_id = conn.execute(insert(headers_t).values(
            contact_ref="C-1001", template_code="CRM_INBOX", entities=PAYMENT,
            idempotency_key=f"sys-{portal_id}:by-sql", status="awaiting_processing",
            created_at=utcnow()).returning(headers_t.c.id)).scalar_one()
    run_job("monitor", settings, engine)
    assert _queue(engine, crm_id) == []
    by_id = {h.id: h for h in _headers(engine)}
    trigger = by_id[taken.json()["request_id"]]
    assert (trigger.status, trigger.status_code) == ("not_sent", "FOREIGN_SYSTEM")
    assert "CRM_INBOX delivers to another external system's queue" in trigger.status_reason
    assert [h for h in by_id.values() if h.copy_of_id == trigger.id] == []
    direct = by_id[sql_id]
    assert (direct.status, direct.status_code) == ("error", "FOREIGN_SYSTEM")
    with engine.connect() as conn:
        skipped = conn.execute(select(SkippedRecipient.__table__)).all()
    assert [s.reason_code for s in skipped] == ["FOREIGN_SYSTEM"]
