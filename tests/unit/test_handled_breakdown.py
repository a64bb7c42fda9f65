"""``daemon run --once`` tells handled, sent, retried and failed apart."""

from __future__ import annotations

from comms_pipeline.cli.ops import _breakdown
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.queue.metrics import outcome_name


class _Row:
    def __init__(self, attempts: int) -> None:
        self.attempts = attempts


def test_outcomes_are_named_and_counted_apart():
    assert outcome_name(Outcome.done(1, "completed"), _Row(1), 10) == "completed"
    assert outcome_name(Outcome.retry(2, "88", "Throttling"), _Row(3), 10) == "retry"
    assert outcome_name(Outcome.retry(3, "88", "Throttling"), _Row(10), 10) == "gave_up"
    assert _breakdown({"completed": 3, "retry": 1, "gave_up": 1}) == \
        " (3 sent, 1 to retry later, 1 failed after the last attempt)"
    assert _breakdown({}) == ""
