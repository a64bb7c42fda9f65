"""Changing what a request or an entry holds without moving its state: the content the
retention policy or an erasure removes (addresses, subjects, bodies, data).

The one way outside a claim to write those columns of ``request_headers`` and
``request_details``: it refuses a state column, the claim columns and the retry counters,
which only the state machine and the claims write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from comms_pipeline.queue.machine import IllegalTransition, StateMachine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

_CLAIM_COLUMNS = frozenset({"claimed_by", "lease_until", "attempts", "next_attempt_at"})


def update_content(conn: Connection, machine: StateMachine, where: ColumnElement[bool],
                   values: dict[str, Any]) -> int:
    """Set ``values`` (never the state, the claim or the retry counters) on the rows
    ``where`` of the machine's table; the rows changed."""
    reserved = (set(values) & _CLAIM_COLUMNS) | (set(values) & {machine.state_column})
    if reserved:
        raise IllegalTransition(f"a {machine.kind}'s content change may not set "
                                f"{', '.join(sorted(str(r) for r in reserved))}")
    return conn.execute(update(machine.table).where(where).values(values)).rowcount
