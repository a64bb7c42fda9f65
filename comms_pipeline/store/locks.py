"""Named locks between processes: who may run a notification type, who is the scheduler.

On PostgreSQL a lock is a session-level advisory lock (``pg_try_advisory_lock``) held on a
connection of its own for as long as the holder lives: when the process dies — even by
SIGKILL — its connection closes and the server releases the lock at once, so a waiting
process takes over without any lease to expire. On SQLite (one machine by nature) it is an
``flock`` on a file under ``var/run/locks``, which the kernel releases when the holder dies.

Taking a lock polls (``try`` then sleep) rather than blocking in the server, so a waiter is
never a statement a ``statement_timeout`` cancels, and it can give up or be stopped.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from comms_pipeline.core.errors import CommsError
from comms_pipeline.store.dialect import advisory_unlock, is_postgres, try_advisory_lock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = structlog.get_logger(__name__)


class LockBusyError(CommsError):
    """The lock is held by another process (and the caller chose not to wait)."""


class NamedLock:
    """A lock named ``namespace``/``key`` between the processes of one pipeline."""

    def __init__(self, engine: Engine, var_dir: Path, namespace: str, key: str) -> None:
        self.engine = engine
        self.namespace = namespace
        self.key = key
        self.postgres = is_postgres(engine)
        self.path = Path(var_dir) / "run" / "locks" / f"{namespace}.{_safe(key)}.lock"
        self._conn: Connection | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether this process now holds it."""
        if self.held:
            return True
        if self.postgres:
            try:
                conn = self.engine.connect()
            except DBAPIError:  # the database is away: not ours yet, try again later
                log.warning("lock.database_unavailable", namespace=self.namespace,
                            key=self.key)
                return False
            try:
                got = try_advisory_lock(conn, self.namespace, self.key)
                conn.commit()  # a session lock: it outlives the transaction, held idle
            except DBAPIError:
                conn.invalidate()
                conn.close()
                log.warning("lock.database_unavailable", namespace=self.namespace,
                            key=self.key)
                return False
            except BaseException:
                conn.close()
                raise
            if got:
                self._conn = conn
                return True
            conn.close()
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self, *, wait: bool = True, poll: float = 0.5,
                stop: threading.Event | None = None, on_wait: Any = None) -> bool:
        """Take the lock, waiting for it if ``wait`` (``on_wait()`` is called once, when the
        first try finds it held). Return False if ``stop`` was set while waiting; raise
        :class:`LockBusyError` if it is held and ``wait`` is false."""
        if self.try_acquire():
            return True
        if not wait:
            raise LockBusyError(f"{self.namespace} {self.key} is held by another process")
        if on_wait is not None:
            on_wait()
        while True:
            if stop is not None:
                if stop.wait(poll):
                    return False
            else:
                time.sleep(poll)
            if self.try_acquire():
                return True

    def alive(self) -> bool:
        """Whether the lock is still held: on PostgreSQL, whether its connection still
        answers (a server restart or a network cut ends the session, and the lock)."""
        if self._fd is not None:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1")).scalar()
            self._conn.commit()
            return True
        except Exception:
            log.warning("lock.lost", namespace=self.namespace, key=self.key)
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                advisory_unlock(self._conn, self.namespace, self.key)
                self._conn.commit()
                self._conn.close()
                self._conn = None
            except Exception:  # the session is gone: so is its lock
                log.warning("lock.release_failed", namespace=self.namespace, key=self.key)
                self._drop()
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                log.debug("lock.close_failed", exc_info=True)
            self._conn = None

    def __enter__(self) -> NamedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:100]
