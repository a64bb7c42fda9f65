"""Status callbacks: a client system's URL receives the signed events of its communications,
in order, at least once, from the outbox written with each change of state; a loopback
receiver verifies every signature."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.callbacks import CallbacksDaemon
from comms_pipeline.gateways.webhook import new_secret
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.pipeline.callback_endpoints import add_endpoint, list_endpoints
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.callbacks import enqueue_event, forget_endpoints
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.run import run_job, run_stage
from comms_pipeline.store.models import callback_outbox_t, details_t
from tests import factories
from tests.conftest import REPO_CONFIG
from tests.servers.http_gateways import Request, WebhookReceiver

PHONE = "+35799123456"


class SlowReceiver(WebhookReceiver):
    """A receiver that takes a moment per callback, so a daemon can be killed between two."""

    def __init__(self, secret: str, pause: float = 0.0) -> None:
        super().__init__(secret)
        self.pause = pause

    def answer(self, req: Request):  # type: ignore[no-untyped-def]
        if self.pause:
            time.sleep(self.pause)
        return super().answer(req)


@pytest.fixture
def receivers() -> Iterator[tuple[SlowReceiver, SlowReceiver]]:
    mine, other = SlowReceiver(new_secret()), SlowReceiver(new_secret())
    mine.start()
    other.start()
    yield mine, other
    mine.stop()
    other.stop()


@pytest.fixture
def cb_env(db_url, make_engine_for):
    forget_endpoints()

    def build(**env: str):  # type: ignore[no-untyped-def]
        base = {"COMMS_GATEWAYS_WEBHOOK_BACKEND": "http",
                "COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS": "true",
                "COMMS_GATEWAYS_WEBHOOK_TIMEOUT": "5"}
        return make_engine_for(db_url, **{**base, **env})

    yield build
    forget_endpoints()


def setup_systems(engine, mine, other, events="all"):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        factories.contact(conn, phone=PHONE)
        factories.sms_template(conn, text="Your secret code is 4711")
        portal = add_external_system(conn, "PORTAL", "Customer portal")
        crm = add_external_system(conn, "CRM", "Another system")
        add_endpoint(conn, portal, f"{mine.url}/cb", events, secret=mine.secret)
        add_endpoint(conn, crm, f"{other.url}/cb", "all", secret=other.secret)
    return portal, crm


def outbox(engine):  # type: ignore[no-untyped-def]
    o = callback_outbox_t
    with engine.connect() as conn:
        return conn.execute(select(o).order_by(o.c.id)).all()


def run_callbacks(settings, engine) -> Runner:  # type: ignore[no-untyped-def]
    runner = Runner(settings, engine, CallbacksDaemon(settings, engine), once=True)
    runner.run()
    return runner


def events_by_entry(receiver) -> dict[tuple, list[tuple[int, str]]]:  # type: ignore[no-untyped-def]
    """``(request, detail) -> [(sequence, event)]`` in the order received, duplicates (same
    webhook-id, at least once) dropped."""
    seen, out = set(), {}
    for req in receiver.delivered:
        if req.headers["webhook-id"] in seen:
            continue
        seen.add(req.headers["webhook-id"])
        data = req.json()["data"]
        out.setdefault((data["request_id"], data["detail_id"]), []).append(
            (data["sequence"], data["event"]))
    return out


def make_traffic(settings, engine, portal, crm):  # type: ignore[no-untyped-def]
    mine = [trigger(engine, contact_ref="C-1", template_code="SMS_HELLO",
                    requested_by_system_id=portal) for _ in range(3)]
    theirs = trigger(engine, contact_ref="C-1", template_code="SMS_HELLO",
                     requested_by_system_id=crm)
    trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")  # by SQL: no system
    run_job("monitor", settings, engine)
    run_stage("sms", settings, engine, once=True)
    with engine.connect() as conn:
        first = conn.execute(select(details_t.c.id).where(details_t.c.header_id == mine[0])
                             ).scalar_one()
    with engine.begin() as conn:  # as an SMPP receipt would
        enqueue_event(conn, detail_id=first, event="delivered", code="DELIVRD")
    return mine, theirs, first


def test_events_are_written_with_the_change_and_sent_signed_and_in_order(receivers, cb_env):
    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other)
    headers, theirs, first = make_traffic(settings, engine, portal, crm)

    rows = outbox(engine)
    assert {(r.event, r.seq) for r in rows if r.detail_id == first} == {
        ("accepted", 1), ("completed", 2), ("delivered", 3)}
    assert len(rows) == 3 * 2 + 1 + 2  # PORTAL's three entries, the receipt, CRM's one

    runner = run_callbacks(settings, engine)
    assert runner.processed == len(rows)
    assert mine.forged == 0 and other.forged == 0
    got = events_by_entry(mine)
    assert sorted(h for h, _ in got) == sorted(headers)
    for (_, detail_id), seq in got.items():
        expected = [(1, "accepted"), (2, "completed")]
        if detail_id == first:
            expected.append((3, "delivered"))
        assert seq == expected
    assert [(h, [e for _, e in seq]) for (h, _), seq in events_by_entry(other).items()] == [
        (theirs, ["accepted", "completed"])]
    for req in mine.delivered:  # ids, states, codes and timestamps: no body, no address
        assert b"4711" not in req.body and PHONE.encode() not in req.body
        assert b"secret code" not in req.body
        event = req.json()
        assert event["type"] == f"communication.{event['data']['event']}"
        assert event["data"]["external_system"] == "PORTAL"
        assert req.headers["webhook-id"].startswith("msg_comms_callback_")
    completed = [r.json()["data"] for r in mine.delivered
                 if r.json()["data"]["event"] == "completed"]
    assert {c["state"] for c in completed} == {"Completed"}
    assert {r.state for r in outbox(engine)} == {"delivered"}


def test_only_the_events_asked_for_are_written(receivers, cb_env):
    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other, events="completed,rejected")
    make_traffic(settings, engine, portal, crm)
    mine_rows = [r for r in outbox(engine) if r.endpoint_id == 1]
    assert sorted(r.event for r in mine_rows) == ["completed"] * 3


def test_5xx_is_retried_with_the_same_webhook_id_and_the_next_event_waits(receivers,
                                                                         cb_env):
    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other)
    make_traffic(settings, engine, portal, crm)
    mine.fail_next(503, times=2)  # the heads of PORTAL's three entries all fail
    mine.fail_next(429, times=1)

    run_callbacks(settings, engine)
    o = callback_outbox_t
    with engine.connect() as conn:
        waiting = conn.execute(select(o).where(o.c.state == "pending", o.c.attempts > 0)
                               ).all()
    assert sorted(r.error_code for r in waiting) == ["HTTP 429", "HTTP 503", "HTTP 503"]
    assert all(r.next_attempt_at is not None for r in waiting)
    # the failed heads hold back their entries' later events
    blocked = {(r.entry_id) for r in waiting}
    with engine.connect() as conn:
        later = conn.execute(select(o).where(o.c.entry_id.in_(blocked), o.c.state == "pending",
                                             o.c.attempts == 0)).all()
    assert later, "the later events of a failing entry must wait"

    with engine.begin() as conn:
        conn.execute(update(o).values(next_attempt_at=None))
    run_callbacks(settings, engine)
    assert {r.state for r in outbox(engine)} == {"delivered"}
    retried = [r.headers["webhook-id"] for r in mine.requests
               if r.headers["webhook-id"] == f"msg_comms_callback_{waiting[0].id}"]
    assert len(retried) == 2
    for seq in events_by_entry(mine).values():
        assert [s for s, _ in seq] == sorted(s for s, _ in seq)
    with engine.connect() as conn:
        assert list_endpoints(conn)[0].consecutive_failures == 0


def test_an_endpoint_is_disabled_after_a_run_of_failures_and_resumes_when_enabled(
        receivers, cb_env):
    from comms_pipeline.pipeline.callback_endpoints import enable_endpoint

    mine, other = receivers
    settings, engine = cb_env(COMMS_CALLBACKS_DISABLE_AFTER_FAILURES="3",
                              COMMS_DAEMONS_BATCH_SIZE="2")
    portal, crm = setup_systems(engine, mine, other)
    _, _, first = make_traffic(settings, engine, portal, crm)
    mine.fail_next(500, times=50)
    o = callback_outbox_t
    for _ in range(3):
        run_callbacks(settings, engine)
        with engine.begin() as conn:
            conn.execute(update(o).values(next_attempt_at=None))
    with engine.connect() as conn:
        endpoint = list_endpoints(conn)[0]
    assert not endpoint.enabled and endpoint.disabled_at is not None
    assert "3 consecutive callback failures" in (endpoint.disabled_reason or "")
    assert endpoint.pending == 7
    asked = len(mine.requests)
    assert asked == 3
    run_callbacks(settings, engine)
    assert len(mine.requests) == asked  # a disabled endpoint is not called

    forget_endpoints()
    with engine.begin() as conn:  # a change while it is disabled is kept for it
        assert enqueue_event(conn, detail_id=first, event="clicked") == 1
    mine._failures.clear()
    with engine.begin() as conn:
        assert enable_endpoint(conn, endpoint.id)
    run_callbacks(settings, engine)
    assert {r.state for r in outbox(engine)} == {"delivered"}
    assert sum(len(v) for v in events_by_entry(mine).values()) == 8


def test_a_4xx_fails_the_event_at_once_and_the_entry_goes_on(receivers, cb_env):
    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other)
    _, _, first = make_traffic(settings, engine, portal, crm)
    o = callback_outbox_t
    mine.fail_next(410, times=1)
    run_callbacks(settings, engine)
    rows = outbox(engine)
    failed = [r for r in rows if r.state == "failed"]
    assert len(failed) == 1 and failed[0].error_code == "HTTP 410"
    assert "not retried" in failed[0].error_description
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(o)
                            .where(o.c.state == "pending")).scalar_one() == 0


def _daemon_env(settings, var) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(COMMS_CONFIG=str(REPO_CONFIG), COMMS_DATABASE_URL=settings.database_url,
               COMMS_PATHS_VAR=str(var), COMMS_CLAIMS_LEASE_SECONDS="1",
               COMMS_DAEMONS_BATCH_SIZE="1", COMMS_DAEMONS_POLL_INTERVAL="0.1",
               COMMS_DAEMONS_HEARTBEAT_SECONDS="1", COMMS_GATEWAYS_WEBHOOK_BACKEND="http",
               COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS="true")
    return env


def _wait(predicate, limit: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit  # a safety net against hanging, not a timing check
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what}")


def test_events_arrive_in_order_after_the_daemon_is_killed_between_events(receivers, cb_env,
                                                                          tmp_path):
    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other)
    headers, _, _ = make_traffic(settings, engine, portal, crm)
    total = len(outbox(engine))
    mine.pause = other.pause = 0.1
    cmd = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs", "daemon", "run",
           "callbacks"]
    env = _daemon_env(settings, tmp_path / "var")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: len(mine.delivered) + len(other.delivered) >= 3, 60, "three callbacks")
        proc.send_signal(signal.SIGKILL)  # between events, or in the middle of one
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    sent_before = len(mine.requests) + len(other.requests)
    assert 3 <= sent_before < total, "the daemon must die with events still to send"
    mine.pause = other.pause = 0.0

    # The daemon starts again (a new worker) once the killed one's lease has passed.
    o = callback_outbox_t

    def leases_passed() -> bool:
        with engine.connect() as conn:
            return not conn.execute(select(func.count()).select_from(o).where(
                o.c.lease_until > utcnow())).scalar_one()

    _wait(leases_passed, 30, "the killed daemon's lease to pass")
    restarted, _ = cb_env(COMMS_DAEMONS_BATCH_SIZE="1")
    run_callbacks(restarted, engine)
    assert {r.state for r in outbox(engine)} == {"delivered"}
    assert len({r.headers["webhook-id"] for r in mine.delivered + other.delivered}) == total
    assert mine.forged == 0
    got = events_by_entry(mine)
    assert sorted(h for h, _ in got) == sorted(headers)
    for seq in got.values():
        assert [s for s, _ in seq] == list(range(1, len(seq) + 1))
    ids = [json.loads(r.body)["data"]["request_id"] for r in other.delivered]
    assert set(ids).isdisjoint(headers)


def test_a_request_with_no_communication_and_tracking_events_are_told(receivers, cb_env):
    from comms_pipeline.pipeline.tracking import record_open

    mine, other = receivers
    settings, engine = cb_env()
    portal, crm = setup_systems(engine, mine, other)
    with engine.begin() as conn:
        factories.contact(conn, ref="C-2", phone=None)
    nowhere = trigger(engine, contact_ref="C-2", template_code="SMS_HELLO",
                      requested_by_system_id=portal)
    headers, _, first = make_traffic(settings, engine, portal, crm)
    with engine.begin() as conn:
        assert record_open(conn, first, "Mozilla/5.0")
    run_callbacks(settings, engine)
    got = {(r.json()["data"]["request_id"], r.json()["data"]["detail_id"],
            r.json()["data"]["event"]): r.json()["data"] for r in mine.delivered}
    rejected = got[(nowhere, None, "rejected")]
    assert rejected["code"] and rejected["state"] == "not_sent"
    assert [s for s, e in events_by_entry(mine)[(headers[0], first)]] == [1, 2, 3, 4]
    assert events_by_entry(mine)[(headers[0], first)][-1] == (4, "opened")


def test_a_hard_bounce_is_told_as_bounced_after_the_rejection(receivers, cb_env):
    """The feedback loop feeds the callbacks: a hard bounce that turns the entry Rejected
    sends ``rejected`` (the change of state) and ``bounced`` with the DSN status."""
    from comms_pipeline.core.feedback_events import FeedbackEvent
    from comms_pipeline.pipeline.feedback import handle_feedback

    mine, other = receivers
    settings, engine = cb_env()
    with engine.begin() as conn:
        factories.contact(conn, phone=None)
        factories.email_template(conn)
        portal = add_external_system(conn, "PORTAL", "Customer portal")
        add_endpoint(conn, portal, f"{mine.url}/cb", "rejected,bounced", secret=mine.secret)
    header = trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO",
                     requested_by_system_id=portal)
    run_job("monitor", settings, engine)
    with engine.begin() as conn:  # as the Email daemon leaves it once sent
        detail = conn.execute(select(details_t.c.id).where(details_t.c.header_id == header)
                              ).scalar_one()
        conn.execute(update(details_t).where(details_t.c.id == detail)
                     .values(state="completed"))
    with engine.begin() as conn:
        handle_feedback(conn, FeedbackEvent(
            "hard_bounce", detail, None, "maria@example.com", "5.1.1",
            "smtp; 550 5.1.1 user unknown", "smtp", utcnow()))
    run_callbacks(settings, engine)

    got = [(e, r) for (h, d), events in events_by_entry(mine).items() if d == detail
           for e, r in events]
    assert [r for _, r in got] == ["rejected", "bounced"]
    bounced = [r.json()["data"] for r in mine.delivered
               if r.json()["data"]["event"] == "bounced"][0]
    assert bounced["code"] == "5.1.1"
    assert "maria" not in json.dumps(bounced)
