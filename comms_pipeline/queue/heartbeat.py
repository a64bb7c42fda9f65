"""Daemon heartbeats: one row per running instance, refreshed while it works."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.store.dialect import upsert
from comms_pipeline.store.models import heartbeats_t
from comms_pipeline.store.outage import is_db_unavailable

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Engine

hb_t = heartbeats_t


def instance_id(name: str) -> str:
    return f"{name}@{socket.gethostname()}:{os.getpid()}"


def waiting_marker(run_dir: Path, pid: int) -> Path:
    """The file that says process ``pid`` is waiting for the database (it cannot say so in
    the database): ``comms daemon status`` shows it."""
    return run_dir / f"waiting-for-database-{pid}"


class Heartbeat:
    def __init__(self, engine: Engine, name: str, every: float,
                 run_dir: Path | None = None) -> None:
        self.engine = engine
        self.run_dir = run_dir
        self.name = name
        self.instance = instance_id(name)
        self.every = every
        self._last: datetime | None = None
        self.processed = 0

    def waiting(self, waiting: bool) -> None:
        """Show (or stop showing) "waiting for the database" where it can be seen."""
        if self.run_dir is None:
            return
        marker = waiting_marker(self.run_dir, os.getpid())
        try:
            if waiting:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"{utcnow().isoformat()} {self.instance}\n")
            else:
                marker.unlink(missing_ok=True)
        except OSError:  # a read-only or full var/: the log says it too
            pass

    def beat(self, force: bool = False) -> bool:
        """Refresh the row (every ``every`` seconds); False when the database is away: a
        heartbeat is best effort, and its absence is what says the worker is waiting."""
        try:
            self._beat(force)
        except Exception as exc:
            if not is_db_unavailable(exc):
                raise
            self._last = None  # beat again as soon as the database is back
            return False
        return True

    def _beat(self, force: bool) -> None:
        now = utcnow()
        if not force and self._last and (now - self._last).total_seconds() < self.every:
            return
        self._last = now
        values = {"instance": self.instance, "name": self.name, "host": socket.gethostname(),
                  "pid": os.getpid(), "started_at": now, "beat_at": now, "stopped_at": None,
                  "processed": self.processed}
        with self.engine.begin() as conn:
            upsert(conn, hb_t, values, ["instance"],
                   {"beat_at": now, "processed": self.processed, "stopped_at": None})

    def stopped(self) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(update(hb_t).where(hb_t.c.instance == self.instance)
                             .values(stopped_at=utcnow(), beat_at=utcnow(),
                                     processed=self.processed))
        except Exception as exc:  # the row goes stale instead: the same news, later
            if not is_db_unavailable(exc):
                raise


def live_instances(engine: Engine, stale_after: float) -> list[dict]:
    """Every known instance with ``alive`` = not stopped and beat within ``stale_after``."""
    limit = utcnow() - timedelta(seconds=stale_after)
    with engine.connect() as conn:
        rows = conn.execute(select(hb_t).order_by(hb_t.c.name, hb_t.c.instance)).mappings()
        return [{**r, "fresh": r["stopped_at"] is None and r["beat_at"] >= limit} for r in rows]
