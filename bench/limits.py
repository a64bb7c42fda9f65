"""Benchmark: what a rate limit costs a Web API call, and the counter against its raw limit.

The pipeline: ``GET /v1/queue?limit=1`` through the app in-process (Starlette's TestClient,
one worker), by a key whose system has a rate limit (every call counts itself in
``usage_counters`` in its own transaction) and by a key without one (no query at all). The
raw limit, in the same run on the same database: the bare counter statement alone (one
``INSERT … ON CONFLICT DO UPDATE … RETURNING`` per transaction, as the limiter issues it)
against a bare ``UPDATE … SET n = n + 1`` per transaction (both committing without waiting
for the disk, as the limiter does).

    .venv/bin/python bench/limits.py [--n 2000] [--backend sqlite --backend postgresql]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.common import OUT, fresh_database, row, timer
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.pipeline.apikeys import create_system_key
from comms_pipeline.pipeline.quotas import KeyLimits, Scope, check_rate, set_limits
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.dialect import commit_without_waiting


def run(backend: str, n: int) -> None:
    from fastapi.testclient import TestClient

    from comms_pipeline.settings.config import load_settings
    from comms_pipeline.web.app import create_app

    url = fresh_database(backend, "bench_limits")
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        limited_id = add_external_system(conn, "LIMITED", "Limited")
        add_external_system(conn, "FREE", "Free")
        limited = create_system_key(conn, "LIMITED").key
        free = create_system_key(conn, "FREE").key
        set_limits(conn, system_id=limited_id, rate=10**9)
    settings = load_settings(path=Path(__file__).resolve().parents[1] / "config" / "comms.toml",
                             environ={"COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(OUT)})
    api = TestClient(create_app(settings, engine))
    print(f"{backend}:")
    rates = {}
    for label, key in (("GET /v1/queue, no limits", free),
                       ("GET /v1/queue, rate-limited", limited)):
        headers = {"Authorization": f"Bearer {key}"}
        api.get("/v1/queue", params={"limit": 1}, headers=headers).raise_for_status()
        with timer() as t:
            for _ in range(n):
                api.get("/v1/queue", params={"limit": 1}, headers=headers)
        rates[label] = row(label, n, t[0], "calls")
    limits = KeyLimits(0, "", False, (Scope("system:bench", "bench", rate=10**9),))
    with timer() as t:
        for _ in range(n):
            with engine.begin() as conn:
                commit_without_waiting(conn)
                check_rate(conn, limits)
    counter = row("the limiter's counter upsert, one per txn", n, t[0], "txns")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE raw_counter (id INTEGER PRIMARY KEY, n BIGINT)"))
        conn.execute(text("INSERT INTO raw_counter VALUES (1, 0)"))
    with timer() as t:
        for _ in range(n):
            with engine.begin() as conn:
                commit_without_waiting(conn)
                conn.execute(text("UPDATE raw_counter SET n = n + 1 WHERE id = 1"))
    raw = row("raw: UPDATE n = n + 1, one per txn", n, t[0], "txns")
    print(f"  rate-limited calls / unlimited calls: "
          f"{rates['GET /v1/queue, rate-limited'] / rates['GET /v1/queue, no limits']:.2f}")
    print(f"  counter upsert / raw update:          {counter / raw:.2f}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        run(backend, args.n)


if __name__ == "__main__":
    main()
