"""Every request's fate over the Web API: GET /v1/requests[/{id}] for admins and for the
system that made the request only; the agent page's list of what was not sent, and why."""

from __future__ import annotations

import pytest

from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from tests.factories import sms_template
from tests.integration.web_support import add_system, bearer, client, role_key


@pytest.fixture
def api(settings, engine):
    with engine.begin() as conn:
        add_contact(conn, "C-1", "Maria", addresses=[AddressSpec("phone", "+35799123456",
                                                                 is_primary=True)])
        add_contact(conn, "C-2", "John", addresses=[])
        sms_template(conn, code="HELLO", text="Hello")
    return client(settings, engine)


def test_a_request_and_its_fate_are_the_callers_own(api, settings, engine):
    crm_id, crm = add_system(engine, "CRM")
    _, other = add_system(engine, "BILLING")
    admin, agent = role_key(engine, "admin"), role_key(engine, "agent")
    made = api.post("/v1/requests", headers=bearer(crm),
                    json={"contact_ref": "C-1", "template_code": "HELLO"})
    assert made.status_code == 202, made.json()
    request_id = made.json()["request_id"]
    unknown = trigger(engine, contact_ref="C-404", template_code="HELLO")  # by SQL, say
    no_phone = trigger(engine, contact_ref="C-2", template_code="HELLO")
    assert run_job("monitor", settings, engine) == 3

    fate = api.get(f"/v1/requests/{request_id}", headers=bearer(crm)).json()
    assert fate["request"]["status"] == "processed"
    assert fate["request"]["requested_by"] == "CRM"
    [entry] = fate["entries"]
    assert (entry["media"], entry["state"], entry["address"]) == ("sms", "Pending",
                                                                  "+35799123456")
    moves = [(e["what"], e["from_state"], e["to_state"]) for e in fate["history"]]
    assert ("request", "awaiting_processing", "processed") in moves
    assert ("entry", None, "awaiting_send") in moves or ("entry", None, "awaiting_merge") in moves
    # Another system, and an agent, do not see it; an admin sees every request.
    assert api.get(f"/v1/requests/{request_id}", headers=bearer(other)).status_code == 404
    assert api.get(f"/v1/requests/{unknown}", headers=bearer(crm)).status_code == 404
    assert api.get(f"/v1/requests/{request_id}", headers=bearer(agent)).status_code == 403
    error = api.get(f"/v1/requests/{unknown}", headers=bearer(admin)).json()["request"]
    assert (error["status"], error["status_code"]) == ("error", "UNKNOWN_CONTACT")
    assert "C-404" in error["status_reason"]

    assert [r["id"] for r in api.get("/v1/requests", headers=bearer(crm)).json()["items"]] \
        == [request_id]
    assert api.get("/v1/requests", headers=bearer(other)).json()["items"] == []
    errors = api.get("/v1/requests", params={"status": "Error"}, headers=bearer(admin)).json()
    assert [r["id"] for r in errors["items"]] == [unknown]
    by_code = api.get("/v1/requests", params={"code": "NO_ADDRESS"},
                      headers=bearer(admin)).json()["items"]
    assert [(r["id"], r["status"]) for r in by_code] == [(no_phone, "not_sent")]
    page = api.get("/v1/requests", params={"limit": 2}, headers=bearer(admin)).json()
    rest = api.get("/v1/requests", params={"limit": 2, "cursor": page["next_cursor"]},
                   headers=bearer(admin)).json()
    assert [r["id"] for r in page["items"] + rest["items"]] == [no_phone, unknown, request_id]
    assert api.get("/v1/requests", params={"status": "lost"},
                   headers=bearer(admin)).status_code == 422


def test_the_agent_sees_what_was_not_sent_and_why(api, settings, engine):
    agent = bearer(role_key(engine, "agent"))
    trigger(engine, contact_ref="C-2", template_code="HELLO")
    trigger(engine, contact_ref="C-2", template_code="NO_SUCH")
    run_job("monitor", settings, engine)
    items = api.get("/v1/contacts/C-2/not-sent", headers=agent).json()["items"]
    assert [(i["status"], i["code"]) for i in items] == [("error", "UNKNOWN_TEMPLATE"),
                                                         ("not_sent", "NO_ADDRESS")]
    assert all(i["reason"] for i in items)
    assert api.get("/v1/contacts/C-1/not-sent", headers=agent).json()["items"] == []
