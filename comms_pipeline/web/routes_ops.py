"""Monitoring: ``/ready`` (the database reachable and migrated to head) and ``/metrics``
(Prometheus: the database's backlog gauges and this process's counters). No key: a load
balancer and Prometheus call them; they reveal counts, never content."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from comms_pipeline.queue import metrics
from comms_pipeline.web.request_schemas import Readiness

log = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


def schema_revisions(engine: Any) -> tuple[str | None, str | None, bool]:
    """(the database's Alembic revision, the code's head revision, whether this code knows
    the database's revision: False when a newer release has migrated it)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from comms_pipeline.store.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    known = current is not None and any(r.revision == current for r in script.walk_revisions())
    return current, script.get_current_head(), known


@router.get("/ready", response_model=Readiness,
            summary="Ready to serve: the database answers and its schema is at head",
            description="For load balancers and orchestrators: 200 when the database is "
                        "reachable and migrated to the code's head revision (or to a newer "
                        "release's, during a rolling upgrade), else 503 with the reason: "
                        "unreachable, or a schema behind the code (`comms db upgrade` "
                        "migrates). `/health` only says the process and the database answer.",
            responses={503: {"model": Readiness,
                             "description": "Not ready: the database is unreachable or "
                                            "not migrated to head"}})
def ready(request: Request) -> Any:
    try:
        current, head, known = schema_revisions(request.app.state.engine)
    except Exception as exc:  # any database failure means "not ready"
        log.warning("api.ready_failed", error=type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable",
                             "schema": None, "head": None}, status_code=503)
    if current != head and (known or current is None):  # behind the code: not migrated
        return JSONResponse({"status": "unavailable", "database": "ok", "schema": current,
                             "head": head}, status_code=503)
    return {"status": "ok", "database": "ok", "schema": current, "head": head}


@router.get("/metrics", response_class=Response,
            summary="Prometheus metrics: backlog, ages, outcomes, durations",
            description="The text exposition format. Database gauges (`comms_backlog`, "
                        "`comms_scheduled_later`, `comms_oldest_pending_age_seconds`, "
                        "`comms_requests`, `comms_queue_entries`, "
                        "`comms_queue_failed_entries`, `comms_documents_failing_storage`) are "
                        "read at each scrape; `comms_worker_*` counters and histograms are "
                        "this process's (daemons and jobs serve theirs with "
                        "`--metrics-port`).",
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text format 0.0.4"}})
def metrics_route(request: Request) -> Response:
    return Response(metrics.exposition(request.app.state.metrics),
                    media_type=metrics.CONTENT_TYPE)
