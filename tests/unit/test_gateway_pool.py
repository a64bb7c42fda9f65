"""The circuit breaker, the failover pool and the in-process token bucket, on a fake clock."""

from __future__ import annotations

from comms_pipeline.core.errors import TransientGatewayError
from comms_pipeline.daemons.gateway_pool import GatewayPool, Member
from comms_pipeline.gateways.breaker import BreakerState, CircuitBreaker
from comms_pipeline.gateways.protocols import SendResult, SmsMessage
from comms_pipeline.gateways.rate import RateGate, TokenBucket
from comms_pipeline.testing import FakeSender


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class DownSender(FakeSender):
    """A gateway that is down (every message fails transiently) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: list[int] = []

    def send_many(self, messages):  # type: ignore[no-untyped-def]
        self.calls.append(len(messages))
        if self.down:
            return [TransientGatewayError("ECONNREFUSED", "connection refused")] * len(messages)
        return super().send_many(messages)


def sms(n: int, start: int = 0) -> list[SmsMessage]:
    return [SmsMessage(i, f"+3579900{i:04d}", "hi") for i in range(start, start + n)]


def pool(clock: Clock, failures: int = 2, open_seconds: float = 30.0):  # type: ignore[no-untyped-def]
    a, b = DownSender(), DownSender()
    members = [Member("a", a, CircuitBreaker("a", failures, open_seconds, clock)),
               Member("b", b, CircuitBreaker("b", failures, open_seconds, clock))]
    return GatewayPool("sms", members), a, b


def test_breaker_opens_after_failures_in_a_row_and_a_probe_closes_it():
    clock = Clock()
    breaker = CircuitBreaker("g", failures=3, open_seconds=10, clock=clock)
    for ok in (False, False, True, False, False):  # a success in between resets the count
        breaker.record(ok)
    assert breaker.state is BreakerState.CLOSED and breaker.allowance() is None
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN and breaker.allowance() == 0
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allowance() == 1
    breaker.record(False)  # the probe failed: open for another period
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_a_failure_rate_over_the_window_opens_the_breaker_without_failures_in_a_row():
    clock = Clock()
    breaker = CircuitBreaker("g", failures=5, open_seconds=10, clock=clock, rate=0.5,
                             window_seconds=60, min_calls=10)
    for _ in range(4):  # every other message fails: never two in a row
        breaker.record(True)
        breaker.record(False)
        clock.now += 1
    assert breaker.state is BreakerState.CLOSED  # 8 answers: fewer than min_calls
    breaker.record(True)
    breaker.record(False)  # 5 of 10 failed in the window
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    breaker.record(True)  # the probe went through
    assert breaker.state is BreakerState.CLOSED
    clock.now += 120  # old answers leave the window: a few failures do not reopen it
    for ok in (False, True, True, False):
        breaker.record(ok)
    assert breaker.state is BreakerState.CLOSED


def test_failures_move_on_to_the_next_gateway_in_the_same_call():
    clock = Clock()
    gateways, a, b = pool(clock)
    assert [via for _, via in gateways.send_many(sms(3))] == ["a", "a", "a"]
    a.down = True
    routed = gateways.send_many(sms(4, 3))
    assert [via for _, via in routed] == ["b"] * 4
    assert all(isinstance(answer, SendResult) for answer, _ in routed)
    assert gateways.members[0].breaker.state is BreakerState.OPEN
    a.calls.clear()
    assert [via for _, via in gateways.send_many(sms(2, 7))] == ["b", "b"]
    assert a.calls == []  # open: not even tried


def test_half_open_probe_brings_traffic_back():
    clock = Clock()
    gateways, a, b = pool(clock)
    a.down = True
    gateways.send_many(sms(3))
    a.down = False
    clock.now += 30
    a.calls.clear()
    assert [via for _, via in gateways.send_many(sms(5, 3))] == ["a"] * 5
    assert a.calls == [1, 4]  # the probe alone, then the rest
    a.down = True
    clock.now += 1
    gateways.send_many(sms(2, 8))
    clock.now += 30  # half-open, the probe fails: the rest goes to b, a opens again
    a.calls.clear()
    assert [via for _, via in gateways.send_many(sms(3, 10))] == ["b"] * 3
    assert a.calls == [1]
    assert gateways.members[0].breaker.state is BreakerState.OPEN


def test_every_gateway_down_answers_transiently_and_a_single_gateway_has_no_breaker():
    clock = Clock()
    gateways, a, b = pool(clock, failures=1)
    a.down = b.down = True
    routed = gateways.send_many(sms(2))
    assert all(isinstance(answer, TransientGatewayError) for answer, _ in routed)
    assert [via for _, via in routed] == ["b", "b"]
    routed = gateways.send_many(sms(1, 2))  # both open: the first one is tried anyway
    assert [via for _, via in routed] == ["a"]
    single = DownSender()
    one = GatewayPool("sms", [Member("only", single, CircuitBreaker("only", 1, 30, clock))])
    single.down = True
    for _ in range(3):
        one.send_many(sms(2))
    assert single.calls == [2, 2, 2]


def test_token_bucket_gives_the_rate_and_a_throttle_halves_it():
    clock = Clock()
    bucket = TokenBucket(100, burst=5, slow_seconds=10, clock=clock)
    assert bucket.lease(10).granted == 0
    clock.now += 1
    assert bucket.lease(10).granted == 5  # no more than the burst, however long it waited
    taken = 0
    for _ in range(100):
        clock.now += 0.01
        taken += bucket.lease(10).granted
    assert 99 <= taken <= 100  # (sums of 0.01 s are not exact)
    bucket.slow_down()
    bucket.slow_down()  # the same throttling seen twice: halved once
    assert bucket.current_rate() == 50
    clock.now += 10
    assert bucket.current_rate() == 100


def test_rate_gate_leases_a_few_tokens_at_a_time():
    clock = Clock()

    class Counting(TokenBucket):
        asked = 0

        def lease(self, want):  # type: ignore[no-untyped-def]
            Counting.asked += 1
            return super().lease(want)

    gate = RateGate(Counting(200, burst=10, clock=clock), 200, clock=clock, sleep=clock.sleep)
    assert gate.lease_size == 4
    sent = 0
    start = clock.now
    while clock.now - start < 1.0:
        if gate.acquire():
            sent += 1
    assert 195 <= sent <= 210
    assert Counting.asked <= sent / 3  # not one lease per message


def test_a_sender_that_does_not_pace_itself_is_paced_by_the_pool():
    """(The HTTP SMS gateway, say.) Messages go in steps of a lease, each after its tokens."""
    clock = Clock()
    sender = DownSender()
    gate = RateGate(TokenBucket(100, burst=2, clock=clock), 100, clock=clock, sleep=clock.sleep)
    one = GatewayPool("sms", [Member("http", sender, CircuitBreaker("http", 5, 30, clock),
                                     gate)])
    routed = one.send_many(sms(10))
    assert [via for _, via in routed] == ["http"] * 10
    assert sender.calls == [2] * 5  # lease_size at 100/s
    assert 0.09 <= clock.now - 1000.0 <= 0.12  # ten tokens at 100/s, on the fake clock
