"""The queue's state machines say which births and moves are allowed; the retry policies say
how long a row waits and when it is given up. No database needed."""

from __future__ import annotations

import pytest

from comms_pipeline.core.states import DetailState as D
from comms_pipeline.core.states import HeaderStatus as H
from comms_pipeline.queue.machine import DETAILS, DOCUMENTS, HEADERS, IllegalTransition
from comms_pipeline.queue.retry import ExponentialBackoff, FixedSchedule, NeverGiveUp


def test_a_detail_lives_the_documented_life():
    DETAILS.check([(None, D.AWAITING_MERGE), (D.AWAITING_MERGE, D.AWAITING_SEND),
                   (D.AWAITING_SEND, D.COMPLETED), (D.COMPLETED, D.COMPLETED_REMOVED)])
    DETAILS.check([(None, D.AWAITING_EXTERNAL), (D.AWAITING_EXTERNAL, D.REJECTED),
                   (D.REJECTED, D.AWAITING_SEND)])


@pytest.mark.parametrize("old,new", [
    (D.COMPLETED_REMOVED, D.COMPLETED),   # removed from the inbox is final
    (D.COMPLETED, D.AWAITING_SEND),       # a sent message is never sent again by a move
    (D.EXPIRED, D.COMPLETED),             # an expired entry is not offered any more
    (D.REJECTED, D.COMPLETED),
    (None, D.EXPIRED),
    (None, D.COMPLETED_REMOVED),
])
def test_moves_the_machine_does_not_list_raise(old, new):
    with pytest.raises(IllegalTransition, match="detail cannot be"):
        DETAILS.check([(old, new)])


def test_headers_end_once_processed():
    HEADERS.check([(None, H.AWAITING_EVENT_RESOLUTION),
                   (H.AWAITING_EVENT_RESOLUTION, H.AWAITING_PROCESSING),
                   (H.AWAITING_PROCESSING, H.PROCESSED)])
    with pytest.raises(IllegalTransition):
        HEADERS.check([(H.PROCESSED, H.AWAITING_PROCESSING)])
    with pytest.raises(IllegalTransition):
        HEADERS.check([(H.CANCELLED, H.PROCESSED)])


def test_staying_in_a_state_is_not_a_move():
    assert DETAILS.allows(D.AWAITING_SEND, D.AWAITING_SEND)
    assert DOCUMENTS.state_column is None and DOCUMENTS.failed_state is None


def test_exponential_backoff_doubles_caps_and_gives_up():
    policy = ExponentialBackoff(base=30, cap=100, max_attempts=4)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [30, 60, 100, None]
    assert not policy.gives_up(4) and policy.gives_up(5)


def test_a_fixed_schedule_repeats_its_last_delay():
    policy = FixedSchedule((5.0, 300.0), max_attempts=5)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [5.0, 300.0, 300.0, 300.0, None]
    assert FixedSchedule((), max_attempts=5).delay(1) is None


def test_never_give_up_keeps_waiting_without_overflow():
    policy = NeverGiveUp(base=1, cap=3600, floor=2)
    assert policy.delay(1) == 2 and policy.delay(10_000) == 3600
    assert not policy.gives_up(10**9)
