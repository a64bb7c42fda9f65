"""The Runner's lease keeper extends a working batch's lease, and gives up on a stuck one."""

from __future__ import annotations

import threading

from comms_pipeline.queue.runner import LeaseKeeper


class CountingContext:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def keep_alive(self) -> None:
        with self.lock:
            self.calls += 1


def test_it_stops_extending_after_max_leases(monkeypatch):
    monkeypatch.setattr(LeaseKeeper, "MAX_LEASES", 2)
    ctx = CountingContext()
    with LeaseKeeper(ctx, lease_seconds=0.6) as keeper:  # extends every 0.2 s for 1.2 s
        keeper._thread.join(30)  # the handler is "stuck": the keeper must end by itself
        assert not keeper._thread.is_alive()
    # One call per interval within the two leases at most, none after the deadline.
    assert 1 <= ctx.calls <= 6
