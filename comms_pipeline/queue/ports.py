"""The Runner's two ports: where it claims and finishes rows, and where it says it is alive.

:class:`~comms_pipeline.queue.claims.Claimer` and :class:`~comms_pipeline.queue.heartbeat.Heartbeat`
are the database adapters; :mod:`comms_pipeline.testing` has in-memory twins, so the Runner's
behaviour (lease keeping, retries, release on shutdown, late completions refused) is tested
without a database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.queue.claims import Outcome, WorkQueue


class ClaimStore(Protocol):
    """Claims batches with a lease, extends leases, finishes rows compare-and-set."""

    worker_id: str

    def claim(self, queue: WorkQueue, limit: int) -> Sequence[Any]:
        """Claim up to ``limit`` pending rows for this worker (rows with ``.id``)."""
        ...

    def extend(self, queue: WorkQueue, ids: Sequence[int]) -> set[int]:
        """Push the lease of rows still held further out; return the ids still held."""
        ...

    def held(self, queue: WorkQueue, ids: Sequence[int]) -> set[int]:
        """The ids still held by this worker (without extending their lease)."""
        ...

    def finish(self, queue: WorkQueue, outcomes: Sequence[Outcome],
               conn: Connection | None = None,
               persist: Callable[[Connection, list[Outcome]], None] | None = None,
               known_lost: set[int] | frozenset[int] = frozenset()) -> set[int]:
        """Apply outcomes to rows still held; return the ids refused (lease lost).
        ``known_lost``: rows whose loss was already reported (logged once)."""
        ...


class Liveness(Protocol):
    """A worker's heartbeat: one record per running instance."""

    instance: str
    processed: int

    def beat(self, force: bool = False) -> object:
        """Say the worker is alive (at most every few seconds unless ``force``)."""
        ...

    def stopped(self) -> None:
        """Say the worker stopped cleanly."""
        ...

    def waiting(self, waiting: bool) -> None:
        """Say the worker is (or is no longer) waiting for the database."""
        ...
