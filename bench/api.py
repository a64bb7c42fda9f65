"""Benchmark: an external system pulling and completing its queue entries over the Web API.

The pipeline: uvicorn serving the app in a subprocess, and one client (httpx, keep-alive)
that lists a page of Pending entries, completes each with its own POST, and repeats until
none is left — every entry one compare-and-set transition with its history row, exactly as a
portal would do it; then the same with one ``POST /v1/queue/batch`` per page. The raw limits,
measured in the same run on the same database: the same page reads and the same per-entry
transitions (UPDATE ... WHERE state = 'awaiting_external' plus the history INSERT, one
transaction each) done directly in SQL, and the floor of one UPDATE per page.

    .venv/bin/python bench/api.py [--n 20000] [--backend sqlite --backend postgresql]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from sqlalchemy import bindparam, func, insert, select, text

from bench.common import OUT, fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, add_external_system
from comms_pipeline.pipeline.apikeys import create_system_key
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, headers_t

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_system(engine) -> tuple[int, int, str]:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        system_id = add_external_system(conn, "PORTAL", "Customer portal")
        key = create_system_key(conn, "PORTAL").key
        contact_id = add_contact(conn, "C-1", "Bench Contact", addresses=[
            AddressSpec("email", "c1@example.com", is_primary=True)])
    return system_id, contact_id, key


def seed_entries(engine, system_id: int, contact_id: int, n: int) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with engine.begin() as conn:
        header_id = conn.execute(insert(headers_t).values(
            contact_ref="C-1", template_code="PORTAL_INBOX", status="processed",
            created_at=now).returning(headers_t.c.id)).scalar_one()
        for start in range(0, n, 5000):
            conn.execute(insert(details_t), [
                {"header_id": header_id, "contact_id": contact_id, "media": "external",
                 "direction": "outgoing", "external_system_id": system_id,
                 "subject": f"Inbox message {i}", "body": f'{{"message": {i}}}',
                 "state": "awaiting_external", "priority": 2, "created_at": now}
                for i in range(start, min(start + 5000, n))])


def pending(engine, system_id: int) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(details_t).where(
            details_t.c.state == "awaiting_external",
            details_t.c.external_system_id == system_id)).scalar_one()


def start_server(url: str, var: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(var),
           "COMMS_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "comms_pipeline.web.app:create_app_from_environment",
         "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the API server did not start")


def pull_and_complete_http(base: str, key: str, page: int, batch: bool = False) -> int:
    """Pull pages of Pending entries and complete them: one POST each, or one per page."""
    done = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        while True:
            r = client.get("/v1/queue", params={"limit": page})
            r.raise_for_status()
            items = r.json()["items"]
            if not items:
                return done
            if batch:
                b = client.post("/v1/queue/batch", json={"actions": [
                    {"id": item["id"], "action": "complete"} for item in items]})
                b.raise_for_status()
                done += sum(1 for x in b.json()["results"] if x["status"] == 200)
                continue
            for item in items:
                c = client.post(f"/v1/queue/{item['id']}/complete")
                c.raise_for_status()
                done += 1


RAW_PAGE = ("SELECT id, subject, body, priority FROM request_details WHERE external_system_id = "
            ":s AND state = 'awaiting_external' AND (expires_at IS NULL OR expires_at > :now) "
            "ORDER BY priority, id LIMIT :page")
RAW_ONE = ("UPDATE request_details SET state = 'completed', completed_at = :now, "
           "updated_at = :now WHERE id = :id AND state = 'awaiting_external'")
RAW_HISTORY = ("INSERT INTO state_transitions (kind, row_id, from_state, to_state, actor, at) "
               "VALUES ('detail', :id, 'awaiting_external', 'completed', 'bench', :now)")
RAW_PAGE_UPDATE = text(RAW_ONE.replace("id = :id", "id IN :ids")).bindparams(
    bindparam("ids", expanding=True))


def pull_and_complete_sql(engine, system_id: int, page: int, per_entry: bool) -> int:  # type: ignore[no-untyped-def]
    done = 0
    while True:
        with engine.begin() as conn:
            ids = [r.id for r in conn.execute(text(RAW_PAGE), {"s": system_id, "now": utcnow(),
                                                                "page": page})]
            if not per_entry and ids:
                now = utcnow()
                conn.execute(RAW_PAGE_UPDATE, {"ids": ids, "now": now})
                conn.execute(text(RAW_HISTORY), [{"id": i, "now": now} for i in ids])
                done += len(ids)
        if not ids:
            return done
        if per_entry:
            for entry_id in ids:
                with engine.begin() as conn:
                    now = utcnow()
                    if conn.execute(text(RAW_ONE), {"id": entry_id, "now": now}).rowcount:
                        conn.execute(text(RAW_HISTORY), {"id": entry_id, "now": now})
                        done += 1


def bench(backend: str, n: int, page: int) -> None:
    url = fresh_database(backend, f"comms_bench_api_{backend}")
    upgrade(url)
    engine = make_engine(url)
    system_id, contact_id, key = seed_system(engine)
    print(f"{backend}: {n} entries for one external system, pages of {page}")

    seed_entries(engine, system_id, contact_id, n)
    with timer() as t:
        done = pull_and_complete_sql(engine, system_id, page, per_entry=True)
    assert done == n and pending(engine, system_id) == 0
    raw = row("raw SQL: page read + one transition per txn", n, t[0], "entries")
    seed_entries(engine, system_id, contact_id, n)
    with timer() as t:
        done = pull_and_complete_sql(engine, system_id, page, per_entry=False)
    assert done == n
    floor = row("raw SQL floor: one UPDATE per page", n, t[0], "entries")

    port = free_port()
    server = start_server(url, OUT / f"api_var_{backend}", port)
    rates = {}
    try:
        for label, batch in (("Web API: GET page + POST complete each", False),
                             ("Web API: GET page + POST /v1/queue/batch", True)):
            seed_entries(engine, system_id, contact_id, n)
            with timer() as t:
                done = pull_and_complete_http(f"http://127.0.0.1:{port}", key, page, batch)
            assert done == n and pending(engine, system_id) == 0, (done, batch)
            rates[batch] = row(label, n, t[0], "entries")
    finally:
        server.terminate()
        server.wait(30)
    print(f"  ratio API (one call per entry) / raw per-entry SQL = {rates[False] / raw:.3f}")
    print(f"  ratio API (batch per page) / raw one UPDATE per page = {rates[True] / floor:.3f}")
    print(f"  peak RSS: bench {peak_rss_mb():.0f} MB, uvicorn {peak_rss_mb(children=True):.0f} MB")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--backend", action="append", choices=["postgresql", "sqlite"])
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        bench(backend, args.n, args.page)


if __name__ == "__main__":
    main()
