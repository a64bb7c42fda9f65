"""Health of started daemons: pidfiles on this machine joined with heartbeats in the database."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from comms_pipeline.core.clock import utcnow
from comms_pipeline.queue.heartbeat import live_instances, waiting_marker
from comms_pipeline.runtime import supervisor as supervise
from comms_pipeline.store.outage import is_db_unavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.settings.config import Settings


def daemon_health(settings: Settings, engine: Engine) -> tuple[list[dict[str, Any]], bool]:
    """Every started copy here, and every other instance seen by the database.

    Unhealthy: a pidfile whose process is gone, or a live process whose heartbeat is older than
    ``daemons.stale_after_seconds``. Instances that were not started here (other machines,
    foreground runs) are listed for information only.
    """
    stale_after = settings.daemons.stale_after_seconds
    try:
        beats = {(b["host"], b["pid"]): b for b in live_instances(engine, stale_after)}
    except Exception as exc:
        if not is_db_unavailable(exc):
            raise
        beats = {}  # the database is away: what this machine knows is still worth showing
    host = socket.gethostname()
    now = utcnow()
    rows, healthy = [], True
    for inst in supervise.instances(settings.var_dir):
        beat = beats.pop((host, inst.pid), None)
        age = (now - beat["beat_at"]).total_seconds() if beat else None
        if not inst.alive:
            state = "dead"
        elif waiting_marker(supervise.run_dir(settings.var_dir), inst.pid).exists():  # type: ignore[arg-type]
            state = "waiting for the database"
        elif beat is None:
            started_ago = time.time() - inst.pidfile.stat().st_mtime
            state = "starting" if started_ago < stale_after else "stale"
        else:
            state = "stale" if age > stale_after else "running"  # type: ignore[operator]
        healthy = healthy and state in ("running", "starting")
        rows.append({"name": f"{inst.name}-{inst.copy}", "pid": inst.pid, "host": host,
                     "state": state, "beat_age": age,
                     "processed": beat["processed"] if beat else 0})
    for beat in beats.values():
        if beat["stopped_at"] is not None:
            continue
        age = (now - beat["beat_at"]).total_seconds()
        rows.append({"name": beat["name"], "pid": beat["pid"], "host": beat["host"],
                     "state": "running" if beat["fresh"] else "stale", "beat_age": age,
                     "processed": beat["processed"]})
    return rows, healthy
