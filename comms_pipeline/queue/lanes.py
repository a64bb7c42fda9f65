"""Fair queueing: a claim interleaves the lanes (external systems) of a queue within a priority.

A :class:`~comms_pipeline.queue.claims.WorkQueue` with a ``lane`` column (the system that made
the request) is claimed round-robin across its lanes: the batch holds, for each priority in
turn, each lane's first row, then each lane's second row, and so on. One system's backlog of
500,000 entries then delays another system's entries of the same priority by at most the
batch being worked, never by the backlog; rows without a system are one lane of their own.

How: each lane's next ``limit`` claimable rows are read by the queue's order (one arm per
lane of a ``UNION ALL``, each an ordered index range of ``(state, lane, priority, id)``);
no row outside them can be in the batch. The arms' rows are ranked within their lane and
priority (``row_number()``) and the batch is the first ``limit`` by ``(priority, rank, id)``.
On PostgreSQL each arm locks its rows ``FOR UPDATE SKIP LOCKED``, so concurrent claimers
still take disjoint rows; the arms' rows left out of the batch are unlocked when the claim
commits, a few milliseconds later (they are at most ``limit`` per busy lane).

A queue with one lane only (no external system is registered) is claimed as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Integer, func, literal, select, union_all

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.elements import ColumnElement


class WorkQueue(Protocol):
    """What this module reads of a :class:`~comms_pipeline.queue.claims.WorkQueue`."""

    @property
    def table(self) -> Any: ...
    @property
    def order_by(self) -> tuple[Any, ...]: ...
    @property
    def lane(self) -> Any: ...
    @property
    def lane_domain(self) -> Any: ...


def lane_values(conn: Connection, queue: WorkQueue) -> list[Any]:
    """Every lane a row of ``queue`` may be in: no system (``None``), then each system's id."""
    if queue.lane is None or queue.lane_domain is None:
        return [None]
    return [None, *conn.execute(select(queue.lane_domain).order_by(queue.lane_domain)).scalars()]


def fair_candidates(queue: WorkQueue, where: Sequence[ColumnElement[bool]],
                    lanes: Sequence[Any], limit: int, *, lock: bool) -> Select:
    """The ids of the next batch of ``queue`` (at most ``limit``), lanes interleaved.

    ``where`` says which rows are claimable (pending, not leased, due); ``lock`` takes each
    arm's rows ``FOR UPDATE SKIP LOCKED`` (PostgreSQL).
    """
    t = queue.table
    lane = queue.lane
    assert lane is not None
    order = list(queue.order_by or (t.c.id,))
    arms = []
    for number, value in enumerate(lanes):
        own = lane.is_(None) if value is None else lane == value
        arm = (select(t.c.id.label("id"), *(c.label(f"o{i}") for i, c in enumerate(order)),
                      literal(number, Integer).label("lane_no"))
               .where(*where, own)
               .order_by(*order)
               .limit(limit))
        if lock:
            arm = arm.with_for_update(skip_locked=True)
        sub = arm.subquery(f"lane_{number}")
        arms.append(select(*sub.c))
    both = union_all(*arms).subquery("lanes")
    keys = [both.c[f"o{i}"] for i in range(len(order))]
    rank = func.row_number().over(partition_by=[both.c.lane_no, *keys[:-1]],
                                  order_by=keys[-1]).label("lane_rank")
    ranked = select(both.c.id, *keys, rank).subquery("ranked")
    ranked_keys = [ranked.c[f"o{i}"] for i in range(len(order))]
    return (select(ranked.c.id)
            .order_by(*ranked_keys[:-1], ranked.c.lane_rank, ranked_keys[-1])
            .limit(limit))
