"""Callback endpoints over the Web API: a system registers its own URL with its key, sees and
removes only its own; its requests' events then reach that URL, signed with the secret the
API answered once."""

from __future__ import annotations

import pytest

from comms_pipeline.daemons.callbacks import CallbacksDaemon
from comms_pipeline.queue.callbacks import forget_endpoints
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.run import run_job
from tests import factories
from tests.integration.web_support import add_system, bearer, client, role_key
from tests.servers.http_gateways import WebhookReceiver


@pytest.fixture
def web_env(db_url, make_engine_for):
    forget_endpoints()
    settings, engine = make_engine_for(
        db_url, COMMS_GATEWAYS_WEBHOOK_BACKEND="http",
        COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS="true")
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
    yield settings, engine, client(settings, engine)
    forget_endpoints()


def test_a_system_registers_its_callback_and_receives_its_events(web_env):
    settings, engine, api = web_env
    _, portal_key = add_system(engine, "PORTAL")
    _, crm_key = add_system(engine, "CRM")
    receiver = WebhookReceiver(secret="unset")
    receiver.start()
    try:
        r = api.post("/v1/callbacks", headers=bearer(portal_key),
                     json={"url": f"{receiver.url}/cb", "events": ["accepted", "completed"]})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["system"] == "PORTAL" and made["events"] == ["accepted", "completed"]
        assert made["secret"].startswith("whsec_") and made["enabled"] is True
        receiver.secret = made["secret"]

        listed = api.get("/v1/callbacks", headers=bearer(portal_key)).json()
        assert [e["id"] for e in listed] == [made["id"]] and "secret" not in listed[0]
        assert api.get("/v1/callbacks", headers=bearer(crm_key)).json() == []
        gone = api.delete(f"/v1/callbacks/{made['id']}", headers=bearer(crm_key))
        assert gone.status_code == 404  # another system's endpoint does not exist for CRM

        sent = api.post("/v1/requests", headers=bearer(portal_key),
                        json={"contact_ref": "C-1", "template_code": "SMS_HELLO"})
        assert sent.status_code == 202, sent.text
        request_id = sent.json()["request_id"]
        api.post("/v1/requests", headers=bearer(crm_key),
                 json={"contact_ref": "C-1", "template_code": "SMS_HELLO"})
        run_job("monitor", settings, engine)
        run_job("monitor", settings, engine)
        from comms_pipeline.runtime.run import run_stage

        run_stage("sms", settings, engine, once=True)
        Runner(settings, engine, CallbacksDaemon(settings, engine), once=True).run()

        assert receiver.forged == 0
        got = [(r.json()["data"]["request_id"], r.json()["data"]["event"])
               for r in receiver.delivered]
        assert got == [(request_id, "accepted"), (request_id, "completed")]

        assert api.delete(f"/v1/callbacks/{made['id']}",
                          headers=bearer(portal_key)).status_code == 204
        assert api.get("/v1/callbacks", headers=bearer(portal_key)).json() == []
    finally:
        receiver.stop()


def test_registration_is_checked(web_env):
    _, engine, api = web_env
    _, key = add_system(engine, "PORTAL")
    admin = role_key(engine, "admin")
    agent = role_key(engine, "agent")
    r = api.post("/v1/callbacks", headers=bearer(key),
                 json={"url": "https://portal.example/cb", "events": ["sent"]})
    assert r.status_code == 422 and "unknown callback event" in r.json()["message"]
    r = api.post("/v1/callbacks", headers=bearer(key), json={"url": "ftp://x/cb"})
    assert r.status_code == 422
    r = api.post("/v1/callbacks", headers=bearer(key),
                 json={"url": "https://portal.example/cb", "system": "CRM"})
    assert r.status_code == 422  # a system's key registers for itself only
    assert api.post("/v1/callbacks", headers=bearer(agent),
                    json={"url": "https://portal.example/cb"}).status_code == 403
    r = api.post("/v1/callbacks", headers=bearer(admin),
                 json={"url": "https://portal.example/cb"})
    assert r.status_code == 422 and "names the external system" in r.json()["message"]
    r = api.post("/v1/callbacks", headers=bearer(admin),
                 json={"url": "https://portal.example/cb", "system": "PORTAL"})
    assert r.status_code == 201 and r.json()["events"][0] == "accepted"
    assert [e["system"] for e in api.get("/v1/callbacks", headers=bearer(admin)).json()] == [
        "PORTAL"]
    assert len(api.get("/v1/callbacks", headers=bearer(key)).json()) == 1


def test_events_arrive_in_order_after_the_api_is_killed_and_restarted(db_url, tmp_path,
                                                                      make_engine_for):
    """The Done-when of issue 14: a system registers its callback and makes requests over an
    API process that is SIGKILLed mid-way and started again; the events of every request
    were written with its changes (the outbox), so all arrive, signed, in order."""
    import multiprocessing
    import os
    import signal

    import httpx

    from comms_pipeline.runtime.run import run_stage
    from tests.integration.test_web_limits import _serve

    forget_endpoints()
    settings, engine = make_engine_for(
        db_url, COMMS_GATEWAYS_WEBHOOK_BACKEND="http",
        COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS="true")
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
    _, key = add_system(engine, "PORTAL")
    ctx = multiprocessing.get_context("fork")

    def api_process(n: int):  # type: ignore[no-untyped-def]
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(db_url, str(tmp_path / f"var{n}"), theirs),
                           daemon=True)
        proc.start()
        assert ours.poll(60), "the API process did not start"
        return proc, f"http://127.0.0.1:{ours.recv()}"

    receiver = WebhookReceiver(secret="unset")
    receiver.start()
    requests = []
    try:
        first, base = api_process(1)
        with httpx.Client(timeout=20) as http:
            made = http.post(f"{base}/v1/callbacks", headers=bearer(key), json={
                "url": f"{receiver.url}/cb", "events": ["accepted", "completed"]}).json()
            receiver.secret = made["secret"]
            r = http.post(f"{base}/v1/requests", headers=bearer(key),
                          json={"contact_ref": "C-1", "template_code": "SMS_HELLO"})
            requests.append(r.json()["request_id"])
            run_job("monitor", settings, engine)  # the first request's entry is born
            os.kill(first.pid, signal.SIGKILL)  # the API dies mid-way
            first.join(20)
            second, base = api_process(2)
            r = http.post(f"{base}/v1/requests", headers=bearer(key),
                          json={"contact_ref": "C-1", "template_code": "SMS_HELLO"})
            requests.append(r.json()["request_id"])
            second.terminate()
            second.join(20)
            if second.is_alive():
                second.kill()
        run_job("monitor", settings, engine)
        run_stage("sms", settings, engine, once=True)
        Runner(settings, engine, CallbacksDaemon(settings, engine), once=True).run()
    finally:
        receiver.stop()
        forget_endpoints()

    assert receiver.forged == 0
    got: dict[int, list[tuple[int, str]]] = {}
    for req in receiver.delivered:
        data = req.json()["data"]
        got.setdefault(data["request_id"], []).append((data["sequence"], data["event"]))
    assert got == {rid: [(1, "accepted"), (2, "completed")] for rid in requests}
