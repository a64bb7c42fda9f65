"""The Runner's lease keeper extends a working batch's lease, and gives up on a stuck one."""

from __future__ import annotations

import threading

from comms_pipeline.queue.runner import LeaseKeeper


class CountingContext:
    """Each extension moves a fake clock on by ``step`` seconds, so the deadline, not the
    machine's speed, decides how many extensions there are."""

    def __init__(self, step: float = 0.0) -> None:
        self.calls = 0
        self.now = 0.0
        self.step = step
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def keep_alive(self) -> None:
        with self.lock:
            self.calls += 1
            self.now += self.step


def test_it_stops_extending_after_max_leases(monkeypatch):
    monkeypatch.setattr(LeaseKeeper, "MAX_LEASES", 2)
    ctx = CountingContext(step=0.05)
    # Leases of 0.06 s: the keeper gives up at 0.12 s on its clock; an extension every 0.02 s
    # of real waiting, each moving the clock on by 0.05 s.
    with LeaseKeeper(ctx, lease_seconds=0.06, clock=ctx.clock) as keeper:
        keeper._thread.join(30)  # the handler is "stuck": the keeper must end by itself
        assert not keeper._thread.is_alive()
    # Extensions at 0.00, 0.05 and 0.10 on its clock; at 0.15 the deadline has passed.
    assert ctx.calls == 3
