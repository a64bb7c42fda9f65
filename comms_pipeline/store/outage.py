"""Telling a database that is away from a database that said no, and waiting for it to return.

A restart, a failover to a standby or a network blip of a few seconds is routine: a worker
that meets one must wait for the database, not die. :func:`is_db_unavailable` says whether an
error is of that kind (the connection was lost or refused, the server is shutting down or
starting, the server reached is a read-only standby, a lock or statement timeout fired);
:class:`DbWaiter` paces the retries (backoff with jitter, ``db.unavailable`` logged once and
then at a slowing interval) and gives up after the configured limit.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import exc as sa_exc

from comms_pipeline.core.errors import CommsError

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

#: SQLSTATEs (or their classes) that say "not now" rather than "never".
TRANSIENT_SQLSTATES = (
    "08",      # connection exception
    "57P",     # operator intervention: admin shutdown, crash shutdown, cannot connect now
    "53",      # insufficient resources (too many connections, disk full on the server)
    "25006",   # read-only SQL transaction: we reached a standby (failover in progress)
    "25P03",   # idle-in-transaction session timeout: our session was ended, not our data
    "55P03",   # lock not available (lock_timeout)
    "57014",   # query canceled (statement_timeout)
    "40001",   # serialization failure
    "40P01",   # deadlock detected
)
#: Words of SQLite (and of libpq before a SQLSTATE exists) for a database that is away.
TRANSIENT_MESSAGES = (
    "database is locked", "disk i/o error", "unable to open database file",
    "could not connect", "connection refused", "server closed the connection",
    "terminating connection", "the database system is", "connection timed out",
    "no route to host", "connection reset", "ssl connection has been closed",
    "could not receive data", "could not send data", "connection already closed",
    "timeout expired", "read-only transaction",
)


#: The exit code of a ``--once`` run that gave up waiting for the database (sysexits.h's
#: EX_TEMPFAIL: "try again later"), so that cron wrappers and systemd can tell it from a bug.
EX_TEMPFAIL = 75


class DatabaseUnavailable(CommsError):
    """The database stayed away longer than the configured limit."""


def is_db_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy or DBAPI error) means the database is away for now."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig: BaseException | None = exc.orig
    elif isinstance(exc, sa_exc.SQLAlchemyError):
        # e.g. "Can't reconnect until invalid transaction is rolled back"
        return isinstance(exc, sa_exc.PendingRollbackError | sa_exc.TimeoutError)
    else:
        orig = exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code and "from stdin failed" in str(orig):
        # A COPY the client itself broke off (a value it could not encode): the data's
        # fault, reported as "query canceled", not an outage.
        return False
    if code:
        return code.startswith(TRANSIENT_SQLSTATES)
    if not isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.InternalError):
        return False
    text = str(orig).lower()
    return any(word in text for word in TRANSIENT_MESSAGES)


class DbWaiter:
    """Paces the retries of a worker whose database is away.

    ``limit_seconds`` None waits forever (daemons); a number gives up with
    :class:`DatabaseUnavailable` once the database has been away that long (``--once`` jobs,
    whose next run comes from cron anyway).
    """

    def __init__(self, worker: str, *, limit_seconds: float | None, base: float = 0.5,
                 cap: float = 15.0, on_wait: Callable[[bool], None] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.worker = worker
        self.limit_seconds = limit_seconds
        self.base = base
        self.cap = cap
        self.on_wait = on_wait
        self.stop = stop or threading.Event()
        self._since: float | None = None
        self._attempt = 0
        self._next_log = 0.0
        self._log_every = 10.0

    @property
    def waiting(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        """The database was not there: log (now and then), sleep a backoff, or give up."""
        now = time.monotonic()
        if self._since is None:
            self._since, self._attempt, self._next_log, self._log_every = now, 0, now, 10.0
            if self.on_wait is not None:
                self.on_wait(True)
        away = now - self._since
        if now >= self._next_log:
            log.warning("db.unavailable", worker=self.worker, away_seconds=round(away, 1),
                        error=_describe(exc))
            self._next_log = now + self._log_every
            self._log_every = min(self._log_every * 2, 600.0)
        if self.limit_seconds is not None and away >= self.limit_seconds:
            log.error("db.gave_up", worker=self.worker, away_seconds=round(away, 1))
            raise DatabaseUnavailable(
                f"the database has been unavailable for {away:.0f} s "
                f"(limit {self.limit_seconds:.0f} s)") from exc
        self._attempt += 1
        delay = min(self.cap, self.base * 2 ** min(self._attempt - 1, 16))
        self.stop.wait(random.uniform(delay / 2, delay))  # full jitter in the upper half

    def recovered(self) -> None:
        """The database answered again."""
        if self._since is None:
            return
        log.info("db.available", worker=self.worker,
                 away_seconds=round(time.monotonic() - self._since, 1))
        self._since = None
        if self.on_wait is not None:
            self.on_wait(False)


def _describe(exc: BaseException) -> str:
    """The first line of the driver's message: enough to tell refused from shutting down."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[:1]
    return (first[0] if first else type(orig).__name__)[:200]
