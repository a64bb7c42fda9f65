"""Prometheus metrics: what each process did, and what the database says is left to do.

Two kinds, kept apart so that adding processes never multiplies a series:

* **process metrics** (counters and histograms of this process's work): outcomes per stage,
  media, outcome and error code; claim and batch durations; rows refused after a lease
  takeover. Every daemon and job serves its own with ``--metrics-port``.
* **database gauges** (read at scrape time from the shared database): backlog ready now per
  stage, what is scheduled for later, the oldest pending row's age, requests by status, queue
  entries by media and state, rejected entries by media and error code, storage failures.
  The Web API serves these (with its own process metrics) at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from comms_pipeline.core.states import DetailState, public_state
from comms_pipeline.store.models import details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.queue.claims import Outcome

#: This process's own metrics (not the library's global registry: tests build many apps).
PROCESS = CollectorRegistry(auto_describe=True)
OUTCOMES = Counter("comms_worker_outcomes", "Rows a job or daemon finished, by outcome: the "
                   "state it moved the row to, 'retry' (deferred after a transient failure) "
                   "or 'gave_up' (the last attempt failed)",
                   ["stage", "media", "outcome", "code"], registry=PROCESS)
REFUSED = Counter("comms_worker_refused", "Finished rows refused because another worker took "
                  "their claim over (lease passed)", ["stage"], registry=PROCESS)
CLAIM_SECONDS = Histogram("comms_worker_claim_seconds", "Time to claim one batch",
                          ["stage"], registry=PROCESS)
BATCH_SECONDS = Histogram("comms_worker_batch_seconds", "Time to handle and finish one batch "
                          "(merging or sending, and writing the outcomes)", ["stage"],
                          registry=PROCESS,
                          buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def outcome_name(o: Outcome, row: Any, max_attempts: int) -> str:
    """What became of a row: the state it moved to, ``retry`` (deferred after a transient
    failure) or ``gave_up`` (its last attempt failed)."""
    if o.action == "retry":
        return "gave_up" if getattr(row, "attempts", 0) >= max_attempts else "retry"
    return str(o.state or "done")


def record_outcomes(stage: str, rows: Sequence[Any], outcomes: Sequence[Outcome],
                    refused: set[int], max_attempts: int) -> dict[str, int]:
    """Count what a batch did (released rows are not counted: nothing happened to them);
    return the batch's counts by outcome name."""
    by_id = {r.id: r for r in rows}
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.action == "release" or o.id in refused:
            continue
        row = by_id.get(o.id)
        media = str(getattr(row, "media", None) or "")
        outcome = outcome_name(o, row, max_attempts)
        counts[outcome] = counts.get(outcome, 0) + 1
        OUTCOMES.labels(stage, media, outcome, str(o.code or "")).inc()
    if refused:
        REFUSED.labels(stage).inc(len(refused))
    return counts


@contextmanager
def timed(histogram: Histogram, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(stage).observe(time.perf_counter() - started)


class DatabaseCollector(Collector):
    """Gauges read from the database at each scrape (a few grouped counts)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from comms_pipeline.queue.status import pipeline_status

        data = pipeline_status(self.engine)
        for name, doc, key in (
                ("comms_backlog", "Rows a stage can work now (not those scheduled for later)",
                 "backlog"),
                ("comms_scheduled_later", "Rows of a stage waiting for a send-after time or a "
                 "retry's backoff", "scheduled_later"),
                ("comms_oldest_pending_age_seconds", "Age of a stage's oldest row ready now "
                 "(0: none)", "oldest_pending_age_seconds")):
            gauge = GaugeMetricFamily(name, doc, labels=["stage"])
            for stage, value in data[key].items():
                gauge.add_metric([stage], float(value or 0))
            yield gauge
        requests = GaugeMetricFamily("comms_requests", "Request headers by status",
                                     labels=["status"])
        for status, count in data["headers"].items():
            requests.add_metric([status], count)
        yield requests
        entries = GaugeMetricFamily("comms_queue_entries", "Queue entries by media and "
                                    "life-cycle state", labels=["media", "state"])
        for media, states in data["details_by_media"].items():
            for state, count in states.items():
                entries.add_metric([media, state], count)
        yield entries
        yield self._rejected()
        failing = GaugeMetricFamily("comms_documents_failing_storage", "Documents not stored "
                                    "yet, by the storage gateway's last error code",
                                    labels=["code"])
        for code, count in data["documents"]["failing_storage"].items():
            failing.add_metric([str(code)], count)
        yield failing

    def _rejected(self) -> GaugeMetricFamily:
        d = details_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(d.media, d.state, d.error_code, func.count())
                .where(d.state.in_((DetailState.REJECTED, DetailState.EXPIRED)),
                       d.is_test.is_(False))  # test keys' simulated failures are no alarm
                .group_by(d.media, d.state, d.error_code)).all()
        gauge = GaugeMetricFamily("comms_queue_failed_entries", "Queue entries that ended "
                                  "Rejected or Expired, by media and error code",
                                  labels=["media", "state", "code"])
        for media, state, code, count in rows:
            gauge.add_metric([media, public_state(state).value, str(code or "")], count)
        return gauge


class _Forward(Collector):
    """The process registry's metrics, inside another registry."""

    def collect(self) -> Iterator[Any]:
        yield from PROCESS.collect()


def registry(engine: Engine | None = None) -> CollectorRegistry:
    """This process's metrics, plus the database gauges when ``engine`` is given."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Forward())
    if engine is not None:
        combined.register(DatabaseCollector(engine))
    return combined


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


def serve(port: int, addr: str = "0.0.0.0", engine: Engine | None = None) -> None:
    """Serve ``/metrics`` on ``port`` from a background thread (``--metrics-port``)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=registry(engine))
