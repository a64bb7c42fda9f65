"""Benchmark: the Email daemon (through the database) against a bare smtplib loop.

Both send the same prebuilt messages to the same loopback SMTP server: Postfix's
``smtp-sink`` (a C server that throws mail away, from Debian's ``postfix`` package, see
``.ci/services``), so that the client is the limit -- or, when it is not installed, aiosmtpd in
its own process (say so: aiosmtpd is slower than the client and is then what is measured).
The raw limit is one smtplib connection sending ``sendmail()`` in a loop; the pipeline is the
Email daemon in ``once`` mode claiming batches of awaiting-send entries, reading their
documents in one query per batch, sending them over kept-open connections and recording every
outcome with its transition. The daemon runs with one connection (like the raw loop) and with
``--connections`` lanes. Peak RSS is this process's and the server process's.

    .venv/bin/python bench/email_daemon.py [--n 5000] [--connections 4]
        [--backend sqlite|postgresql] [--server smtp-sink|aiosmtpd] [--profile out.txt]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import multiprocessing as mp
import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import func, insert, select

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.pipeline.admin_records import add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.heap import settle
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, documents_t

FROM = "no-reply@example.com"
BODY = ("Dear customer,\n\nyour bill B-{i} for April 2026 is ready. The amount of EUR 42.95 "
        "will be collected on 20 May 2026.\n\nKind regards,\nBilling\n") * 4


def serve(port: int, ready, stop, counter) -> None:  # type: ignore[no-untyped-def]
    """The SMTP sink (child process): accepts everything and counts it."""
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.ERROR)

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            with counter.get_lock():
                counter.value += 1
                n = counter.value
            return f"250 2.0.0 Ok: queued as Q{n}"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def messages(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = f"Billing <{FROM}>"
        msg["To"] = to = f"customer{i}@example.com"
        msg["Subject"] = f"Your bill B-{i}"
        msg["Message-ID"] = make_msgid(domain="comms.example.com")
        msg.set_content(BODY.format(i=i))
        msg.add_alternative(f"<p>{BODY.format(i=i)}</p>", subtype="html")
        out.append((to, msg.as_bytes().replace(b"\n", b"\r\n")))
    return out


def raw_loop(port: int, prebuilt: list[tuple[str, bytes]]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of a bare sendmail() loop."""
    cpu = time.process_time()
    with timer() as took:
        smtp = smtplib.SMTP("127.0.0.1", port)
        for to, data in prebuilt:
            smtp.sendmail(FROM, [to], data)
        smtp.quit()
    return took[0], time.process_time() - cpu


def seed(engine, prebuilt: list[tuple[str, bytes]]) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        contact_id = add_contact(conn, "C-bench", "Bench Customer")
    header_id = trigger(engine, contact_ref="C-bench", template_code="BILL")
    now = utcnow()
    step = 2000
    for start in range(0, len(prebuilt), step):
        chunk = prebuilt[start:start + step]
        with engine.begin() as conn:
            ids = conn.execute(insert(details_t).returning(details_t.c.id,
                                                           sort_by_parameter_order=True), [
                {"header_id": header_id, "contact_id": contact_id, "media": "email",
                 "direction": "outgoing", "address": to, "state": "awaiting_send",
                 "created_at": now} for to, _ in chunk]).scalars().all()
            conn.execute(insert(documents_t), [
                {"detail_id": d, "kind": "email", "content_type": "message/rfc822",
                 "content": data, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "created_at": now} for d, (_, data) in zip(ids, chunk, strict=True)])


def _settings(url: str, port: int, connections: int):  # type: ignore[no-untyped-def]
    return load_settings(environ={
        "COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(Path("bench/out/var").resolve()),
        "COMMS_GATEWAYS_EMAIL_BACKEND": "smtp", "COMMS_GATEWAYS_EMAIL_HOST": "127.0.0.1",
        "COMMS_GATEWAYS_EMAIL_PORT": str(port),
        "COMMS_GATEWAYS_EMAIL_CONNECTIONS": str(connections),
        "COMMS_EMAIL_FROM_ADDRESS": f"Billing <{FROM}>"})


def _seeded(backend: str, prebuilt: list[tuple[str, bytes]]) -> str:
    url = fresh_database(backend, f"comms_bench_email_{backend}")
    upgrade(url)
    engine = make_engine(url)
    seed(engine, prebuilt)
    engine.dispose()
    return url


def _completed(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        done = conn.execute(select(func.count()).select_from(details_t)
                            .where(details_t.c.state == "completed")).scalar_one()
    engine.dispose()
    return done


def pipeline(backend: str, port: int, prebuilt: list[tuple[str, bytes]], connections: int,
             batch_size: int, profiler=None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Wall seconds and this process's CPU seconds of the Email daemon draining the queue."""
    url = _seeded(backend, prebuilt)
    settings = _settings(url, port, connections)
    engine = make_engine(settings.database_url)
    daemon = EmailDaemon(settings, engine)
    settle()  # what `comms daemon run email` does once its worker has started
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    with timer() as took:
        Runner(settings, engine, daemon, once=True,
               batch_size=batch_size).run()
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - cpu
    engine.dispose()
    done = _completed(url)
    if done != len(prebuilt):
        raise SystemExit(f"only {done} of {len(prebuilt)} entries completed")
    return took[0], cpu


# -- several processes side by side: the machine's limit, and the daemon's copies ----------
def _raw_child(port: int, prebuilt: list[tuple[str, bytes]], go) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    go.wait()
    start = time.time()
    raw_loop(port, prebuilt)
    return start, time.time()


def _daemon_child(url: str, port: int, connections: int, batch_size: int,
                  go) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = _settings(url, port, connections)
    engine = make_engine(settings.database_url)
    daemon = EmailDaemon(settings, engine)
    settle()
    go.wait()
    start = time.time()
    Runner(settings, engine, daemon, once=True, batch_size=batch_size).run()
    end = time.time()
    engine.dispose()
    return start, end


def side_by_side(processes: int, work) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds from the first child's start to the last one's end: ``work(processes)``
    gives each child's (function, arguments); they start together once all are set up (a
    barrier), so the start-up of a spawned interpreter is not measured."""
    from concurrent.futures import ProcessPoolExecutor

    context = mp.get_context("spawn")
    with context.Manager() as manager:
        go = manager.Barrier(processes + 1)  # each child once set up, and this process
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            futures = [pool.submit(fn, *args, go) for fn, args in work(processes)]
            go.wait(120)  # every child imported and set up: then all go at once
            spans = [f.result() for f in futures]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def raw_processes(port: int, prebuilt: list[tuple[str, bytes]], processes: int) -> float:
    return side_by_side(processes, lambda p: [
        (_raw_child, (port, prebuilt[i::p])) for i in range(p)])


def daemon_processes(backend: str, port: int, prebuilt: list[tuple[str, bytes]],
                     processes: int, connections: int, batch_size: int) -> float:
    url = _seeded(backend, prebuilt)
    took = side_by_side(processes, lambda p: [
        (_daemon_child, (url, port, connections, batch_size)) for _ in range(p)])
    done = _completed(url)
    if done != len(prebuilt):
        raise SystemExit(f"only {done} of {len(prebuilt)} entries completed")
    return took


def profile(args, port: int, prebuilt: list[tuple[str, bytes]]) -> None:  # type: ignore[no-untyped-def]
    """One 1-connection daemon pass (the run, not the set-up) under cProfile; the top
    functions by own and by cumulative time, to a file."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    pipeline(args.backend, port, prebuilt, 1, args.batch_size, profiler=prof)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    Path(args.profile).write_text(out.getvalue())
    print(f"  profile of one 1-connection pass written to {args.profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2,
                        help="also run the bare loop and the daemon in this many processes "
                        "side by side (0: not): the machine's limit for parallel sending")
    parser.add_argument("--repeat", type=int, default=2,
                        help="interleaved rounds; the best of each is reported (noisy hosts)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--server", choices=["smtp-sink", "aiosmtpd"], default="smtp-sink",
                        help="the loopback SMTP server (smtp-sink falls back to aiosmtpd, "
                        "with a note, when postfix is not installed)")
    parser.add_argument("--profile", metavar="FILE",
                        help="profile one 1-connection daemon pass (cProfile) into FILE")
    args = parser.parse_args()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from tests.servers.smtp import free_port
    from tests.servers.smtp_sink import SmtpSink, smtp_sink_path

    server_name = args.server
    if server_name == "smtp-sink" and smtp_sink_path() is None:
        print("NOTE: smtp-sink is not installed (apt-get install postfix); falling back to "
              "aiosmtpd, which is slower than the client: the ratios below measure aiosmtpd")
        server_name = "aiosmtpd"
    sink = server = None
    counter = None
    if server_name == "smtp-sink":
        sink = SmtpSink(backlog=256)
        port = sink.port
    else:
        port = free_port()
        ctx = mp.get_context("spawn")
        ready, stop, counter = ctx.Event(), ctx.Event(), ctx.Value("l", 0)
        server = ctx.Process(target=serve, args=(port, ready, stop, counter), daemon=True)
        server.start()
        ready.wait(30)
    runs: dict[str, list[tuple[float, float]]] = {"raw": [], "one": [], "many": [],
                                                   "raw_procs": [], "daemon_procs": []}
    try:
        prebuilt = messages(args.n)
        size = sum(len(d) for _, d in prebuilt) / len(prebuilt)
        where = ("Postfix smtp-sink (C)" if sink else "aiosmtpd in a separate process")
        print(f"email: {args.n} messages of {size:,.0f} bytes, loopback {where}, "
              f"database {args.backend}, best of {args.repeat} interleaved rounds")
        if args.profile:
            profile(args, port, prebuilt)
        for _ in range(args.repeat):
            runs["raw"].append(raw_loop(port, prebuilt))
            runs["one"].append(pipeline(args.backend, port, prebuilt, 1, args.batch_size))
            runs["many"].append(pipeline(args.backend, port, prebuilt, args.connections,
                                         args.batch_size))
            if args.processes > 1:
                per = max(1, args.connections // args.processes)
                runs["raw_procs"].append((raw_processes(port, prebuilt, args.processes), 0.0))
                runs["daemon_procs"].append((daemon_processes(
                    args.backend, port, prebuilt, args.processes, per, args.batch_size), 0.0))
    finally:
        if sink is not None:
            sink.stop()
        if server is not None:
            stop.set()
            server.join(30)
    best = {k: min(v) for k, v in runs.items() if v}
    raw = row("bare smtplib loop, 1 connection", args.n, best["raw"][0], "msgs")
    one = row("Email daemon, 1 connection", args.n, best["one"][0], "msgs")
    many = row(f"Email daemon, {args.connections} connections", args.n, best["many"][0], "msgs")
    print(f"  ratio daemon(1 connection) / bare loop:   {one / raw:.2f}")
    print(f"  ratio daemon({args.connections} connections) / bare loop: {many / raw:.2f}")
    print(f"  ratio daemon({args.connections} connections) / daemon(1 connection): "
          f"{many / one:.2f}")
    if args.processes > 1:
        per = max(1, args.connections // args.processes)
        raws = row(f"bare loops, {args.processes} processes side by side", args.n,
                   best["raw_procs"][0], "msgs")
        procs = row(f"Email daemon, {args.processes} processes x {per} connections", args.n,
                    best["daemon_procs"][0], "msgs")
        print(f"  the machine's limit: {args.processes} bare loops / one = {raws / raw:.2f}; "
              f"daemon {args.processes} processes / daemon(1 connection) = {procs / one:.2f}")
    per_msg = {k: min(cpu for _, cpu in runs[k]) / args.n * 1e6 for k in ("raw", "one", "many")}
    print(f"  client CPU per message: bare loop {per_msg['raw']:.0f} us, daemon "
          f"{per_msg['one']:.0f} us (1 connection), {per_msg['many']:.0f} us "
          f"({args.connections} connections)")
    if counter is not None:
        rounds = 5 if args.processes > 1 else 3
        print(f"  server received {counter.value} messages "
              f"(expected {rounds * args.repeat * args.n})")
    print(f"  peak RSS: this process {peak_rss_mb():.0f} MB, "
          f"server process {peak_rss_mb(children=True):.0f} MB")


if __name__ == "__main__":
    main()
