"""Test API keys: their communications go through the whole pipeline to the simulator, and
never to the real (loopback) SMTP server or SMSC; live keys' never reach the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.apikeys import create_system_key
from comms_pipeline.pipeline.quotas import set_limits
from comms_pipeline.queue.runner import Runner
from comms_pipeline.queue.status import pipeline_status
from comms_pipeline.runtime.registry import build_job
from comms_pipeline.store.models import details_t, headers_t, transitions_t
from tests.integration.web_support import add_system, bearer, client

SIM = "simulator.comms.test"
OUTCOMES = ("delivered", "tempfail-then-ok", "permfail", "bounce", "complaint")
#: What each reserved target ends as: (state, error code).
EXPECTED = {"delivered": ("completed", None), "tempfail-then-ok": ("completed", None),
            "permfail": ("rejected", "SIM_PERMFAIL"), "bounce": ("rejected", "BOUNCED"),
            "complaint": ("completed", "COMPLAINED")}
LIVE_PHONE = "+35799123456"


@pytest.fixture
def pipeline(db_url, make_engine_for, smtp_server, smsc):  # type: ignore[no-untyped-def]
    settings, engine = make_engine_for(
        db_url, COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
        COMMS_GATEWAYS_SMS_TIMEOUT="5", **smtp_server.env())
    with engine.begin() as conn:
        add_contact(conn, "C-SIM", "Sim Tester", language="en", addresses=[
            *(AddressSpec("email", f"{o}@{SIM}", is_primary=i == 0)
              for i, o in enumerate(OUTCOMES)),
            *(AddressSpec("phone", f"+44770090000{i + 1}", "mobile", is_primary=i == 0)
              for i in range(len(OUTCOMES)))])
        add_contact(conn, "C-LIVE", "Live Person", language="en", addresses=[
            AddressSpec("email", "live@example.com", is_primary=True),
            AddressSpec("phone", LIVE_PHONE, "mobile", is_primary=True)])
        for code, media, body in (("T-MAIL", "email", "<p>Hello #contact_information.name</p>"),
                                  ("T-SMS", "sms", None)):
            save_template(conn, TemplateSpec(code, code, media, variants=[VariantSpec(
                "en", "Hello", body, "Hello #contact_information.name")]))
    system_id, live_key = add_system(engine, "PORTAL")
    with engine.begin() as conn:
        test_key = create_system_key(conn, "PORTAL", kind="test").key
    return settings, engine, system_id, live_key, test_key


def _request(api, key: str, contact: str, template: str) -> Any:  # type: ignore[no-untyped-def]
    return api.post("/v1/requests", headers=bearer(key),
                    json={"contact_ref": contact, "template_code": template, "send_to": "all"})


def _run_all(settings, engine) -> None:  # type: ignore[no-untyped-def]
    for job in ("monitor", "email-monitor"):
        Runner(settings, engine, build_job(job, settings, engine), once=True).run()
    for daemon in (EmailDaemon, SmsDaemon):
        Runner(settings, engine, daemon(settings, engine), once=True).run()


def _entries(engine) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(details_t).order_by(details_t.c.id))
                .mappings()]


def test_test_key_reaches_only_the_simulator_and_live_key_only_the_gateways(
        pipeline, smtp_server, smsc):
    settings, engine, _, live_key, test_key = pipeline
    api = client(settings, engine)
    made = {}
    for key, contact in ((test_key, "C-SIM"), (live_key, "C-LIVE")):
        for template in ("T-MAIL", "T-SMS"):
            accepted = _request(api, key, contact, template)
            assert accepted.status_code == 202
            made[accepted.json()["request_id"]] = key == test_key

    _run_all(settings, engine)

    entries = _entries(engine)
    test = [e for e in entries if e["is_test"]]
    live = [e for e in entries if not e["is_test"]]
    assert len(test) == 10 and len(live) == 2
    # Nothing of the test key's reached the loopback SMTP server or SMSC; the live key's did.
    assert [m.rcpt_tos for m in smtp_server.messages] == [("live@example.com",)]
    assert [m.destination.lstrip("+") for m in smsc.messages()] == [LIVE_PHONE.lstrip("+")]
    for e in live:
        assert e["state"] == "completed" and not (e["gateway_ref"] or "").startswith("sim-")
    # Every reserved target ends as documented, through the real pipeline's states.
    for e in test:
        outcome = (e["address"].split("@")[0] if e["media"] == "email"
                   else OUTCOMES[int(e["address"][-1]) - 1])
        assert (e["state"], e["error_code"]) == EXPECTED[outcome], (outcome, e)
        if e["state"] == "completed":
            assert e["gateway_ref"] == f"sim-{e['media']}-{e['id']}"
    tempfail = [e["id"] for e in test if e["address"] in (f"tempfail-then-ok@{SIM}",
                                                         "+447700900002")]
    with engine.connect() as conn:
        headers = conn.execute(select(headers_t.c.is_test, headers_t.c.requested_by_system_id)
                               ).all()
        history = conn.execute(select(transitions_t.c.row_id, transitions_t.c.to_state)
                               .where(transitions_t.c.kind == "detail",
                                      transitions_t.c.row_id.in_(tempfail))).all()
    assert sorted(h.is_test for h in headers) == [False, False, True, True]
    for detail_id in tempfail:  # merged (email), then sent: the retry stays in awaiting_send
        assert [s for i, s in history if i == detail_id][-1] == "completed"
    # The request's fate says it was a test.
    for request_id, is_test in made.items():
        fate = api.get(f"/v1/requests/{request_id}", headers=bearer(live_key)).json()
        assert fate["request"]["is_test"] is is_test
    # Reports leave test traffic out (and say how much there is).
    status = pipeline_status(engine)
    assert status["details_total"] == 2 and status["test_details"] == 10
    assert status["headers_total"] == 2


def test_quotas_and_rates_ignore_test_traffic(pipeline):
    settings, engine, system_id, live_key, test_key = pipeline
    with engine.begin() as conn:
        set_limits(conn, system_id=system_id, rate=1000, daily={"email": 1})
    api = client(settings, engine)
    body = {"contact_ref": "C-LIVE", "template_code": "T-MAIL", "idempotency_key": "bill-7"}
    first = api.post("/v1/requests", headers=bearer(live_key), json=body)
    again = api.post("/v1/requests", headers=bearer(live_key), json=body)  # not counted again
    assert first.status_code == again.status_code == 202
    assert first.json()["request_id"] == again.json()["request_id"]
    refused = _request(api, live_key, "C-LIVE", "T-MAIL")
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert "daily limit of 1 email" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # The SMS quota is not the email one, and a test key is not held by either.
    assert _request(api, live_key, "C-LIVE", "T-SMS").status_code == 202
    for _ in range(3):
        assert _request(api, test_key, "C-SIM", "T-MAIL").status_code == 202
    with engine.connect() as conn:
        assert conn.execute(select(headers_t.c.is_test)).scalars().all().count(True) == 3
