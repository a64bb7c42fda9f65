"""The Push-to-Handset daemon against an FCM HTTP v1 endpoint on loopback."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from comms_pipeline.daemons.push_handset import PushHandsetDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.details_factory import add_details, details, device_addresses

TOKENS = [f"fcm-token-{i:03d}-" + "x" * 40 for i in range(6)]


@pytest.fixture
def push_env(db_url, tmp_path, make_engine_for, fcm_server):
    def build(**env: str):  # type: ignore[no-untyped-def]
        base = {"COMMS_GATEWAYS_PUSH_BACKEND": "fcm",
                "COMMS_GATEWAYS_PUSH_URL": fcm_server.send_url,
                "COMMS_GATEWAYS_PUSH_ACCESS_TOKEN": fcm_server.access_token,
                "COMMS_GATEWAYS_PUSH_CONCURRENCY": "3"}
        return make_engine_for(db_url, **{**base, **env})

    return build


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    daemon = PushHandsetDaemon(settings, engine)
    assert daemon.name == "push-handset"
    return Runner(settings, engine, daemon, once=True).run()


def add_pushes(engine, tokens=TOKENS) -> list[int]:  # type: ignore[no-untyped-def]
    return add_details(engine, "push", [(t, f"Your order {i} has shipped")
                                        for i, t in enumerate(tokens)],
                       subject="Order update", device_contact=True)


def test_pushes_use_the_fcm_v1_message_format(fcm_server, push_env):
    settings, engine = push_env()
    ids = add_pushes(engine)

    assert run_once(settings, engine) == len(TOKENS)

    assert len(fcm_server.requests) == len(TOKENS)
    assert {r.path for r in fcm_server.requests} == {"/v1/projects/comms-test/messages:send"}
    assert {r.headers["authorization"] for r in fcm_server.requests} == {
        "Bearer test-access-token"}
    sent = {m["token"]: m for m in fcm_server.sent}
    rows = details(engine, ids)
    for row in rows.values():
        message = sent[row["address"]]
        assert message["notification"] == {"title": "Order update", "body": row["body"]}
        assert message["data"]["detail_id"] == str(row["id"])
        assert row["state"] == "completed"
        assert row["gateway_ref"].startswith("projects/comms-test/messages/0:")
    assert len({r["gateway_ref"] for r in rows.values()}) == len(TOKENS)


def test_an_unregistered_token_is_rejected_and_the_address_flagged(fcm_server, push_env):
    settings, engine = push_env()
    fcm_server.unregistered.add(TOKENS[2])
    ids = add_pushes(engine)

    assert run_once(settings, engine) == len(TOKENS)

    rows = details(engine, ids)
    gone = rows[ids[2]]
    assert gone["state"] == "rejected" and gone["error_code"] == "UNREGISTERED"
    assert "Requested entity was not found" in gone["error_description"]
    flags = device_addresses(engine)
    assert flags[TOKENS[2]].startswith("push provider: UNREGISTERED")
    assert [t for t, reason in flags.items() if reason] == [TOKENS[2]]
    assert sum(r["state"] == "completed" for r in rows.values()) == len(TOKENS) - 1


@pytest.mark.parametrize("status", [503, 401])
def test_provider_trouble_is_retried_later(fcm_server, push_env, status):
    settings, engine = push_env(COMMS_GATEWAYS_PUSH_CONCURRENCY="1")
    fcm_server.fail_next(status, times=2, body={"error": {"code": status, "status": "X",
                                                          "message": "try later"}})
    ids = add_pushes(engine, TOKENS[:3])

    assert run_once(settings, engine) == 3

    rows = details(engine, ids)
    deferred = [r for r in rows.values() if r["state"] == "awaiting_send"]
    assert len(deferred) == 2 and {r["error_code"] for r in deferred} == {"X"}
    assert all(r["next_attempt_at"] is not None for r in deferred)
    with engine.begin() as conn:
        conn.execute(update(details_t).values(next_attempt_at=None))
    assert run_once(settings, engine) == 2
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    assert sorted(m["token"] for m in fcm_server.sent) == sorted(TOKENS[:3])
    assert not any(device_addresses(engine).values())


def test_a_client_error_rejects_without_flagging(fcm_server, push_env):
    settings, engine = push_env()
    fcm_server.fail_next(400, body={"error": {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid JSON payload",
        "details": [{"errorCode": "INVALID_ARGUMENT"}]}})
    ids = add_pushes(engine, TOKENS[:1])

    assert run_once(settings, engine) == 1

    row = details(engine, ids)[ids[0]]
    assert row["state"] == "rejected" and row["error_code"] == "INVALID_ARGUMENT"
    assert row["error_description"] == "HTTP 400: Invalid JSON payload"
    assert not any(device_addresses(engine).values())
