"""In-memory gateway fakes for unit tests and for embedding programs' own tests.

Each instance keeps its own state. A fake can be told to answer particular recipients with a
transient or a permanent failure, the way a real gateway would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from comms_pipeline.core.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.protocols import Outcome, SendResult


@dataclass
class FakeSender:
    """Implements every ``send_many`` Protocol (SMS, email, push, webhook)."""

    sent: list[Any] = field(default_factory=list)
    failures: dict[str, GatewayError] = field(default_factory=dict)
    closed: bool = False

    def fail(self, recipient: str, code: str, description: str, transient: bool = False) -> None:
        cls = TransientGatewayError if transient else PermanentGatewayError
        self.failures[recipient] = cls(code, description)

    def send_many(self, messages: Sequence[Any]) -> list[Outcome]:
        results: list[Outcome] = []
        for m in messages:
            recipient = _recipient(m)
            if recipient in self.failures:
                results.append(self.failures[recipient])
            else:
                self.sent.append(m)
                results.append(SendResult(ref=f"fake-{len(self.sent)}"))
        return results

    def close(self) -> None:
        self.closed = True


def _recipient(message: Any) -> str:
    for attr in ("to", "token", "url"):
        if hasattr(message, attr):
            return getattr(message, attr)
    return ",".join(getattr(message, "rcpt_to", ()))


@dataclass
class FakeDocumentStore:
    backend: str = "memory"
    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes, content_type: str, metadata: dict) -> str:
        self.objects[key] = data
        return f"memory://{key}"

    def get(self, location: str) -> bytes:
        return self.objects[location.removeprefix("memory://")]

    def delete(self, location: str) -> None:
        self.objects.pop(location.removeprefix("memory://"), None)

    def close(self) -> None:
        """Nothing to release."""


# -- the Runner's ports in memory ------------------------------------------------------------


class MemoryQueue:
    """Rows of one state machine held in memory, shared by the claim stores of several workers.

    Each row is a dict with ``id``, the machine's state column, ``attempts``, ``claimed_by``,
    ``lease_until``, ``next_attempt_at`` and the error columns; times come from ``clock`` (in
    seconds), so a test can move time on by hand. ``history`` records every change of state
    as ``(id, from, to, worker)``.
    """

    def __init__(self, machine: Any, pending: Any = None, clock: Any = None) -> None:
        import threading
        import time

        self.machine = machine
        self.pending = pending or (lambda row: True)
        self.clock = clock or time.monotonic
        self.rows: dict[int, dict[str, Any]] = {}
        self.history: list[tuple[int, str | None, str, str]] = []
        self.lock = threading.Lock()

    def add(self, state: str, **values: Any) -> int:
        row_id = len(self.rows) + 1
        code_col, text_col = self.machine.error_columns
        self.rows[row_id] = {"id": row_id, self.machine.state_column or "state": state,
                             "attempts": 0, "claimed_by": None, "lease_until": None,
                             "next_attempt_at": None, code_col: None, text_col: None, **values}
        self.history.append((row_id, None, state, "test"))
        return row_id

    def state(self, row_id: int) -> Any:
        return self.rows[row_id][self.machine.state_column or "state"]


class InMemoryClaims:
    """The :class:`~comms_pipeline.queue.ports.ClaimStore` of one worker over a MemoryQueue,
    with the database claimer's rules: leases, takeover of expired leases, compare-and-set
    finishes, the queue's retry policy, and the machine's allowed moves."""

    def __init__(self, memory: MemoryQueue, worker_id: str, claims: Any) -> None:
        self.memory = memory
        self.worker_id = worker_id
        self.settings = claims

    def _view(self, row: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(**row)

    def claim(self, queue: Any, limit: int) -> list[Any]:
        m = self.memory
        policy = queue.policy(self.settings)
        with m.lock:
            now = m.clock()
            free = [r for r in sorted(m.rows.values(), key=lambda r: r["id"])
                    if m.pending(r) and (r["lease_until"] is None or r["lease_until"] < now)
                    and (r["next_attempt_at"] is None or r["next_attempt_at"] <= now)][:limit]
            claimed: list[dict[str, Any]]
            spent: list[dict[str, Any]]
            claimed, spent = [], []
            for r in free:
                r.update(claimed_by=self.worker_id, attempts=r["attempts"] + 1,
                         lease_until=now + self.settings.lease_seconds)
                (spent if policy.gives_up(r["attempts"]) else claimed).append(r)
            for r in spent:
                self._set_state(queue, r, queue.failed_state, "MAX_ATTEMPTS",
                                f"gave up after {r['attempts'] - 1} attempts "
                                "(claimant lost each time)")
                r.update(claimed_by=None, lease_until=None)
            return [self._view(r) for r in claimed]

    def extend(self, queue: Any, ids: Sequence[int]) -> set[int]:
        m = self.memory
        with m.lock:
            held = {i for i in ids if m.rows[i]["claimed_by"] == self.worker_id}
            for i in held:
                m.rows[i]["lease_until"] = m.clock() + self.settings.lease_seconds
            return held

    def held(self, queue: Any, ids: Sequence[int]) -> set[int]:
        with self.memory.lock:
            return {i for i in ids if self.memory.rows[i]["claimed_by"] == self.worker_id}

    def finish(self, queue: Any, outcomes: Sequence[Any], conn: Any = None,
               persist: Any = None, known_lost: Any = frozenset()) -> set[int]:
        m = self.memory
        with m.lock:
            held = [o for o in outcomes if m.rows[o.id]["claimed_by"] == self.worker_id]
            refused = {o.id for o in outcomes} - {o.id for o in held}
            col = queue.machine.state_column
            if col is not None:  # all or nothing, as the database's transaction is
                queue.machine.check([(m.rows[o.id][col], o.state) for o in held
                                     if o.action == "done" and o.state is not None])
            if persist is not None and held:
                persist(None, held)
            for o in held:
                self._apply(queue, m.rows[o.id], o)
            return refused

    def _apply(self, queue: Any, row: dict[str, Any], o: Any) -> None:
        row.update(claimed_by=None, lease_until=None)
        if o.action == "release":
            row["attempts"] = max(row["attempts"] - 1, 0)
        elif o.action == "retry":
            delay = o.delay if o.delay is not None else queue.policy(self.settings).delay(
                row["attempts"])
            if delay is None:
                self._set_state(queue, row, queue.failed_state, o.code,
                                f"{o.description} (gave up after {row['attempts']} attempts)")
            else:
                row["next_attempt_at"] = self.memory.clock() + delay
                self._set_state(queue, row, None, o.code, o.description)
        else:
            row.update(o.values)
            self._set_state(queue, row, o.state, o.code, o.description)

    def _set_state(self, queue: Any, row: dict[str, Any], new: str | None, code: str | None,
                   description: str | None) -> None:
        code_col, text_col = queue.machine.error_columns
        if code is not None:
            row.update({code_col: code, text_col: description})
        col = queue.machine.state_column
        if new is None or col is None or row[col] == new:
            return
        queue.machine.check([(row[col], new)])
        self.memory.history.append((row["id"], row[col], new, self.worker_id))
        row[col] = new


@dataclass
class InMemoryHeartbeat:
    """The :class:`~comms_pipeline.queue.ports.Liveness` of a worker, counted in memory."""

    instance: str = "memory-worker"
    processed: int = 0
    beats: int = 0
    stopped_cleanly: bool = False
    waiting_for_database: bool = False

    def beat(self, force: bool = False) -> None:
        self.beats += 1

    def stopped(self) -> None:
        self.stopped_cleanly = True

    def waiting(self, waiting: bool) -> None:
        self.waiting_for_database = waiting
