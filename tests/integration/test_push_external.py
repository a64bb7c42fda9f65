"""The Push-to-External daemon: signed webhooks to a receiver on loopback."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.push_external import PushExternalDaemon
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t, systems_t
from tests.integration.details_factory import add_details, details, transitions


@pytest.fixture
def hook_env(db_url, tmp_path, make_engine_for):
    def build(**env: str):  # type: ignore[no-untyped-def]
        base = {"COMMS_GATEWAYS_WEBHOOK_BACKEND": "http",
                "COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS": "true",
                "COMMS_GATEWAYS_WEBHOOK_TIMEOUT": "5"}
        return make_engine_for(db_url, **{**base, **env})

    return build


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    """Entries the daemon worked on: finished, or deferred for a retry."""
    daemon = PushExternalDaemon(settings, engine)
    assert daemon.name == "push-external"
    runner = Runner(settings, engine, daemon, once=True)
    runner.run()
    return runner.processed + runner.retried


def add_system(engine, receiver, code: str = "PORTAL", url: str | None = None) -> int:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return add_external_system(conn, code, "Customer portal",
                                   webhook_url=url or f"{receiver.url}/hooks/comms",
                                   webhook_secret=receiver.secret)


def add_entries(engine, system_id: int, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    return add_details(engine, "sms", [(f"+4477009{i:05d}", f"Your code is {1000 + i}")
                                       for i in range(n)],
                       state="awaiting_external", external_system_id=system_id)


def system(engine, system_id: int):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(systems_t).where(systems_t.c.id == system_id)).one()


def retry_now(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(update(details_t).values(next_attempt_at=None))


def test_entries_are_pushed_signed_and_completed(webhook_receiver, hook_env):
    settings, engine = hook_env()
    system_id = add_system(engine, webhook_receiver)
    ids = add_entries(engine, system_id, 5)
    with engine.begin() as conn:  # an external system that pulls through the Web API
        puller = add_external_system(conn, "PULL", "Provisioning system")
    pulled = add_details(engine, "sms", [("+447700900999", "for a pulling system")],
                         state="awaiting_external", external_system_id=puller)

    assert run_once(settings, engine) == 5

    assert webhook_receiver.forged == 0 and len(webhook_receiver.delivered) == 5
    by_id = {r.headers["webhook-id"]: r for r in webhook_receiver.delivered}
    for detail_id, row in details(engine, ids).items():
        request = by_id[f"msg_comms_detail_{detail_id}"]
        event = json.loads(request.body)
        assert request.path == "/hooks/comms"
        assert event["type"] == "communication.created"
        assert event["data"]["id"] == detail_id and event["data"]["body"] == row["body"]
        assert event["data"]["external_system"] == "PORTAL"
        assert event["data"]["contact_ref"] == "C-1"
        assert row["state"] == "completed" and row["gateway_status"] == "HTTP 204"
        assert transitions(engine, detail_id) == [("awaiting_external", "completed")]
    assert details(engine, pulled)[pulled[0]]["state"] == "awaiting_external"


def test_failures_are_retried_on_a_schedule_with_the_same_webhook_id(webhook_receiver,
                                                                     hook_env):
    settings, engine = hook_env()
    system_id = add_system(engine, webhook_receiver)
    ids = add_entries(engine, system_id, 1)
    webhook_receiver.fail_next(503)
    before = utcnow()

    assert run_once(settings, engine) == 1

    row = details(engine, ids)[ids[0]]
    assert row["state"] == "awaiting_external" and row["error_code"] == "HTTP 503"
    first_delay = settings.gateways.webhook.retry_schedule_seconds[0]
    assert row["next_attempt_at"] >= before + timedelta(seconds=first_delay)
    assert system(engine, system_id).consecutive_failures == 1

    retry_now(engine)
    assert run_once(settings, engine) == 1
    row = details(engine, ids)[ids[0]]
    assert row["state"] == "completed" and row["error_code"] is None
    ids_seen = [r.headers["webhook-id"] for r in webhook_receiver.requests]
    assert ids_seen == [f"msg_comms_detail_{ids[0]}"] * 2
    assert system(engine, system_id).consecutive_failures == 0


def test_the_schedule_spans_hours_and_the_last_attempt_rejects(webhook_receiver, hook_env):
    settings, engine = hook_env(COMMS_CLAIMS_MAX_ATTEMPTS="3")
    schedule = settings.gateways.webhook.retry_schedule_seconds
    assert sum(schedule) >= 5 * 3600
    system_id = add_system(engine, webhook_receiver)
    ids = add_entries(engine, system_id, 1)
    webhook_receiver.fail_next(500, times=3)

    delays = []
    for _ in range(3):
        started = utcnow()
        assert run_once(settings, engine) == 1
        row = details(engine, ids)[ids[0]]
        if row["next_attempt_at"] is not None and row["state"] == "awaiting_external":
            delays.append((row["next_attempt_at"] - started).total_seconds())
        retry_now(engine)

    assert [round(d, -1) for d in delays] == [round(s, -1) for s in schedule[:2]]
    row = details(engine, ids)[ids[0]]
    assert row["state"] == "rejected" and row["error_code"] == "HTTP 500"
    assert "gave up after 3 attempts" in row["error_description"]


def test_an_endpoint_is_disabled_after_a_run_of_failures(webhook_receiver, hook_env):
    settings, engine = hook_env(COMMS_GATEWAYS_WEBHOOK_DISABLE_AFTER_FAILURES="4",
                                COMMS_DAEMONS_BATCH_SIZE="3")
    system_id = add_system(engine, webhook_receiver)
    ids = add_entries(engine, system_id, 6)
    webhook_receiver.fail_next(502, times=100)

    assert run_once(settings, engine) == 6  # two batches of three

    s = system(engine, system_id)
    assert s.enabled is False or s.enabled == 0
    assert s.consecutive_failures == 6
    assert s.disabled_reason.startswith("disabled after 6 consecutive webhook failures")
    assert "HTTP 502" in s.disabled_reason
    with engine.connect() as conn:  # the daemon's change is in the audit log
        (entry,) = audit.list_entries(conn, actor="daemon:push-external")
    assert (entry["action"], entry["change"]["enabled"]) == (
        "external_system.disable", {"before": True, "after": False})
    retry_now(engine)
    assert run_once(settings, engine) == 0  # a disabled endpoint's entries wait
    assert {r["state"] for r in details(engine, ids).values()} == {"awaiting_external"}


def test_loopback_targets_are_refused_unless_allowed(webhook_receiver, hook_env):
    settings, engine = hook_env(COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS="false")
    system_id = add_system(engine, webhook_receiver)
    ids = add_entries(engine, system_id, 2)

    assert run_once(settings, engine) == 0  # released, not processed

    assert webhook_receiver.requests == []
    s = system(engine, system_id)
    assert not s.enabled and "loopback address 127.0.0.1" in s.disabled_reason
    for row in details(engine, ids).values():
        assert row["state"] == "awaiting_external" and row["claimed_by"] is None
        assert row["attempts"] == 0


@pytest.mark.parametrize("secret,code", [("whsec_not base64!", "BAD_SECRET"),
                                         (None, "NO_SECRET")])
def test_an_unusable_secret_disables_the_endpoint(webhook_receiver, hook_env, secret, code):
    settings, engine = hook_env()
    with engine.begin() as conn:
        system_id = add_external_system(conn, "PORTAL", "Customer portal",
                                        webhook_url=f"{webhook_receiver.url}/hooks",
                                        webhook_secret=secret)
    ids = add_entries(engine, system_id, 2)

    assert run_once(settings, engine) == 0

    assert webhook_receiver.requests == []
    s = system(engine, system_id)
    assert not s.enabled and s.disabled_reason.startswith(code)
    assert {r["state"] for r in details(engine, ids).values()} == {"awaiting_external"}


def test_a_disabled_external_server_is_named_in_the_refusal(webhook_receiver, hook_env):
    """The rule checked is the push-external daemon's (media external), and so is the name
    in SPEC's message, whatever the entry's own media."""
    from comms_pipeline.pipeline.admin_records import set_media

    settings, engine = hook_env()
    system_id = add_system(engine, webhook_receiver)
    [entry] = add_entries(engine, system_id, 1)  # an SMS entry for the external system
    with engine.begin() as conn:
        set_media(conn, "external", enabled=False)
    run_once(settings, engine)
    row = details(engine, [entry])[entry]
    assert (row["state"], row["error_code"], row["error_description"]) == (
        "rejected", "SERVER_NOT_ENABLED", "External Server not Enabled")
