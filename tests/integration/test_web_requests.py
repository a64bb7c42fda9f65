"""Triggers over HTTP: POST /v1/requests writes one request header, as the SQL trigger would."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from comms_pipeline.store.models import headers_t
from tests.factories import sms_template
from tests.integration.web_support import add_system, bearer, client, ensure_contact, role_key


@pytest.fixture
def api(settings, engine):
    ensure_contact(engine, "C-1001")
    with engine.begin() as conn:
        sms_template(conn, code="BILL_READY", text="Bill #params.amount",
                     unrestricted_params=["amount", "due"])
    return client(settings, engine)


def _headers(engine):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(headers_t).order_by(headers_t.c.id))
                .mappings()]


def test_a_request_becomes_one_header(api, engine):
    auth = bearer(add_system(engine, "CRM")[1])
    r = api.post("/v1/requests", headers=auth, json={
        "contact_ref": "C-1001", "template_code": "BILL_READY", "media": "sms",
        "language": "el", "entities": {"subscription": {"number": "S-1"}},
        "params": {"amount": "12.50"}, "send_after": "2030-01-01T12:00:00+02:00",
        "expires_at": "2030-01-02T00:00:00Z", "priority": 1, "idempotency_key": "crm-42"})
    assert r.status_code == 202, r.json()
    assert r.json()["warnings"] == ["unrestricted parameter 'due' is not given"]
    [header] = _headers(engine)
    assert header["id"] == r.json()["request_id"]
    assert (header["template_code"], header["media"], header["language"], header["priority"]) \
        == ("BILL_READY", "sms", "el", 1)
    assert header["entities"] == {"subscription": {"number": "S-1"}}
    assert header["params"] == {"amount": "12.50"}
    assert header["send_after"].isoformat() == "2030-01-01T10:00:00"  # stored in UTC
    assert header["status"] == "awaiting_processing"
    # The body's idempotency key dedups the request itself.
    again = api.post("/v1/requests", headers=auth, json={
        "contact_ref": "C-1001", "template_code": "BILL_READY", "idempotency_key": "crm-42"})
    assert again.json()["request_id"] == header["id"]
    assert len(_headers(engine)) == 1


def test_the_idempotency_header_replays_the_answer(api, engine):
    auth = {**bearer(role_key(engine, "admin")), "Idempotency-Key": "req-1"}
    body = {"contact_ref": "C-1001", "event": "payment_posted"}
    first = api.post("/v1/requests", headers=auth, json=body)
    second = api.post("/v1/requests", headers=auth, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(_headers(engine)) == 1
    r = api.post("/v1/requests", headers=auth, json={**body, "priority": 3})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("body, field, words", [
    ({"template_code": "BILL_READY"}, "body.contact_ref", "Field required"),
    ({"contact_ref": "C-1001"}, "body", "template_code or an event"),
    ({"contact_ref": "C-1001", "event": "x", "priority": 7}, "body.priority", "less than"),
    ({"contact_ref": "C-1001", "event": "x", "media": "fax"}, "body.media", "'email'"),
    ({"contact_ref": "C-1001", "event": "x", "send_to": "type"}, "body", "address_type"),
    ({"contact_ref": "C-1001", "event": "x", "send_after": "2030-01-02T00:00:00Z",
      "expires_at": "2030-01-01T00:00:00Z"}, "body", "expires_at must be after"),
    ({"contact_ref": "C-1001", "event": "x", "params": {"a": {"nested": 1}}},
     "body.params.a", "valid string"),
    ({"contact_ref": "C-1001", "event": "x", "surprise": 1}, "body.surprise", "not permitted"),
])
def test_validation_errors_explain_themselves(api, engine, body, field, words):
    auth = bearer(role_key(engine, "admin"))
    r = api.post("/v1/requests", headers=auth, json=body)
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "invalid_request"
    fields = {d["field"] for d in problem["details"]}
    assert any(f == field or f.startswith(field + ".") for f in fields), problem
    assert words in problem["message"] or any(words in d["problem"]
                                              for d in problem["details"]), problem
    assert _headers(engine) == []


@pytest.mark.parametrize("body, code, name", [
    ({"contact_ref": "C-1001", "template_code": "NOPE"}, "unknown_template", "NOPE"),
    ({"contact_ref": "C-404", "template_code": "BILL_READY"}, "unknown_contact", "C-404"),
    ({"contact_ref": "C-1001", "event": "x", "rule_code": "NO_RULE"}, "unknown_rule",
     "NO_RULE"),
])
def test_unknown_names_are_refused_with_the_reason(api, engine, body, code, name):
    r = api.post("/v1/requests", headers=bearer(role_key(engine, "admin")), json=body)
    assert r.status_code == 422 and r.json()["code"] == code
    assert repr(name) in r.json()["message"]
    assert _headers(engine) == []


def test_agents_may_not_trigger(api, engine):
    r = api.post("/v1/requests", headers=bearer(role_key(engine, "agent")),
                 json={"contact_ref": "C-1001", "event": "x"})
    assert r.status_code == 403


def test_an_external_systems_keys_and_templates_are_its_own(api, engine):
    """Two systems using the same idempotency key each get their request; a system cannot
    put entries into another system's queue through a template that delivers there."""
    _, portal = add_system(engine, "PORTAL")
    _, crm = add_system(engine, "CRM")
    with engine.begin() as conn:
        sms_template(conn, code="PORTAL_INBOX", text="Inbox", external_system="PORTAL")
    body = {"contact_ref": "C-1001", "template_code": "BILL_READY", "idempotency_key": "k-1"}
    first = api.post("/v1/requests", headers=bearer(portal), json=body)
    other = api.post("/v1/requests", headers=bearer(crm), json=body)
    assert first.status_code == other.status_code == 202
    assert first.json()["request_id"] != other.json()["request_id"]
    assert len(_headers(engine)) == 2
    again = api.post("/v1/requests", headers=bearer(crm), json=body)
    assert again.json()["request_id"] == other.json()["request_id"]

    inbox = {"contact_ref": "C-1001", "template_code": "PORTAL_INBOX"}
    refused = api.post("/v1/requests", headers=bearer(crm), json=inbox)
    assert refused.status_code == 403, refused.json()
    assert refused.json()["code"] == "foreign_system" and "another external system" in \
        refused.json()["message"]
    assert api.post("/v1/requests", headers=bearer(portal), json=inbox).status_code == 202
    assert len(_headers(engine)) == 3


def test_only_an_admin_may_override_consent(api, engine):
    body = {"contact_ref": "C-1001", "template_code": "BILL_READY", "override_consent": True}
    refused = api.post("/v1/requests", headers=bearer(add_system(engine, "CRM")[1]), json=body)
    assert refused.status_code == 403 and "override_consent" in refused.json()["message"]
    taken = api.post("/v1/requests", headers=bearer(role_key(engine, "admin")), json=body)
    assert taken.status_code == 202
    [header] = _headers(engine)
    assert header["override_consent"] is True


def test_an_admins_key_never_reads_as_a_systems_key(api, engine):
    """An admin's ``sys-1:dup`` is not system 1's ``dup`` (nor its ``~`` escape another
    admin key): each is its own request, and each repeats as itself."""
    system_id, system = add_system(engine, "CRM")
    admin = bearer(role_key(engine, "admin"))
    body = {"contact_ref": "C-1001", "template_code": "BILL_READY"}
    mine = api.post("/v1/requests", headers=bearer(system),
                    json={**body, "idempotency_key": "dup"})
    keys = [f"sys-{system_id}:dup", f"~sys-{system_id}:dup", "~dup", "dup"]
    theirs = [api.post("/v1/requests", headers=admin, json={**body, "idempotency_key": k})
              for k in keys]
    ids = [r.json()["request_id"] for r in [mine, *theirs]]
    assert all(r.status_code == 202 for r in [mine, *theirs])
    assert len(set(ids)) == 5, ids
    again = [api.post("/v1/requests", headers=admin, json={**body, "idempotency_key": k})
             for k in keys]
    assert [r.json()["request_id"] for r in again] == ids[1:]
    assert api.post("/v1/requests", headers=bearer(system), json={
        **body, "idempotency_key": "dup"}).json()["request_id"] == ids[0]
    assert len(_headers(engine)) == 5
