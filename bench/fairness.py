"""Benchmark: the cost of fair queueing — claim rate with and without the interleave of systems.

A backlog of ``--n`` SMS queue entries waits to be sent; one worker claims ``--claims``
batches of ``--batch`` entries (each batch is then marked done by a bare ``UPDATE``, outside
the timing, so that the next claim finds fresh work as a running daemon does). Cases:

* **one lane**: no external system is registered; the claim is the same statement as before
  fair queueing (priority, then id, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL);
* **two lanes**: systems A (90 %) and B (10 %), both busy: each claim reads each system's next
  batch and interleaves them (``row_number()`` per system and priority);
* **ten lanes**: ten systems, equal shares;
* **raw limit**: the bare claim statement in SQL, sent by the driver (no SQLAlchemy, no lane).

It also prints PostgreSQL's plan of the fair claim at the full backlog (``EXPLAIN ANALYZE``),
to show that every arm is an ordered index range.

    .venv/bin/python bench/fairness.py [--n 100000] [--batch 100] [--claims 100]
                                       [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import time
from datetime import timedelta

from sqlalchemy import insert, text, update

from bench.common import fresh_database, peak_rss_mb
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.queue.claims import Claimer
from comms_pipeline.queue.lanes import fair_candidates
from comms_pipeline.queue.work_queues import detail_queue
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, headers_t

ROOT = Path(__file__).resolve().parents[1]


def prepare(backend: str, n: int, lanes: int):  # type: ignore[no-untyped-def]
    url = fresh_database(backend, f"comms_bench_fair_{lanes}")
    upgrade(url)
    settings = load_settings(environ={
        "COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(ROOT / "bench" / "out" / "var")})
    engine = make_engine(settings.database_url)
    now = utcnow()
    with engine.begin() as conn:
        systems: list[int | None] = [None]
        if lanes > 1:
            systems = [add_external_system(conn, f"S{i}", f"System {i}") for i in range(lanes)]
        header = conn.execute(insert(headers_t).values(
            contact_ref="C-1", template_code="SMS", status="processed", created_at=now,
        ).returning(headers_t.c.id)).scalar_one()
        shares = [0.9, 0.1] if lanes == 2 else [1 / len(systems)] * len(systems)
        rows = []
        for system, share in zip(systems, shares, strict=True):
            rows += [system] * int(n * share)
        step = 20000
        for start in range(0, len(rows), step):
            conn.execute(insert(details_t), [
                {"header_id": header, "media": "sms", "direction": "outgoing",
                 "address": f"+3579{i:07d}", "body": "code", "state": "awaiting_send",
                 "priority": 2, "requested_by_system_id": system, "created_at": now}
                for i, system in enumerate(rows[start:start + step], start)])
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE request_details"))
            conn.commit()
    return settings, engine


def mark_done(engine, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id.in_(ids))
                     .values(state="completed", claimed_by=None, lease_until=None))


def claim_once(settings, engine) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """One claim by the pipeline's claimer: (rows, seconds); the rows are then marked done."""
    claimer = Claimer(engine, "bench", settings.claims)
    start = time.perf_counter()
    rows = claimer.claim(detail_queue("sms"), BATCH[0])
    took = time.perf_counter() - start
    mark_done(engine, [r.id for r in rows])
    return len(rows), took


BATCH = [100]


RAW_PG = ("UPDATE request_details SET claimed_by = %(w)s, lease_until = %(until)s, "
          "attempts = attempts + 1 WHERE id = ANY(ARRAY(SELECT id FROM request_details "
          "WHERE state = 'awaiting_send' AND media = 'sms' AND external_system_id IS NULL "
          "AND (lease_until IS NULL OR lease_until < %(now)s) "
          "AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s) "
          "ORDER BY priority, id LIMIT %(n)s FOR UPDATE SKIP LOCKED)) RETURNING *")
RAW_SQLITE = ("UPDATE request_details SET claimed_by = ?, lease_until = ?, "
              "attempts = attempts + 1 WHERE id IN (SELECT id FROM request_details "
              "WHERE state = 'awaiting_send' AND media = 'sms' AND external_system_id IS NULL "
              "AND (lease_until IS NULL OR lease_until < ?) "
              "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
              "ORDER BY priority, id LIMIT ?) RETURNING *")


def raw_once(engine, backend: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The same claim as bare SQL through the driver: (rows, seconds)."""
    now = utcnow()
    until = now + timedelta(seconds=60)
    start = time.perf_counter()
    with engine.begin() as conn:
        if backend == "postgresql":
            got = conn.exec_driver_sql(RAW_PG, {"w": "raw", "until": until, "now": now,
                                                "n": BATCH[0]}).all()
        else:
            got = conn.exec_driver_sql(RAW_SQLITE, ("raw", until.isoformat(" "),
                                                    now.isoformat(" "), now.isoformat(" "),
                                                    BATCH[0])).all()
    took = time.perf_counter() - start
    mark_done(engine, [r[0] for r in got])
    return len(got), took


def explain(engine, batch: int) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL's plan of the fair claim's candidates (what is left of the backlog)."""
    queue = detail_queue("sms")
    t = details_t
    now = utcnow()
    where = [queue.pending(), (t.c.lease_until.is_(None)) | (t.c.lease_until < now),
             (t.c.next_attempt_at.is_(None)) | (t.c.next_attempt_at <= now)]
    with engine.connect() as conn:
        query = fair_candidates(queue, where, batch)
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}")).scalars().all()
        conn.rollback()
    print("  plan of the fair claim's candidates (two lanes):")
    for line in plan:
        if "Index" in line or "Execution" in line or "Planning" in line:
            print(f"    {line.strip()}")


CASES = ((1, "one lane (as before)"), (2, "two lanes (90/10)"), (10, "ten lanes"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--claims", type=int, default=100)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    args = parser.parse_args()
    BATCH[0] = args.batch
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(f"{backend}: backlog {args.n:,} SMS entries each, {args.claims} claims of "
              f"{args.batch} per case, taken in turn (median claim time; the machine's load "
              f"hits every case alike)")
        dbs = {label: prepare(backend, args.n, lanes) for lanes, label in CASES}
        times: dict[str, list[float]] = {label: [] for _, label in CASES}
        times["raw limit (bare SQL, one lane)"] = []
        one = dbs[CASES[0][1]]
        for _ in range(args.claims):
            for _, label in CASES:
                count, took = claim_once(*dbs[label])
                times[label].append(took / max(count, 1))
            count, took = raw_once(one[1], backend)
            times["raw limit (bare SQL, one lane)"].append(took / max(count, 1))
        base = statistics.median(times[CASES[0][1]])
        for label, per_row in times.items():
            mid = statistics.median(per_row)
            print(f"  {label:<32} {1 / mid:>10,.0f} rows claimed/s "
                  f"({mid * args.batch * 1000:6.2f} ms a claim; {base / mid:4.2f} of one lane)")
        if backend == "postgresql":
            explain(dbs[CASES[1][1]][1], args.batch)
        for _, engine in dbs.values():
            engine.dispose()
    print(f"  peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
