"""Fair queueing: a claim interleaves the lanes (external systems) of a queue within a priority.

A :class:`~comms_pipeline.queue.claims.WorkQueue` with a ``lane`` column (the system that made
the request) is claimed round-robin across its lanes: the batch holds, for each priority in
turn, each lane's first row, then each lane's second row, and so on. One system's backlog of
500,000 entries then delays another system's entries of the same priority by at most the
batch being worked, never by the backlog; rows without a system are one lane of their own.

How: each lane's next ``limit`` claimable rows are read by the queue's order (each an
ordered index range of ``(state, lane, priority, id)``); no row outside them can be in the
batch. The rows are ranked within their lane and priority and the batch is the first
``limit`` by ``(priority, rank, id)``. On PostgreSQL that is one statement — the rows of no
system, and each system's through a ``LATERAL`` join with the systems table, each arm locked
``FOR UPDATE SKIP LOCKED`` so that concurrent claimers still take disjoint rows, ranked by
``row_number()``; the arms' rows left out of the batch (at most ``limit`` per busy lane) are
unlocked when the claim commits, milliseconds later. On SQLite, whose claim is a single
writer's transaction, the lanes are read one by one (a share each first, then in full only
where the share might not be enough: :func:`fair_ids`) and interleaved in Python.

A queue with one lane only (no external system is registered) is claimed as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, func, literal, select, true, union_all

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


def _arm(queue: WorkQueue, where: Sequence[ColumnElement[bool]], own: ColumnElement[bool],
         limit: Any) -> Select:
    """One lane's next ``limit`` claimable rows, by the queue's order: id, then the keys."""
    t = queue.table
    order = _order(queue)
    return (select(t.c.id, *(c.label(f"o{i}") for i, c in enumerate(order)))
            .where(*where, own).order_by(*order).limit(limit))


def _order(queue: WorkQueue) -> list[Any]:
    return list(queue.order_by or (queue.table.c.id,))


def _ranked(arms: Sequence[Sequence[Sequence[Any]]]) -> list[tuple[tuple, int, Any, int]]:
    """Each row ``(id, *keys)`` of each lane as ``(leading keys, rank, last key, id)``: its
    rank counts within its lane and leading keys (the priority)."""
    ranked = []
    for rows in arms:
        seen: dict[tuple, int] = {}
        for row in rows:
            lead = tuple(row[1:-1])
            rank = seen[lead] = seen.get(lead, 0) + 1
            ranked.append((lead, rank, row[-1], row[0]))
    ranked.sort(key=lambda r: r[:3])
    return ranked


def interleave(arms: Sequence[Sequence[Sequence[Any]]], limit: int) -> list[int]:
    """The first ``limit`` ids of the lanes' rows taken in turn within their leading keys.

    ``arms`` holds each lane's rows in the queue's order, each row ``(id, *keys)`` (keys:
    e.g. priority, id); the batch is taken by ``(leading keys, rank, last key)``.
    """
    return [r[3] for r in _ranked(arms)[:limit]]


def fair_ids(conn: Connection, queue: WorkQueue, where: Sequence[ColumnElement[bool]],
             lanes: Sequence[Any], limit: int) -> list[int]:
    """The ids of the next batch, lanes interleaved, read lane by lane (one ordered index
    range each) in the caller's transaction: for SQLite, whose claims are a single writer's
    (``BEGIN IMMEDIATE``), so nothing can take the rows before the caller's update.

    Each lane's share is read first (``limit`` over the lanes); a lane that filled its share
    is read again in full only if a row it did not give could still belong in the batch: with
    ten busy systems that is ten reads of a tenth each, with one big backlog beside idle
    systems one more read of that backlog's batch.
    """
    lane = queue.lane
    same = _arm(queue, where, lane == bindparam("lane_value"), bindparam("n"))
    unowned = _arm(queue, where, lane.is_(None), bindparam("n"))

    def read(value: Any, n: int) -> list[Any]:
        return list(conn.execute(unowned if value is None else same,
                                 {"lane_value": value, "n": n}))

    share = -(-limit // len(lanes)) + 1
    arms = [read(value, share) for value in lanes]
    ranked = _ranked(arms)
    last = ranked[limit - 1][:2] if len(ranked) >= limit else None
    for i, rows in enumerate(arms):
        if len(rows) < share:
            continue  # the lane gave all it has
        tail = _ranked([rows])[-1]
        # The lane's next row ranks at least (its priority, its last rank + 1): it can only
        # be left out if the batch is full with rows before that.
        if last is None or last >= (tail[0], tail[1] + 1):
            arms[i] = read(lanes[i], limit)
    return interleave(arms, limit)


def fair_candidates(queue: WorkQueue, where: Sequence[ColumnElement[bool]],
                    limit: int) -> Select:
    """The ids of the next batch of ``queue`` (at most ``limit``), lanes interleaved, as one
    statement for PostgreSQL: the rows of no system, and each system's through a ``LATERAL``
    join with the systems, each arm taken ``FOR UPDATE SKIP LOCKED``."""
    t = queue.table
    lane = queue.lane
    order = _order(queue)
    domain = select(queue.lane_domain.label("lane")).subquery("lanes")
    unowned = _arm(queue, where, lane.is_(None), limit).with_for_update(skip_locked=True)
    owned = (_arm(queue, where, lane == domain.c.lane, limit)
             .with_for_update(skip_locked=True).lateral("owned"))
    keys = [f"o{i}" for i in range(len(order))]
    plain = unowned.subquery("unowned")
    arms = union_all(
        select(plain.c.id, *(plain.c[k] for k in keys), literal(None, t.c.id.type).label("lane")),
        select(owned.c.id, *(owned.c[k] for k in keys), domain.c.lane)
        .select_from(domain.join(owned, true())),
    ).subquery("arms")
    rank = func.row_number().over(partition_by=[arms.c.lane, *(arms.c[k] for k in keys[:-1])],
                                  order_by=arms.c[keys[-1]]).label("lane_rank")
    ranked = select(arms.c.id, *(arms.c[k] for k in keys), rank).subquery("ranked")
    return (select(ranked.c.id)
            .order_by(*(ranked.c[k] for k in keys[:-1]), ranked.c.lane_rank,
                      ranked.c[keys[-1]])
            .limit(limit))
