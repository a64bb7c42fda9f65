"""The queue's state machines, declared once: request headers, request details, documents.

For each kind of row this says where its state is kept, where a failure is explained, which
state a row that fails for good ends in, which states a row may be born in, which moves are
allowed, and what runs when rows change state. Every change of state in the product goes
through :mod:`comms_pipeline.queue.claims` (a worker's finish, ``transition_rows`` for
operators, external systems, links and sweeps, ``insert_with_history`` for births), which
asks the machine first: a move it does not list raises :class:`IllegalTransition` and the
transaction writes nothing. Every change is written to ``state_transitions`` in the same
transaction, so a row's whole life can be read back.

Headers (what happened to a request)::

    (born) ─▶ awaiting_event_resolution ─▶ awaiting_processing ─▶ processed
    (born) ──────────────────────────────▶ awaiting_processing ─▶ not_sent | opted_out | error
                                                              ─▶ cancelled

Details (a communication's life in the queue; public states in brackets)::

    (born) ─▶ awaiting_merge ─▶ awaiting_send ─▶ completed ─▶ completed_removed
              [Pending]         [Pending]        [Completed]  [Completed and Removed]
    (born) ─▶ awaiting_external ─────────────────▶ completed | completed_removed
    any Pending ─▶ rejected [Rejected] | expired [Expired]
    completed ─▶ rejected          (a bounce or a failed delivery receipt)
    rejected | expired ─▶ awaiting_merge | awaiting_send | awaiting_external  (an operator's retry)

Documents have no state column: a document is Pending until ``stored_at`` is set; its
failures are explained in its error columns and it is never given up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import DetailState as D
from comms_pipeline.core.states import HeaderStatus as H
from comms_pipeline.queue import callbacks
from comms_pipeline.queue.hooks import log_sends_on_change
from comms_pipeline.store.models import callback_outbox_t, details_t, documents_t, headers_t

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

#: ``hook(conn, new_state, ids)``: runs in the transaction that moved ``ids`` to ``new_state``.
ChangeHook = Callable[["Connection", str, list[int]], None]
#: ``hook(conn, old_state, new_state, ids)``: the same, knowing where the rows came from
#: (``old_state`` None: they were born), births included.
MoveHook = Callable[["Connection", "str | None", str, list[int]], None]


class IllegalTransition(CommsError):
    """A state change the queue's state machine does not allow."""


@dataclass(frozen=True)
class StateMachine:
    kind: str
    table: Table
    #: Where the state is kept (``None``: a row has no state column, e.g. documents).
    state_column: str | None
    #: Where a failure is explained: (code column, description column).
    error_columns: tuple[str, str]
    #: Where a row that fails for good ends (used up its attempts, broke its batch).
    failed_state: str | None
    #: The states a row may be created in.
    births: frozenset[str] = frozenset()
    #: The states in which a row waits for a worker (a stage): entering one starts the count
    #: of attempts afresh, so each stage has its own tries (a merge is not a send).
    stages: frozenset[str] = frozenset()
    #: Allowed moves: from state -> the states it may go to.
    moves: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Run, in the changing transaction, for every change of state (after history is written).
    on_change: tuple[ChangeHook, ...] = ()
    #: Run, in the changing transaction, for every move and every birth (callbacks' outbox).
    on_move: tuple[MoveHook, ...] = ()

    def allows(self, old: str | None, new: str) -> bool:
        if old is None:
            return new in self.births
        return old == new or new in self.moves.get(old, frozenset())

    def check(self, changes: Iterable[tuple[str | None, str]]) -> None:
        """Raise :class:`IllegalTransition` for the first change not allowed."""
        for old, new in changes:
            if not self.allows(old, new):
                what = f"born {new!r}" if old is None else f"moved from {old!r} to {new!r}"
                raise IllegalTransition(f"a {self.kind} cannot be {what}")

    def starts_stage(self, old: str | None, new: str | None) -> bool:
        """Whether moving ``old`` -> ``new`` enters a new stage (attempts start afresh)."""
        return new is not None and new != old and new in self.stages

    def changed(self, conn: Connection, new_state: str, ids: list[int],
                old_state: str | None = None) -> None:
        """Rows ``ids`` moved from ``old_state`` to ``new_state`` (in this transaction)."""
        for hook in self.on_change:
            hook(conn, new_state, ids)
        self.moved(conn, old_state, new_state, ids)

    def moved(self, conn: Connection, old_state: str | None, new_state: str,
              ids: list[int]) -> None:
        """Only the move hooks: births (``old_state`` None) and the moves above."""
        if old_state != new_state:
            for hook in self.on_move:
                hook(conn, old_state, new_state, ids)


_PENDING = (D.AWAITING_MERGE, D.AWAITING_SEND, D.AWAITING_EXTERNAL)
_RETRIABLE = frozenset(_PENDING)

HEADERS = StateMachine(
    kind="header",
    table=headers_t,
    state_column="status",
    error_columns=("status_code", "status_reason"),
    failed_state=H.ERROR,
    stages=frozenset({H.AWAITING_PROCESSING, H.AWAITING_EVENT_RESOLUTION}),
    births=frozenset({H.AWAITING_PROCESSING, H.AWAITING_EVENT_RESOLUTION, H.PROCESSED,
                      H.NOT_SENT, H.OPTED_OUT, H.ERROR, H.CANCELLED}),
    moves={
        H.AWAITING_EVENT_RESOLUTION: frozenset({H.AWAITING_PROCESSING, H.CANCELLED, H.ERROR}),
        H.AWAITING_PROCESSING: frozenset({H.PROCESSED, H.NOT_SENT, H.OPTED_OUT, H.ERROR,
                                          H.CANCELLED}),
        H.ERROR: frozenset({H.AWAITING_PROCESSING}),
    },
    on_move=(callbacks.header_moves_hook,),
)

DETAILS = StateMachine(
    kind="detail",
    table=details_t,
    state_column="state",
    error_columns=("error_code", "error_description"),
    failed_state=D.REJECTED,
    stages=frozenset(_PENDING),
    births=frozenset({*_PENDING, D.REJECTED, D.COMPLETED}),
    moves={
        D.AWAITING_MERGE: frozenset({D.AWAITING_SEND, D.AWAITING_EXTERNAL, D.COMPLETED,
                                     D.REJECTED, D.EXPIRED}),
        D.AWAITING_SEND: frozenset({D.COMPLETED, D.REJECTED, D.EXPIRED, D.AWAITING_MERGE}),
        D.AWAITING_EXTERNAL: frozenset({D.COMPLETED, D.COMPLETED_REMOVED, D.REJECTED,
                                        D.EXPIRED}),
        D.COMPLETED: frozenset({D.COMPLETED_REMOVED, D.REJECTED}),
        D.REJECTED: _RETRIABLE,
        D.EXPIRED: _RETRIABLE,
    },
    on_change=(log_sends_on_change,),
    on_move=(callbacks.detail_moves_hook,),
)

DOCUMENTS = StateMachine(
    kind="document",
    table=documents_t,
    state_column=None,
    error_columns=("error_code", "error_description"),
    failed_state=None,
)

#: The callback outbox (:mod:`.callbacks`): an event is pending until delivered; after the
#: last attempt of its schedule it is failed, and the next event of its entry goes. Rows are
#: born pending by the hooks above, in one ``INSERT … SELECT`` per batch, with no history
#: row (the outbox row is its own record).
CALLBACKS = StateMachine(
    kind="callback",
    table=callback_outbox_t,
    state_column="state",
    error_columns=("error_code", "error_description"),
    failed_state=callbacks.FAILED,
    births=frozenset({callbacks.PENDING}),
    moves={callbacks.PENDING: frozenset({callbacks.DELIVERED, callbacks.FAILED})},
)

MACHINES = {m.kind: m for m in (HEADERS, DETAILS, DOCUMENTS, CALLBACKS)}
