"""The cheap checks at a chunk boundary: the priority probe's "no" stands for a moment, and a
worker that stays up freezes its start-up heap once."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from comms_pipeline.queue import runner as runner_mod
from comms_pipeline.queue.runner import OUTRANK_PROBE_SECONDS, BatchContext
from comms_pipeline.runtime import heap


class Probe:
    def __init__(self, answer: bool = False) -> None:
        self.asked: list[int] = []
        self.answer = answer

    def outranked(self, queue: object, priority: int) -> bool:
        self.asked.append(priority)
        return self.answer


def context(probe: Probe) -> BatchContext:
    runner = SimpleNamespace(claimer=probe, handler=SimpleNamespace(queue="q"))
    return BatchContext(runner, [])  # type: ignore[arg-type]


def test_a_no_stands_for_the_probe_interval_then_the_database_is_asked_again(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: clock[0])
    probe = Probe()
    ctx = context(probe)
    assert ctx.outranked(5) is False and probe.asked == [5]  # the first boundary asks
    assert ctx.outranked(5) is False and probe.asked == [5]  # within the interval: trusted
    assert ctx.outranked(3) is False and probe.asked == [5]  # nothing better than 5 waits
    clock[0] += 2 * OUTRANK_PROBE_SECONDS
    assert ctx.outranked(5) is False and probe.asked == [5, 5]  # the interval is over


def test_a_worse_priority_is_not_answered_from_a_better_ones_no(monkeypatch):
    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: 100.0)
    probe = Probe()
    ctx = context(probe)
    ctx.outranked(2)
    ctx.outranked(6)  # a row of priority 2..5 may wait: "nothing better than 2" says nothing
    assert probe.asked == [2, 6]


def test_a_yes_is_never_cached(monkeypatch):
    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: 100.0)
    probe = Probe(answer=True)
    ctx = context(probe)
    assert ctx.outranked(5) and ctx.outranked(5)
    assert probe.asked == [5, 5]


def test_a_claim_store_that_cannot_tell_is_never_outranked():
    ctx = context(SimpleNamespace())  # type: ignore[arg-type]
    assert ctx.outranked(1) is False


def test_settle_freezes_the_heap_once_per_process(monkeypatch):
    monkeypatch.setattr(heap, "_settled", False)
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    assert heap.settle() is True
    assert heap.settle() is False
    assert calls == ["collect", "freeze"]
