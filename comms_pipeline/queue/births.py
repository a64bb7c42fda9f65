"""Where headers and details are born: every creation records the state it starts in.

The state machine says which states a row may be born in (:mod:`.machine`); these functions
write the rows and their first history row in the caller's transaction, whoever creates them
(the Python trigger, the Web API, event rules, notification runs, dynamic links, the Comms
Monitor through :func:`~comms_pipeline.queue.claims.insert_with_history`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.queue.claims import (
    births_moved,
    record_transitions,
    record_transitions_from,
)
from comms_pipeline.store.dialect import insert_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

    from comms_pipeline.queue.machine import StateMachine


def insert_new(conn: Connection, machine: StateMachine, rows: Sequence[Mapping[str, Any]],
               actor: str | None, *, unique: str | None = None) -> list[int]:
    """Insert ``rows`` and record each one's birth; return the new ids in order.

    With ``unique`` (a column with a unique index, e.g. ``idempotency_key``) a row whose value
    is already there is not inserted again (and not returned): a repeated request, or an
    event expanded by two monitors at once, makes its rows once.
    """
    if not rows:
        return []
    state = machine.state_column or "state"
    machine.check((None, row[state]) for row in rows)
    stmt = insert_for(conn, machine.table)
    if unique is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[unique])
    returning = stmt.returning(machine.table.c.id, machine.table.c[state])
    if len(rows) == 1:
        made = conn.execute(returning.values(dict(rows[0]))).all()
    else:
        made = conn.execute(returning, [dict(r) for r in rows]).all()
    record_transitions(conn, machine.kind, [(r[0], None, r[1]) for r in made], actor)
    births_moved(conn, machine, [(r[0], r[1]) for r in made])
    return [r[0] for r in made]


def insert_one(conn: Connection, machine: StateMachine, values: Mapping[str, Any],
               actor: str | None, *, unique: str | None = None) -> int:
    """One row (see :func:`insert_new`); with ``unique``, the existing row's id when its value
    is already there."""
    made = insert_new(conn, machine, [values], actor, unique=unique)
    if made:
        return made[0]
    t = machine.table
    assert unique is not None  # without a unique column the row is always made
    return conn.execute(select(t.c.id).where(t.c[unique] == values[unique])).scalar_one()


def record_births_where(conn: Connection, machine: StateMachine, where: ColumnElement[bool],
                        actor: str | None) -> None:
    """Record the birth of every row matching ``where``, made by one ``INSERT … SELECT`` in
    this transaction (a notification run's batch), in one statement."""
    t = machine.table
    state = t.c[machine.state_column or "state"]
    born = {r[0] for r in conn.execute(select(state).where(where).distinct())}
    machine.check((None, s) for s in born)
    record_transitions_from(conn, machine.kind, t, where, None, state, actor,
                            t.c[machine.error_columns[0]])
