"""Benchmark: what status callbacks cost the Comms Monitor, and how fast they are delivered.

The monitor expands the same headers three times on the same database: with no callback
endpoint registered; with one endpoint of a system that made none of the requests (the move
hook runs one ``INSERT … SELECT`` per batch that writes nothing); and with one endpoint of
the system that made every request (each detail born writes an ``accepted`` event in the same
transaction). Then the callbacks daemon delivers those events to a bare loopback HTTP server
that answers 204 (signatures computed, not checked).

    .venv/bin/python bench/callbacks.py [--n 20000] [--backend postgresql --backend sqlite]
"""

from __future__ import annotations

import argparse
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text

from bench.common import fresh_database, row, timer
from bench.monitor import reset, seed
from comms_pipeline.daemons.callbacks import CallbacksDaemon
from comms_pipeline.gateways.webhook import new_secret
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.pipeline.callback_endpoints import add_endpoint
from comms_pipeline.queue.callbacks import forget_endpoints
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.logs import configure_logging
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import callback_outbox_t, details_t


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def _monitor(settings, engine, n: int, label: str) -> float:  # type: ignore[no-untyped-def]
    from comms_pipeline.jobs.monitor import MonitorJob

    reset(engine)
    with engine.begin() as conn:
        conn.execute(callback_outbox_t.delete())
    forget_endpoints()
    runner = Runner(settings, engine, MonitorJob(settings, engine),
                    batch_size=settings.monitor.batch_size, once=True)
    with timer() as t:
        runner.run()
    with engine.connect() as conn:
        made = conn.execute(select(func.count()).select_from(details_t)).scalar_one()
        events = conn.execute(select(func.count()).select_from(callback_outbox_t)).scalar_one()
    assert made == n, f"expected {n} details, got {made}"
    rate = row(f"monitor, {label}", made, t[0], "details")
    print(f"    {events} callback events written")
    return rate


def _hook_ms(engine) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The outbox insert of one batch of 1,000 details, timed alone (the monitor's rate on a
    shared machine varies more than the hook costs): as births, and as a later move (which
    looks up each entry's last sequence number)."""
    import statistics
    import time

    from comms_pipeline.queue.callbacks import on_move

    with engine.connect() as conn:
        ids = list(conn.execute(select(details_t.c.id).order_by(details_t.c.id.desc())
                                .limit(1000)).scalars())
    out = {}
    for label, old in (("births", None), ("moves", "rejected")):
        times = []
        for _ in range(5):
            with engine.connect() as conn, conn.begin() as tx:
                conn.execute(callback_outbox_t.delete().where(
                    callback_outbox_t.c.detail_id.in_(ids)))
                started = time.perf_counter()
                on_move(conn, "detail", old, "awaiting_send", ids)
                times.append((time.perf_counter() - started) * 1000)
                tx.rollback()
        out[label] = statistics.median(times)
    return out


def bench(backend: str, n: int) -> dict:
    url = fresh_database(backend, f"comms_bench_callbacks_{backend}")
    upgrade(url)
    engine = make_engine(url)
    seed(engine, n)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = load_settings(environ={
        "COMMS_DATABASE_URL": url, "COMMS_GATEWAYS_WEBHOOK_BACKEND": "http",
        "COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS": "true",
        "COMMS_PATHS_VAR": str(Path(__file__).resolve().parent / "out" / "var")})
    print(f"{backend}: {n} headers")
    result = {"none": _monitor(settings, engine, n, "no endpoint")}
    with engine.begin() as conn:
        other = add_external_system(conn, "OTHER", "Another system")
        mine = add_external_system(conn, "PORTAL", "The requesting system")
        add_endpoint(conn, other, f"http://127.0.0.1:{server.server_port}/cb", "all",
                     secret=new_secret())
    result["other"] = _monitor(settings, engine, n, "another system's endpoint")
    with engine.begin() as conn:
        conn.execute(text("UPDATE request_headers SET requested_by_system_id = :s"), {"s": mine})
        add_endpoint(conn, mine, f"http://127.0.0.1:{server.server_port}/cb", "all",
                     secret=new_secret())
    result["mine"] = _monitor(settings, engine, n, "the requester's endpoint")
    result["hook_ms"] = _hook_ms(engine)
    print(f"  the outbox insert alone, per batch of 1,000 (median of 5, rolled back): "
          f"births {result['hook_ms']['births']:.1f} ms, "
          f"moves {result['hook_ms']['moves']:.1f} ms")
    print(f"  cost: another system's endpoint {1 - result['other'] / result['none']:+.1%}, "
          f"the requester's {1 - result['mine'] / result['none']:+.1%} of the monitor's rate")
    runner = Runner(settings, engine, CallbacksDaemon(settings, engine), batch_size=100,
                    once=True)
    with timer() as t:
        runner.run()
    result["delivery"] = row("callbacks daemon: events delivered", runner.processed, t[0],
                             "events")
    server.shutdown()
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--backend", action="append", choices=["postgresql", "sqlite"])
    args = parser.parse_args()
    configure_logging("warning", False)  # one INFO line per event would be measured too
    for backend in args.backend or ["postgresql", "sqlite"]:
        bench(backend, args.n)


if __name__ == "__main__":
    main()
