"""The SMS daemon through a CM.com-style JSON gateway on loopback."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.details_factory import add_details, details
from tests.servers.smtp import free_port


@pytest.fixture
def http_env(db_url, tmp_path, make_engine_for, sms_gateway):
    def build(**env: str):  # type: ignore[no-untyped-def]
        base = {"COMMS_GATEWAYS_SMS_BACKEND": "http",
                "COMMS_GATEWAYS_SMS_URL": f"{sms_gateway.url}/v1.0/message",
                "COMMS_GATEWAYS_SMS_API_KEY": sms_gateway.token,
                "COMMS_GATEWAYS_SMS_HTTP_BATCH_SIZE": "4", "COMMS_GATEWAYS_SMS_TIMEOUT": "5"}
        return make_engine_for(db_url, **{**base, **env})

    return build


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    return Runner(settings, engine, SmsDaemon(settings, engine), once=True).run()


def targets(n: int) -> list[tuple[str, str]]:
    return [(f"+4477009{i:05d}", f"Text {i}") for i in range(n)]


def retry_now(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(update(details_t).values(next_attempt_at=None))


def test_messages_are_posted_in_batches_with_the_token(sms_gateway, http_env):
    settings, engine = http_env()
    ids = add_details(engine, "sms", targets(10))

    assert run_once(settings, engine) == 10

    assert [len(r.json()["messages"]["msg"]) for r in sms_gateway.requests] == [4, 4, 2]
    first = sms_gateway.requests[0]
    assert first.path == "/v1.0/message"
    assert first.headers["x-cm-producttoken"] == sms_gateway.token
    msg = first.json()["messages"]["msg"][0]
    assert msg["from"] == settings.gateways.sms.source_addr
    assert msg["to"] == [{"number": "+447700900000"}]
    assert msg["body"] == {"type": "auto", "content": "Text 0"}
    for detail_id, row in details(engine, ids).items():
        assert row["state"] == "completed"
        assert row["gateway_ref"] == f"comms-{detail_id}" and row["gateway_status"] == "Accepted"
    assert len(sms_gateway.accepted) == 10


@pytest.mark.parametrize("status", [503, 429])
def test_server_errors_are_retried_later_and_sent_once(sms_gateway, http_env, status):
    settings, engine = http_env()
    sms_gateway.fail_next(status, body={"details": "maintenance", "errorCode": 999})
    ids = add_details(engine, "sms", targets(3))

    assert run_once(settings, engine) == 3

    rows = details(engine, ids)
    assert {r["state"] for r in rows.values()} == {"awaiting_send"}
    assert {(r["error_code"], r["error_description"]) for r in rows.values()} == {
        (f"HTTP {status}", "maintenance")}
    assert all(r["next_attempt_at"] is not None for r in rows.values())

    retry_now(engine)
    assert run_once(settings, engine) == 3
    rows = details(engine, ids)
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert {r["error_code"] for r in rows.values()} == {None}
    assert sorted(m["reference"] for m in sms_gateway.accepted) == sorted(
        f"comms-{i}" for i in ids)


def test_refused_messages_are_rejected_with_the_gateways_words(sms_gateway, http_env):
    settings, engine = http_env()
    sms_gateway.reject_numbers["+447700900001"] = (303, "Invalid recipient")
    ids = add_details(engine, "sms", targets(3))

    assert run_once(settings, engine) == 3

    rows = details(engine, ids)
    assert rows[ids[1]]["state"] == "rejected"
    assert rows[ids[1]]["error_code"] == "HTTP 400 / 303"
    assert rows[ids[1]]["error_description"] == "Invalid recipient"
    assert rows[ids[0]]["state"] == rows[ids[2]]["state"] == "completed"


def test_a_bad_token_keeps_the_messages_for_a_retry_with_the_status_and_message(
        sms_gateway, http_env):
    """A wrong product token is the operator's problem, not the messages': nothing is
    rejected for it; each entry shows the gateway's answer and waits for its retry."""
    settings, engine = http_env(COMMS_GATEWAYS_SMS_API_KEY="wrong")
    ids = add_details(engine, "sms", targets(2))

    assert run_once(settings, engine) == 2

    for row in details(engine, ids).values():
        assert row["state"] == "awaiting_send" and row["error_code"] == "HTTP 401"
        assert row["error_description"] == "No account found for the given authentication"
        assert row["next_attempt_at"] is not None


def test_an_unreachable_gateway_is_transient(http_env):
    port = free_port()  # a port with nothing listening: there is no server to bind port 0
    settings, engine = http_env(COMMS_GATEWAYS_SMS_URL=f"http://127.0.0.1:{port}/v1.0/message")
    ids = add_details(engine, "sms", targets(2))

    assert run_once(settings, engine) == 2

    for row in details(engine, ids).values():
        assert row["state"] == "awaiting_send" and row["error_code"] == "HTTP_ERROR"
