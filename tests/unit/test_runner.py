"""The Runner's behaviour on the in-memory claim store: no database.

Leases are kept while a handler works, retries follow the queue's policy and give up when it
says so, rows a handler leaves out (or a shutdown interrupts) are given back, and a
completion that arrives after another worker took the rows over is refused.
"""

from __future__ import annotations

import time

import pytest

from comms_pipeline.core.states import DetailState as D
from comms_pipeline.queue.claims import Outcome, WorkQueue
from comms_pipeline.queue.machine import DETAILS
from comms_pipeline.queue.retry import FixedSchedule
from comms_pipeline.queue.runner import Runner
from comms_pipeline.testing import InMemoryClaims, InMemoryHeartbeat, MemoryQueue
from tests.conftest import load_test_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Handler:
    name = "test"

    def __init__(self, queue: WorkQueue, decide) -> None:  # type: ignore[no-untyped-def]
        self.queue = queue
        self.decide = decide
        self.seen: list[list[int]] = []

    def handle(self, rows, ctx):  # type: ignore[no-untyped-def]
        self.seen.append([r.id for r in rows])
        return [o for o in (self.decide(r, ctx) for r in rows) if o is not None]

    def close(self) -> None:
        pass


def _pending(row) -> bool:  # type: ignore[no-untyped-def]
    return row["state"] == D.AWAITING_SEND


def _runner(memory: MemoryQueue, handler: Handler, worker: str = "w1",  # type: ignore[no-untyped-def]
            **claims):
    settings = load_test_settings()
    for key, value in claims.items():
        setattr(settings.claims, key, value)
    return Runner(settings, None, handler, once=True, batch_size=10,
                  claims=InMemoryClaims(memory, worker, settings.claims),
                  heartbeat=InMemoryHeartbeat(worker))


def test_a_batch_is_handled_finished_and_its_history_kept():
    memory = MemoryQueue(DETAILS, _pending)
    ids = [memory.add(D.AWAITING_SEND) for _ in range(3)]
    handler = Handler(WorkQueue(DETAILS, pending=None),  # type: ignore[arg-type]
                      lambda r, ctx: Outcome.done(r.id, D.COMPLETED, gateway_ref=f"g{r.id}"))
    runner = _runner(memory, handler)
    assert runner.run() == 3
    assert [memory.state(i) for i in ids] == [D.COMPLETED] * 3
    assert memory.rows[1]["gateway_ref"] == "g1" and memory.rows[1]["claimed_by"] is None
    assert (1, D.AWAITING_SEND, D.COMPLETED, "w1") in memory.history
    assert runner.heartbeat.stopped_cleanly  # type: ignore[attr-defined]


def test_retries_follow_the_queues_policy_then_give_up():
    clock = Clock()
    memory = MemoryQueue(DETAILS, _pending, clock)
    row = memory.add(D.AWAITING_SEND)
    queue = WorkQueue(DETAILS, pending=None,  # type: ignore[arg-type]
                      retry=FixedSchedule((10.0,), max_attempts=2))
    handler = Handler(queue, lambda r, ctx: Outcome.retry(r.id, "421", "try later"))
    runner = _runner(memory, handler)
    runner.run()
    assert memory.rows[row]["next_attempt_at"] == clock.now + 10
    assert memory.state(row) == D.AWAITING_SEND and memory.rows[row]["error_code"] == "421"
    runner.run()
    assert handler.seen == [[row]]  # not before its time
    clock.now += 10
    runner.run()
    assert memory.state(row) == D.REJECTED
    assert memory.rows[row]["error_description"] == "try later (gave up after 2 attempts)"


def test_rows_left_out_are_given_back_untouched():
    memory = MemoryQueue(DETAILS, _pending)
    ids = [memory.add(D.AWAITING_SEND) for _ in range(4)]
    handler = Handler(WorkQueue(DETAILS, pending=None),  # type: ignore[arg-type]
                      lambda r, ctx: Outcome.done(r.id, D.COMPLETED) if r.id % 2 else None)
    runner = _runner(memory, handler)
    runner.run_batch()
    assert [memory.state(i) for i in ids] == [D.COMPLETED, D.AWAITING_SEND] * 2
    assert all(memory.rows[i]["attempts"] == 0 and memory.rows[i]["claimed_by"] is None
               for i in (2, 4))


def test_an_interrupted_batch_is_released_at_once():
    memory = MemoryQueue(DETAILS, _pending)
    ids = [memory.add(D.AWAITING_SEND) for _ in range(2)]

    def interrupt(row, ctx):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    queue = WorkQueue(DETAILS, pending=None)  # type: ignore[arg-type]
    runner = _runner(memory, Handler(queue, interrupt))
    with pytest.raises(KeyboardInterrupt):
        runner.run_batch()
    assert all(memory.rows[i]["claimed_by"] is None and memory.rows[i]["attempts"] == 0
               for i in ids)


def test_a_completion_after_a_takeover_is_refused():
    clock = Clock()
    memory = MemoryQueue(DETAILS, _pending, clock)
    row = memory.add(D.AWAITING_SEND)
    other = _runner(memory, Handler(WorkQueue(DETAILS, pending=None),  # type: ignore[arg-type]
                                    lambda r, ctx: None), worker="w2")

    def stall_then_finish(r, ctx):  # type: ignore[no-untyped-def]
        clock.now += 120  # past the lease: the other worker takes the row over
        assert [x.id for x in other.claimer.claim(other.handler.queue, 10)] == [row]
        return Outcome.done(r.id, D.COMPLETED)

    queue = WorkQueue(DETAILS, pending=None)  # type: ignore[arg-type]
    late = _runner(memory, Handler(queue, stall_then_finish))
    late.run_batch()
    assert late.refused == 1 and late.processed == 1
    assert memory.state(row) == D.AWAITING_SEND and memory.rows[row]["claimed_by"] == "w2"


def test_the_lease_is_kept_while_a_slow_handler_works():
    memory = MemoryQueue(DETAILS, _pending)
    row = memory.add(D.AWAITING_SEND)
    rival = InMemoryClaims(memory, "w2", load_test_settings().claims)
    queue = WorkQueue(DETAILS, pending=None)  # type: ignore[arg-type]
    taken: list[list[object]] = []

    def slow(r, ctx):  # type: ignore[no-untyped-def]
        for _ in range(6):  # two leases of 0.15 s
            time.sleep(0.05)
            taken.append(rival.claim(queue, 10))
        return Outcome.done(r.id, D.COMPLETED)

    runner = _runner(memory, Handler(queue, slow), lease_seconds=0.15)
    rival.settings = runner.settings.claims
    runner.run_batch()
    assert taken == [[]] * 6
    assert memory.state(row) == D.COMPLETED


def test_an_illegal_move_is_refused_by_the_machine():
    memory = MemoryQueue(DETAILS, lambda row: row["state"] == D.COMPLETED_REMOVED)
    row = memory.add(D.COMPLETED_REMOVED)
    handler = Handler(WorkQueue(DETAILS, pending=None),  # type: ignore[arg-type]
                      lambda r, ctx: Outcome.done(r.id, D.AWAITING_SEND))
    runner = _runner(memory, handler)
    runner.run_batch()  # the finish fails; the row is finished alone, with the reason
    assert memory.state(row) == D.COMPLETED_REMOVED
    assert memory.rows[row]["error_code"] == "INTERNAL_ERROR"
    assert "cannot be moved" in memory.rows[row]["error_description"]
    assert runner.failed_batches == 1


def test_runner_needs_an_engine_or_both_ports():
    settings = load_test_settings()
    queue = WorkQueue(DETAILS, pending=None)  # type: ignore[arg-type]
    handler = Handler(queue, lambda r, ctx: None)
    with pytest.raises(ValueError, match="needs an engine"):
        Runner(settings, None, handler)
