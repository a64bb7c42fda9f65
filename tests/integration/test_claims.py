"""The shared claim mechanism on SQLite and PostgreSQL: disjoint claims, leases, takeover,
compare-and-set finishing, retries with backoff, graceful release, transition history."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from comms_pipeline.core.states import DetailState, ErrorCode
from comms_pipeline.queue.claims import Claimer, Outcome
from comms_pipeline.queue.retry import ExponentialBackoff
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.store.models import details_t, transitions_t
from tests import factories


def _setup(engine, n=10):
    with engine.begin() as conn:
        cid = factories.contact(conn)
        factories.bulk_sms_details(conn, n, cid)


def _states(engine):
    with engine.connect() as conn:
        return dict(conn.execute(select(details_t.c.id, details_t.c.state)).all())


def test_two_workers_claim_disjoint_batches(engine, settings):
    _setup(engine, 10)
    queue = detail_queue("sms")
    a = Claimer(engine, "a", settings.claims).claim(queue, 6)
    b = Claimer(engine, "b", settings.claims).claim(queue, 6)
    assert len(a) == 6 and len(b) == 4
    assert not {r.id for r in a} & {r.id for r in b}
    assert Claimer(engine, "c", settings.claims).claim(queue, 6) == []


def test_expired_lease_is_taken_over_and_late_completion_refused(engine, settings):
    _setup(engine, 3)
    queue = detail_queue("sms")
    settings.claims.lease_seconds = 0.2
    dead = Claimer(engine, "dead", settings.claims)
    taken = dead.claim(queue, 3)
    assert len(taken) == 3
    time.sleep(0.3)
    alive = Claimer(engine, "alive", settings.claims)
    again = alive.claim(queue, 3)
    assert {r.id for r in again} == {r.id for r in taken}
    assert all(r.attempts == 2 for r in again)
    refused = dead.finish(queue, [Outcome.done(r.id, DetailState.COMPLETED) for r in taken])
    assert refused == {r.id for r in taken}
    assert set(_states(engine).values()) == {DetailState.AWAITING_SEND}
    assert alive.finish(queue, [Outcome.done(r.id, DetailState.COMPLETED) for r in again]) == set()
    assert set(_states(engine).values()) == {DetailState.COMPLETED}


def test_retry_backs_off_then_fails_for_good(engine, settings):
    _setup(engine, 1)
    queue = detail_queue("sms")
    settings.claims.max_attempts = 3
    settings.claims.backoff_base_seconds = 0
    worker = Claimer(engine, "w", settings.claims)
    for attempt in range(1, 4):
        (row,) = worker.claim(queue, 1)
        assert row.attempts == attempt
        worker.finish(queue, [Outcome.retry(row.id, "421", "try later")])
    with engine.connect() as conn:
        row = conn.execute(select(details_t)).one()
    assert row.state == DetailState.REJECTED
    assert row.error_code == "421"
    assert "gave up after 3 attempts" in row.error_description


def test_backoff_is_exponential_and_capped(settings):
    settings.claims.backoff_base_seconds = 2
    settings.claims.backoff_max_seconds = 10
    settings.claims.max_attempts = 6
    policy = ExponentialBackoff.from_settings(settings.claims)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 10, 10, None]


def test_retry_waits_for_its_backoff(engine, settings):
    _setup(engine, 1)
    queue = detail_queue("sms")
    settings.claims.backoff_base_seconds = 3600
    worker = Claimer(engine, "w", settings.claims)
    (row,) = worker.claim(queue, 1)
    worker.finish(queue, [Outcome.retry(row.id, "421", "busy")])
    assert worker.claim(queue, 1) == []
    with engine.begin() as conn:
        conn.execute(update(details_t).values(next_attempt_at=None))
    assert len(worker.claim(queue, 1)) == 1


def test_release_gives_rows_back_without_spending_an_attempt(engine, settings):
    _setup(engine, 2)
    queue = detail_queue("sms")
    worker = Claimer(engine, "w", settings.claims)
    rows = worker.claim(queue, 2)
    worker.finish(queue, [Outcome.release(r.id) for r in rows])
    again = Claimer(engine, "v", settings.claims).claim(queue, 2)
    assert [r.attempts for r in again] == [1, 1]


def test_rows_whose_claimants_keep_dying_are_failed(engine, settings):
    _setup(engine, 1)
    queue = detail_queue("sms")
    settings.claims.max_attempts = 2
    settings.claims.lease_seconds = 0.05
    for name in ("a", "b"):
        assert len(Claimer(engine, name, settings.claims).claim(queue, 1)) == 1
        time.sleep(0.1)
    assert Claimer(engine, "c", settings.claims).claim(queue, 1) == []
    with engine.connect() as conn:
        row = conn.execute(select(details_t)).one()
    assert (row.state, row.error_code) == (DetailState.REJECTED, ErrorCode.MAX_ATTEMPTS)


def test_every_transition_is_recorded(engine, settings):
    _setup(engine, 2)
    queue = detail_queue("sms")
    worker = Claimer(engine, "w", settings.claims)
    a, b = worker.claim(queue, 2)
    worker.finish(queue, [Outcome.done(a.id, DetailState.COMPLETED),
                          Outcome.done(b.id, DetailState.REJECTED, "X1", "bad")])
    with engine.connect() as conn:
        rows = conn.execute(select(transitions_t).order_by(transitions_t.c.row_id)).all()
        b_row = conn.execute(select(details_t).where(details_t.c.id == b.id)).one()
    assert [(r.row_id, r.from_state, r.to_state, r.actor) for r in rows] == [
        (a.id, "awaiting_send", "completed", "w"), (b.id, "awaiting_send", "rejected", "w")]
    assert rows[1].code == "X1" and rows[1].at is not None
    assert (b_row.error_code, b_row.error_description) == ("X1", "bad")


def test_a_bulk_loaded_queue_is_analyzed_before_it_is_claimed_from(pg_url, make_engine_for,
                                                                    monkeypatch):
    """Stale statistics make the planner sort the whole backlog at every claim: a claimer
    refreshes them when more rows changed since the last ANALYZE than the rule allows."""
    from sqlalchemy import text

    from comms_pipeline.store import dialect

    monkeypatch.setattr(dialect, "STALE_MIN_CHANGES", 50)
    settings, engine = make_engine_for(pg_url)
    _setup(engine, 120)

    def last_analyze():
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_force_next_flush()"))
            return conn.execute(text(
                "SELECT last_analyze FROM pg_stat_user_tables "
                "WHERE relname = 'request_details'")).scalar_one()

    assert last_analyze() is None
    claimer = Claimer(engine, "w1", settings.claims)
    assert len(claimer.claim(detail_queue("sms"), 10)) == 10
    assert last_analyze() is not None
    with engine.begin() as conn:  # fresh statistics: nothing to do
        assert dialect.analyze_if_stale(conn, details_t) is False


def test_a_slow_batch_keeps_its_lease_while_the_handler_works(make_engine_for, db_url):
    """A gateway call longer than the lease (SMPP throttling, a slow webhook): the runner's
    lease keeper extends the claim, so another worker cannot take the batch and send it
    again."""
    import threading

    from comms_pipeline.queue.runner import Runner

    settings, engine = make_engine_for(db_url, COMMS_CLAIMS_LEASE_SECONDS="1.5")
    _setup(engine, 3)
    queue = detail_queue("sms")
    inside, release = threading.Event(), threading.Event()

    class Slow:
        name = "slow"

        def __init__(self) -> None:
            self.queue = queue

        def handle(self, rows, ctx):
            inside.set()
            release.wait(10)  # liveness bound, not a timing assertion
            return [Outcome.done(r.id, DetailState.COMPLETED) for r in rows]

        def close(self) -> None:
            pass

    runner = Runner(settings, engine, Slow(), once=True)
    thread = threading.Thread(target=runner.run_batch)
    thread.start()
    assert inside.wait(10)
    other = Claimer(engine, "w2", settings.claims)
    deadline = time.monotonic() + 4.0  # more than two leases pass while the handler works
    while time.monotonic() < deadline:
        assert other.claim(queue, 10) == []
        time.sleep(0.1)
    release.set()
    thread.join(10)
    assert set(_states(engine).values()) == {DetailState.COMPLETED}
    assert runner.refused == 0
