"""Event rules fire from triggers through the real Comms Monitor job, on SQLite and PostgreSQL:
several rules per event, segments and conditions, consent and its override, presentment
preferences, and workflow events waiting in Awaiting Event Resolution."""

from __future__ import annotations

from sqlalchemy import insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.notifications.event_rules import resolve_event
from comms_pipeline.notifications.types import (
    Definitions,
    RuleDef,
    SegmentDef,
    load_builtin_notifications,
    save_definitions,
)
from comms_pipeline.pipeline.admin_records import AddressSpec
from comms_pipeline.pipeline.entity_sources import load_demo_business
from comms_pipeline.pipeline.template_files import load_builtin_templates
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import (
    details_t,
    headers_t,
    skipped_t,
    transitions_t,
)
from tests import factories

PAYMENT = {"payment": {"number": "P-5001", "amount": "42.50", "currency": "EUR",
                       "posted_on": "2024-10-02"}}


def setup(engine, settings, *rules: tuple[str, RuleDef], segments=None) -> None:
    with engine.begin() as conn:
        load_builtin_templates(conn, settings)
        load_builtin_notifications(conn)
        factories.contact(conn, ref="C-1002", name="Andreas")
        factories.contact(conn, ref="C-1005", name="Sofia", email="sofia@example.com",
                          phone="+35799100005", direct_marketing=True)
        factories.email_template(conn, code="PARTNER_OFFER", classification="marketing")
        if rules or segments:
            save_definitions(conn, Definitions(segments or {}, {}, dict(rules)))


def headers(engine):
    with engine.connect() as conn:
        return conn.execute(select(headers_t).order_by(headers_t.c.id)).all()


def children_of(engine, parent_id):
    return [h for h in headers(engine) if h.copy_of_id == parent_id]


def details_of(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.header_id == header_id)
                            .order_by(details_t.c.id)).all()


def skipped(engine):
    with engine.connect() as conn:
        return conn.execute(select(skipped_t).order_by(skipped_t.c.id)).all()


def test_payment_posted_creates_a_receipt_by_email_and_sms(engine, settings):
    setup(engine, settings)
    parent_id = trigger(engine, contact_ref="C-1002", event="posted", entities=PAYMENT)
    run_job("monitor", settings, engine)
    parent = headers(engine)[0]
    assert (parent.status, parent.details_created) == ("processed", 0)
    assert parent.status_reason == "expanded by event rule(s) PAYMENT_RECEIPT (2)"
    kids = children_of(engine, parent_id)
    assert [(k.rule_code, k.template_code, k.status) for k in kids] == [
        ("PAYMENT_RECEIPT", "PAYMENT_RECEIPT", "processed"),
        ("PAYMENT_RECEIPT", "PAYMENT_RECEIPT_SMS", "processed")]
    assert all(k.entities == PAYMENT and k.event == "posted" for k in kids)
    (email,) = details_of(engine, kids[0].id)
    (sms,) = details_of(engine, kids[1].id)
    assert (email.media, email.state) == ("email", "awaiting_merge")
    assert sms.state == "awaiting_send" and "P-5001" in sms.body
    with engine.connect() as conn:
        created = conn.execute(select(transitions_t.c.row_id).where(
            transitions_t.c.kind == "header", transitions_t.c.from_state.is_(None))
        ).scalars().all()
        every = conn.execute(select(headers_t.c.id)).scalars().all()
    assert sorted(created) == sorted(every)  # the trigger and each child: born once
    assert {k.id for k in kids} <= set(created)


def test_an_explicit_entity_and_several_matching_rules(engine, settings):
    extra = RuleDef(name="Welcome SMS", entity="subscription", event="on create",
                    sms_template="PAYMENT_RECEIPT_SMS", send_to="all")
    setup(engine, settings, ("WELCOME_SMS", extra))
    parent_id = trigger(engine, contact_ref="C-1002", event="subscription.on_create",
                        entities={"subscription": {"number": "S-1002"}, **PAYMENT})
    run_job("monitor", settings, engine)
    kids = children_of(engine, parent_id)
    assert sorted((k.rule_code, k.template_code, k.send_to) for k in kids) == [
        ("WELCOME_NEW_SUBSCRIBER", "WELCOME_SUBSCRIBER", "primary"),
        ("WELCOME_SMS", "PAYMENT_RECEIPT_SMS", "all")]
    assert "WELCOME_NEW_SUBSCRIBER (1)" in headers(engine)[0].status_reason
    # A trigger naming its rule is expanded by that rule only.
    only = trigger(engine, contact_ref="C-1002", event="subscription.on_create",
                   rule_code="WELCOME_SMS",
                   entities={"subscription": {"number": "S-1003"}, **PAYMENT})
    run_job("monitor", settings, engine)
    assert [(k.rule_code, k.template_code) for k in children_of(engine, only)] == [
        ("WELCOME_SMS", "PAYMENT_RECEIPT_SMS")]


def test_no_matching_rule_and_unknown_contact_end_visibly(engine, settings):
    setup(engine, settings)
    none = trigger(engine, contact_ref="C-1002", event="cancelled", entities=PAYMENT)
    ghost = trigger(engine, contact_ref="C-404", event="posted", entities=PAYMENT)
    run_job("monitor", settings, engine)
    by_id = {h.id: h for h in headers(engine)}
    assert (by_id[none].status, by_id[none].status_code) == ("not_sent", "NO_EVENT_RULE")
    assert "no active event rule for event 'cancelled' of payment" in by_id[none].status_reason
    assert (by_id[ghost].status, by_id[ghost].status_code) == ("error", "UNKNOWN_CONTACT")
    assert len(by_id) == 2


def test_segments_and_conditions_decide_and_skips_are_recorded(engine, settings, db_url):
    load_demo_business(db_url)
    big = RuleDef(name="Big payments of active accounts", entity="payment", event="posted",
                  sms_template="PAYMENT_RECEIPT_SMS", segment="ACTIVE",
                  conditions=[{"field": "payment.amount", "op": "more_than", "value": 100},
                              {"field": "payment.method", "op": "equals", "value": "cash"}])
    active = SegmentDef(name="Active accounts", kind="sql", query=(
        "SELECT contact_ref AS member_ref FROM accounts_receivable WHERE state = 'active'"))
    setup(engine, settings, ("BIG_PAYMENT", big), segments={"ACTIVE": active})
    with engine.begin() as conn:
        save_definitions(conn, Definitions({}, {}, {"PAYMENT_RECEIPT": RuleDef(
            name="off", entity="payment", event="posted", email_template="PAYMENT_RECEIPT",
            active=False)}))
    small = trigger(engine, contact_ref="C-1002", event="posted", entities=PAYMENT)
    large = {"payment": dict(PAYMENT["payment"], amount="150.00")}
    outsider = trigger(engine, contact_ref="C-1005", event="posted", entities=large)
    member = trigger(engine, contact_ref="C-1002", event="posted", entities=large)
    run_job("monitor", settings, engine)
    by_id = {h.id: h for h in headers(engine)}
    assert (by_id[small].status, by_id[small].status_code) == ("not_sent", "CONDITION_NOT_MET")
    assert "none of the conditions holds" in by_id[small].status_reason
    assert by_id[outsider].status == "not_sent"
    assert "not a member of segment ACTIVE" in by_id[outsider].status_reason
    assert by_id[member].status == "processed"
    assert [k.rule_code for k in children_of(engine, member)] == ["BIG_PAYMENT"]
    assert [(s.contact_ref, s.reason_code, s.recipient_key) for s in skipped(engine)] == [
        ("C-1002", "CONDITION_NOT_MET", f"header:{small}"),
        ("C-1005", "NOT_IN_SEGMENT", f"header:{outsider}")]
    assert all(s.rule_id is not None and s.run_id is None for s in skipped(engine))


def insert_header(engine, **values) -> int:
    base = {"contact_ref": "C-1002", "status": "awaiting_processing", "created_at": utcnow()}
    with engine.begin() as conn:
        return conn.execute(insert(headers_t).values({**base, **values})
                            .returning(headers_t.c.id)).scalar_one()


def test_marketing_rules_respect_consent_unless_overridden(engine, settings):
    offer = RuleDef(name="Partner offer", entity="payment", event="posted",
                    email_template="PARTNER_OFFER", respect_consent="affiliate")
    setup(engine, settings, ("PARTNER", offer))
    with engine.begin() as conn:
        save_definitions(conn, Definitions({}, {}, {"PAYMENT_RECEIPT": RuleDef(
            name="off", entity="payment", event="posted", email_template="PAYMENT_RECEIPT",
            active=False)}))
    refused = trigger(engine, contact_ref="C-1005", event="posted", entities=PAYMENT)
    important = insert_header(engine, contact_ref="C-1005", event="posted", entities=PAYMENT,
                              override_consent=True)
    plain_promo = insert_header(engine, template_code="PARTNER_OFFER", override_consent=True)
    run_job("monitor", settings, engine)
    by_id = {h.id: h for h in headers(engine)}
    assert (by_id[refused].status, by_id[refused].status_code) == ("opted_out", "OPTED_OUT")
    assert "affiliate marketing" in by_id[refused].status_reason
    assert [(s.reason_code, s.contact_ref) for s in skipped(engine)] == [("OPTED_OUT", "C-1005")]
    (kid,) = children_of(engine, important)
    assert kid.override_consent and kid.status == "processed"
    assert [d.address for d in details_of(engine, kid.id)] == ["sofia@example.com"]
    assert by_id[plain_promo].status == "processed"


def test_presentment_preferences_pick_the_billing_address(engine, settings):
    bill = RuleDef(name="Bill", entity="bill", event="issued", email_template="BILL_ISSUED",
                   consider_presentment_preferences=True)
    setup(engine, settings, ("BILL_TO_PRESENTMENT", bill))
    with engine.begin() as conn:
        factories.contact(conn, ref="C-9", email="home@example.com", more=[
            AddressSpec("email", "accounts@example.com", "billing")])
    parent = trigger(engine, contact_ref="C-9", event="issued",
                     entities={"bill": {"number": "B-1"}})
    run_job("monitor", settings, engine)
    kids = {k.rule_code: k for k in children_of(engine, parent)}
    presentment = kids["BILL_TO_PRESENTMENT"]
    assert (presentment.send_to, presentment.address_type) == ("type", "billing")
    assert [d.address for d in details_of(engine, presentment.id)] == ["accounts@example.com"]
    assert [d.address for d in details_of(engine, kids["BILL_ISSUED"].id)] == [
        "home@example.com"]


def test_workflow_events_wait_for_resolution(engine, settings):
    setup(engine, settings)
    waiting = insert_header(engine, event="posted", event_number="WF-7", entities=PAYMENT,
                            status="awaiting_event_resolution")
    other = insert_header(engine, event="posted", event_number="WF-8", entities=PAYMENT,
                          status="awaiting_event_resolution")
    run_job("monitor", settings, engine)
    assert {h.status for h in headers(engine)} == {"awaiting_event_resolution"}
    with engine.begin() as conn:
        assert resolve_event(conn, "WF-7") == [waiting]
    run_job("monitor", settings, engine)
    by_id = {h.id: h for h in headers(engine)}
    assert by_id[waiting].status == "processed" and len(children_of(engine, waiting)) == 2
    assert by_id[other].status == "awaiting_event_resolution"


def test_triggers_from_python_cli_and_web_api_can_wait_for_resolution(engine, settings):
    """'On create' workflow events made through each interface wait, then go on resolve."""
    import json

    from click.testing import CliRunner

    from comms_pipeline.cli.common import AppContext
    from comms_pipeline.cli.requests import trigger as trigger_cli
    from tests.integration.web_support import bearer, client, role_key

    setup(engine, settings)
    by_python = trigger(engine, contact_ref="C-1002", event="posted", event_number="WF-9",
                        entities=PAYMENT, await_resolution=True)
    result = CliRunner().invoke(trigger_cli, [
        "--contact", "C-1002", "--event", "posted", "--event-number", "WF-9",
        "--await-resolution", "--entity", f"payment={json.dumps(PAYMENT['payment'])}"],
        obj=AppContext(_settings=settings, _engine=engine), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    api = client(settings, engine)
    admin = bearer(role_key(engine, "admin"))
    r = api.post("/v1/requests", headers=admin, json={
        "contact_ref": "C-1002", "event": "posted", "event_number": "WF-9",
        "await_resolution": True, "entities": PAYMENT})
    assert r.status_code == 202, r.json()
    bad = api.post("/v1/requests", headers=admin, json={
        "contact_ref": "C-1002", "event": "posted", "await_resolution": True})
    assert bad.status_code == 422 and "event_number" in bad.text
    run_job("monitor", settings, engine)
    assert {h.status for h in headers(engine)} == {"awaiting_event_resolution"}
    with engine.begin() as conn:
        released = resolve_event(conn, "WF-9")
    assert by_python in released and len(released) == 3
    run_job("monitor", settings, engine)
    assert {h.status for h in headers(engine) if h.copy_of_id is None} == {"processed"}


def test_conditions_see_the_business_data_of_a_trigger_that_carries_only_ids(
        engine, settings, db_url):
    """With SQL entity sources configured, a rule's conditions are evaluated on the payment
    read from the business database, not only on the trigger's JSON."""
    import tomllib

    from comms_pipeline.pipeline import entity_sources as es

    load_demo_business(db_url)
    big = RuleDef(name="Big payments", entity="payment", event="posted",
                  sms_template="PAYMENT_RECEIPT_SMS",
                  conditions=[{"field": "payment.amount", "op": "more_than", "value": 40}])
    setup(engine, settings, ("BIG_PAYMENT", big))
    demo = es.DEMO_SOURCES
    sources = tomllib.loads(demo.read_text())["entity_sources"]
    settings.entity_sources = {name: es.EntitySource.model_validate(
        {**cfg, "name": name, "database_url": db_url}) for name, cfg in sources.items()}
    try:
        big_one = trigger(engine, contact_ref="C-1002", event="posted", rule_code="BIG_PAYMENT",
                          entities={"payment": {"id": 1}})     # P-5001, 42.50
        small = trigger(engine, contact_ref="C-1002", event="posted", rule_code="BIG_PAYMENT",
                        entities={"payment": {"id": 2}})       # P-5002, 20.00
        run_job("monitor", settings, engine)
    finally:
        es.dispose_engines()
    by_id = {h.id: h for h in headers(engine)}
    assert by_id[big_one].status == "processed" and len(children_of(engine, big_one)) == 1
    assert (by_id[small].status, by_id[small].status_code) == ("not_sent",
                                                               "CONDITION_NOT_MET")


def test_an_event_number_is_expanded_once(engine, settings):
    """Two triggers of one workflow event (posted again, or released twice) make the event's
    communications once; the second ends Processed naming the first. A trigger without an
    event number is expanded on its own, as before."""
    setup(engine, settings)
    first = trigger(engine, contact_ref="C-1002", event="posted", event_number="WF-42",
                    entities=PAYMENT)
    run_job("monitor", settings, engine)
    again = trigger(engine, contact_ref="C-1002", event="posted", event_number="WF-42",
                    entities=PAYMENT)
    twins = [trigger(engine, contact_ref="C-1002", event="posted", event_number="WF-43",
                     entities=PAYMENT) for _ in range(2)]  # in one batch of the monitor
    plain = [trigger(engine, contact_ref="C-1002", event="posted", entities=PAYMENT)
             for _ in range(2)]
    run_job("monitor", settings, engine)
    by_id = {h.id: h for h in headers(engine)}
    assert len(children_of(engine, first)) == 2
    assert children_of(engine, again) == []
    assert by_id[again].status == "processed"
    assert f"event WF-42 was expanded already (by header {first})" in by_id[again].status_reason
    assert [len(children_of(engine, t)) for t in twins] == [2, 0]
    assert [len(children_of(engine, t)) for t in plain] == [2, 2]
    run_job("monitor", settings, engine)  # the children themselves: one email, one SMS each
    made = [h for h in headers(engine) if h.copy_of_id is not None]
    assert len(made) == 8 and all(h.status == "processed" for h in made)


def test_a_child_made_meanwhile_by_another_monitor_is_not_made_twice(engine, settings):
    """Past the in-batch check (two monitors expanding the event's triggers side by side):
    the headers' unique idempotency key, and the insert skips the child already there."""
    from comms_pipeline.notifications.event_rules import EventExpansion, insert_expansions

    setup(engine, settings)
    first = trigger(engine, contact_ref="C-1002", event="posted", event_number="WF-77",
                    entities=PAYMENT)
    run_job("monitor", settings, engine)
    (child, *_rest) = children_of(engine, first)
    copy = {c: getattr(child, c) for c in ("contact_ref", "event", "event_number", "entities",
                                           "priority", "template_code", "rule_code",
                                           "copy_of_id", "send_to", "idempotency_key",
                                           "status", "created_at")}
    fresh = dict(copy, idempotency_key="evt:WF-77:C-1002:OTHER:T", rule_code="OTHER")
    with engine.begin() as conn:
        insert_expansions(conn, [EventExpansion(children=[copy, fresh])], "monitor")
    assert len(children_of(engine, first)) == 3  # the fresh one only


def test_a_test_keys_event_makes_test_children_and_entries(engine, settings):
    setup(engine, settings)
    parent_id = trigger(engine, contact_ref="C-1002", event="posted", entities=PAYMENT,
                        is_test=True)
    run_job("monitor", settings, engine)
    kids = children_of(engine, parent_id)
    assert len(kids) == 2 and all(k.is_test for k in kids)
    assert all(d.is_test for k in kids for d in details_of(engine, k.id))
