"""How an idle worker waits for new work: until a hint says its queue may have some, until it
is asked to stop, or until the poll interval has passed, whichever comes first.

On PostgreSQL the rows that make work for a stage send a ``NOTIFY`` on that stage's channel
(statement-level triggers of migration 0009, so that workflow systems inserting by plain SQL
wake the workers too; one notification per statement and channel, however many rows). An idle
worker ``LISTEN`` s on a connection of its own (psycopg2, autocommit) and ``select()`` s on it:
it claims as soon as a notification arrives. A notification is only a hint: the claim decides
what is whose, and the poll interval stays as the fallback for a missed one (a listening
connection that was lost, work that becomes due by the clock). On SQLite there is nothing to
listen to: the worker polls (the interval may be short there, e.g. 0.2 s).

The channels, one per stage, are named here and in the migration's triggers alike.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from comms_pipeline.store.dialect import is_postgres

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = structlog.get_logger(__name__)

#: New request headers awaiting processing (the Comms Monitor job).
MONITOR_CHANNEL = "comms_monitor"
#: Documents not yet in long-term storage (the storage daemon).
STORAGE_CHANNEL = "comms_storage"
#: Queue entries handed to external systems (the push-external daemon).
EXTERNAL_CHANNEL = "comms_external"
#: How long a lost listening connection waits before it is opened again.
RECONNECT_SECONDS = 5.0
#: The longest single ``select()``: a stop asked without :meth:`Waker.interrupt` is seen
#: within this long.
SLICE_SECONDS = 0.5


def merge_channel(media: str) -> str:
    """Queue entries of ``media`` entering Awaiting Merge (the email and letter monitors)."""
    return f"comms_merge_{media}"


def send_channel(media: str) -> str:
    """Queue entries of ``media`` entering Awaiting Send (that media's daemon)."""
    return f"comms_send_{media}"


class Waker(Protocol):
    """What an idle worker waits on."""

    def wait(self, timeout: float) -> bool:
        """Block for at most ``timeout`` seconds; True when a hint of new work arrived."""
        ...

    def interrupt(self) -> None:
        """End the current (or the next) :meth:`wait` at once: the worker is stopping.
        Safe from a signal handler."""
        ...

    def close(self) -> None: ...


class PollWaker:
    """Waits out the poll interval (SQLite; or PostgreSQL with listening switched off)."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()

    def wait(self, timeout: float) -> bool:
        self._stop.wait(timeout)
        return False

    def interrupt(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Nothing to release."""


class PgWaker:
    """``LISTEN`` s on ``channels`` on a dedicated psycopg2 connection in autocommit.

    The connection is opened when the waker is made, before the worker's first claim, so a
    notification sent between an empty claim and the wait is not lost. A connection that
    fails is dropped and opened again after :data:`RECONNECT_SECONDS`; meanwhile the waker
    polls, and the wait after a reconnection reports a hint (something may have been missed).
    """

    def __init__(self, engine: Engine, channels: Iterable[str],
                 stop: threading.Event | None = None) -> None:
        self._engine = engine
        self.channels = tuple(dict.fromkeys(channels))
        self._stop = stop or threading.Event()
        self._conn: Any = None
        self._retry_at = 0.0
        self._missed = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._connect()
        self._missed = False  # the first claim looks anyway

    def _connect(self) -> None:
        import psycopg2

        try:
            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            conn = psycopg2.connect(*args, **kwargs)
            conn.autocommit = True
            with conn.cursor() as cur:
                for channel in self.channels:
                    cur.execute(f'LISTEN "{channel}"')
        except psycopg2.Error as exc:
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
            log.warning("wake.listen_unavailable", channels=list(self.channels),
                        error=type(exc).__name__, retry_in=RECONNECT_SECONDS)
            return
        self._conn = conn
        self._missed = True
        log.debug("wake.listening", channels=list(self.channels))

    def _drop(self, exc: BaseException) -> None:
        log.warning("wake.listen_lost", channels=list(self.channels),
                    error=type(exc).__name__, retry_in=RECONNECT_SECONDS)
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None
        self._retry_at = time.monotonic() + RECONNECT_SECONDS

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def _take(self) -> bool:
        """Consume the notifications already read; whether there were any."""
        import psycopg2

        try:
            self._conn.poll()
        except psycopg2.Error as exc:
            self._drop(exc)
            return True  # the connection went: look now rather than after the interval
        if self._conn.notifies:
            self._conn.notifies.clear()
            return True
        return False

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._conn is None and time.monotonic() >= self._retry_at:
            self._connect()
        if self._missed:
            self._missed = False
            return True
        if self._conn is not None and self._take():
            return True
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            fds: list[Any] = [self._read] if self._conn is None else [self._read, self._conn]
            ready, _, _ = select.select(fds, [], [], min(left, SLICE_SECONDS))
            if self._read in ready:
                with contextlib.suppress(OSError):
                    os.read(self._read, 512)
                return False
            if self._conn is not None and self._conn in ready and self._take():
                return True
        return False

    def interrupt(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # a full pipe already says it
            os.write(self._write, b"x")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def make_waker(engine: Engine | None, channels: Iterable[str | None],
               stop: threading.Event | None = None, *, listen: bool = True) -> Waker:
    """A :class:`PgWaker` on PostgreSQL when ``listen`` and there is a channel to listen to,
    else a :class:`PollWaker`."""
    named = [c for c in channels if c]
    if listen and named and engine is not None and is_postgres(engine):
        return PgWaker(engine, named, stop)
    return PollWaker(stop)
