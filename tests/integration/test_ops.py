"""Operations on both backends: expiry sweep, status counts, scheduler wiring, queue
retry/cancel, daemons' graceful stop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.core.clock import utcnow
from comms_pipeline.queue.runner import Runner
from comms_pipeline.queue.status import pipeline_status
from comms_pipeline.runtime.registry import build_daemon
from comms_pipeline.runtime.run import run_job
from comms_pipeline.runtime.scheduler import build_scheduler
from comms_pipeline.store.models import details_t
from tests import factories


def _seed(engine, n=4):
    with engine.begin() as conn:
        cid = factories.contact(conn)
        factories.bulk_sms_details(conn, n, cid)


def _states(engine):
    with engine.connect() as conn:
        return [r.state for r in conn.execute(select(details_t.c.state).order_by(details_t.c.id))]


def test_expiry_sweep_expires_only_what_is_past(engine, settings):
    _seed(engine, 3)
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == 1)
                     .values(expires_at=utcnow() - timedelta(minutes=1)))
        conn.execute(update(details_t).where(details_t.c.id == 2)
                     .values(expires_at=utcnow() + timedelta(days=1)))
    assert run_job("expiry-sweep", settings, engine) == 1
    assert _states(engine) == ["expired", "awaiting_send", "awaiting_send"]
    with engine.connect() as conn:
        row = conn.execute(select(details_t).where(details_t.c.id == 1)).one()
    assert row.error_code == "EXPIRED" and "expired at" in row.error_description


def test_daemon_does_not_send_expired_entries(engine, settings):
    _seed(engine, 2)
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == 1)
                     .values(expires_at=utcnow() - timedelta(minutes=1)))
    Runner(settings, engine, build_daemon("sms", settings, engine), once=True).run()
    assert _states(engine) == ["expired", "completed"]
    sent = list((settings.var_dir / "out" / "sms").glob("*.jsonl"))
    assert len(sent[0].read_text().splitlines()) == 1


def test_status_counts_every_public_state(engine, settings):
    _seed(engine, 3)
    run_job("monitor", settings, engine)
    Runner(settings, engine, build_daemon("sms", settings, engine), once=True,
           batch_size=2).run_batch()
    data = pipeline_status(engine)
    assert data["details"] == {"Pending": 1, "Rejected": 0, "Completed": 2,
                               "Completed and Removed": 0, "Expired": 0}
    assert data["backlog"]["sms"] == 1
    assert set(data["headers"]) >= {"awaiting_processing", "processed", "error", "not_sent",
                                    "opted_out", "cancelled", "awaiting_event_resolution"}


def test_graceful_stop_releases_the_unsent_batch(engine, settings):
    _seed(engine, 5)
    runner = Runner(settings, engine, build_daemon("sms", settings, engine), batch_size=5)
    runner.stop_event.set()  # SIGTERM arrived while the batch was claimed
    runner.run_batch()
    assert _states(engine) == ["awaiting_send"] * 5
    with engine.connect() as conn:
        rows = conn.execute(select(details_t.c.claimed_by, details_t.c.attempts)).all()
    assert {(r.claimed_by, r.attempts) for r in rows} == {(None, 0)}


def test_scheduler_schedules_the_configured_jobs(settings, engine):
    settings.scheduler.jobs = {"monitor": "*/2 * * * *", "email-monitor": ""}
    jobs = build_scheduler(settings, engine).get_jobs()
    assert [j.id for j in jobs] == ["monitor", "refresh-notification-types"]
    settings.scheduler.jobs = {"nope": "* * * * *"}
    with pytest.raises(ValueError, match="nope"):
        build_scheduler(settings, engine)


def _invoke(settings, *args):
    app = AppContext()
    app._settings = settings
    return CliRunner().invoke(cli, list(args), obj=app, catch_exceptions=False)


def test_queue_cancel_and_retry(engine, settings):
    _seed(engine, 2)
    out = _invoke(settings, "queue", "cancel", "1", "2")
    assert "2 cancelled" in out.output
    with engine.connect() as conn:
        rows = conn.execute(select(details_t.c.state, details_t.c.error_code)).all()
    assert set(rows) == {("rejected", "CANCELLED")}
    assert "2 entries queued again" in _invoke(settings, "queue", "retry", "1", "2").output
    assert _states(engine) == ["awaiting_send", "awaiting_send"]
    assert "not Rejected or Expired" in _invoke(settings, "queue", "retry", "1").output


def test_gateway_refusal_rejects_and_transient_failure_retries(engine, settings):
    from comms_pipeline.testing import FakeSender

    _seed(engine, 3)
    settings.claims.backoff_base_seconds = 0
    settings.claims.max_attempts = 2
    daemon = build_daemon("sms", settings, engine)
    daemon.sender = FakeSender()
    daemon.sender.fail("+35799000001", "0x0000000B", "ESME_RINVDSTADR")
    daemon.sender.fail("+35799000002", "0x00000058", "ESME_RTHROTTLED", transient=True)
    Runner(settings, engine, daemon, once=True).run()
    with engine.connect() as conn:
        rows = conn.execute(select(details_t.c.state, details_t.c.error_code,
                                   details_t.c.error_description, details_t.c.attempts)
                            .order_by(details_t.c.id)).all()
    assert rows[0][:2] == ("completed", None)
    assert rows[1][:3] == ("rejected", "0x0000000B", "ESME_RINVDSTADR")
    assert rows[2][:2] == ("rejected", "0x00000058")
    assert "gave up after 2 attempts" in rows[2][2] and rows[2][3] == 2
