"""Benchmark: DSNs processed per second by the bounce receiver, beside a bare aiosmtpd server.

The same prebuilt Postfix-format DSNs (one per Completed email entry, each to its entry's
signed VERP address) are delivered over loopback SMTP by ``--clients`` smtplib connections in
parallel, first to a bare aiosmtpd server that only accepts them (``250`` and nothing else),
then to ``comms daemon run bounces`` (the BounceDaemon: parse the DSN, match the VERP, write
the report and turn the entry Rejected, one transaction per DSN, the DATA reply after the
commit). Each server runs in its own process, so its peak RSS is its own; the figures are the
best of ``--repeat`` interleaved rounds (the host is shared and noisy). At the end every entry
must be Rejected 5.1.1, or the run says so.

    .venv/bin/python bench/bounces.py [--n 2000] [--clients 4] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import multiprocessing as mp
import smtplib
import threading
from email.utils import make_msgid

from sqlalchemy import func, insert, select

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t

DOMAIN = "bounces.example.com"
SECRET = "bench-link-secret"
SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "corpus" / "feedback" \
    / "postfix_user_unknown.eml"
SAMPLE_VERP = "bounces+1017.9f2c1a0b3d4e@bounces.example.com"
SAMPLE_MESSAGE_ID = "<176458044210.4411.1234567890123456789.cp1017.9f2c1a0b3d4e@comms.example.com>"


def settings_for(url: str, var: Path, port: int):  # type: ignore[no-untyped-def]
    return load_settings(path=Path(__file__).resolve().parents[1] / "config" / "comms.toml",
                         environ={"COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(var),
                                  "COMMS_BOUNCES_DOMAIN": DOMAIN, "COMMS_LINKS_SECRET": SECRET,
                                  "COMMS_BOUNCES_LISTEN_PORT": str(port)})


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM): ``ru_maxrss`` carries a parent's peak across
    fork and exec, so a spawned server would report its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def _quiet() -> None:
    import logging

    import structlog

    logging.getLogger("mail.log").setLevel(logging.ERROR)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def bare_server(port: int, ready, stop, rss) -> None:  # type: ignore[no-untyped-def]
    """Child process: aiosmtpd that accepts every DSN and does nothing with it."""
    _quiet()
    from aiosmtpd.controller import Controller

    class Accept:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 2.0.0 OK"

    controller = Controller(Accept(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()
    rss.value = own_peak_rss_mb()


def receiver(url: str, var: str, port: int, ready, stop, rss) -> None:  # type: ignore[no-untyped-def]
    """Child process: the bounce receiver, as ``comms daemon run bounces`` runs it."""
    _quiet()
    from comms_pipeline.daemons.bounces import BounceDaemon

    engine = make_engine(url)
    daemon = BounceDaemon(settings_for(url, Path(var), port), engine)
    done = threading.Event()
    thread = threading.Thread(target=daemon.serve, args=(done,))
    thread.start()
    while daemon.server._controller.server is None:
        stop.wait(0.01)
    ready.set()
    stop.wait()
    done.set()
    thread.join()
    engine.dispose()
    rss.value = own_peak_rss_mb()


def seed(url: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` Completed email entries; one DSN per entry, to its VERP address."""
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        contact_id = add_contact(conn, "C-bench", "Bench Customer")
    header_id = trigger(engine, contact_ref="C-bench", template_code="BILL")
    now = utcnow()
    with engine.begin() as conn:
        ids = conn.execute(insert(details_t).returning(details_t.c.id,
                                                       sort_by_parameter_order=True), [
            {"header_id": header_id, "contact_id": contact_id, "media": "email",
             "direction": "outgoing", "address": f"customer{i}@example.org",
             "state": "completed", "created_at": now, "completed_at": now}
            for i in range(n)]).scalars().all()
    engine.dispose()
    verp = VerpAddresses(SECRET, DOMAIN)
    template = SAMPLE.read_text()
    out = []
    for i, detail_id in enumerate(ids):
        address = verp.address(detail_id)
        text = (template.replace(SAMPLE_VERP, address)
                .replace(SAMPLE_MESSAGE_ID, make_msgid(domain="comms.example.com"))
                .replace("nobody@example.org", f"customer{i}@example.org"))
        out.append((address, text.replace("\n", "\r\n").encode()))
    return out


def deliver(port: int, dsns: list[tuple[str, bytes]], clients: int) -> float:
    """Wall seconds for ``clients`` smtplib connections to deliver every DSN (each reply is
    the server's word that it took it)."""
    failures: list[str] = []

    def one(part: list[tuple[str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            for rcpt, data in part:
                try:
                    smtp.sendmail("", [rcpt], data)
                except smtplib.SMTPException as exc:
                    failures.append(str(exc))

    parts = [dsns[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=one, args=(p,)) for p in parts]
    with timer() as took:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if failures:
        print(f"  WARNING: {len(failures)} DSNs refused, first: {failures[0][:200]}")
    return took[0]


def run_server(target, args: tuple) -> tuple:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    ready, stop, rss = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    proc = ctx.Process(target=target, args=(*args, ready, stop, rss), daemon=True)
    proc.start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, stop, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    _quiet()
    from tests.servers.smtp import free_port

    best: dict[str, float] = {}
    rss: dict[str, float] = {}
    rejected = 0
    size = 0.0
    for _ in range(args.repeat):
        url = fresh_database(args.backend, f"comms_bench_bounces_{args.backend}")
        dsns = seed(url, args.n)
        size = sum(len(d) for _, d in dsns) / len(dsns)
        port = free_port()
        proc, stop, peak = run_server(bare_server, (port,))
        took = deliver(port, dsns, args.clients)
        stop.set()
        proc.join(60)
        best["bare"] = min(best.get("bare", took), took)
        rss["bare"] = max(rss.get("bare", 0.0), peak.value)
        var = Path(__file__).resolve().parent / "out" / "bounces-var"
        port = free_port()
        proc, stop, peak = run_server(receiver, (url, str(var), port))
        took = deliver(port, dsns, args.clients)
        stop.set()
        proc.join(60)
        best["receiver"] = min(best.get("receiver", took), took)
        rss["receiver"] = max(rss.get("receiver", 0.0), peak.value)
        engine = make_engine(url)
        with engine.connect() as conn:
            rejected = conn.execute(select(func.count()).select_from(details_t).where(
                details_t.c.state == "rejected", details_t.c.error_code == "5.1.1")
            ).scalar_one()
        engine.dispose()
    print(f"bounces: {args.n} Postfix-format DSNs of {size:,.0f} bytes over loopback SMTP, "
          f"{args.clients} client connections, database {args.backend}, best of "
          f"{args.repeat} interleaved rounds")
    bare = row("bare aiosmtpd (accept only)", args.n, best["bare"], "DSNs")
    recv = row("bounce receiver (parse, match, reject)", args.n, best["receiver"], "DSNs")
    print(f"  ratio receiver / bare aiosmtpd: {recv / bare:.2f}")
    print(f"  peak RSS: bare aiosmtpd {rss['bare']:.1f} MB, receiver {rss['receiver']:.1f} MB,"
          f" client {own_peak_rss_mb():.1f} MB")
    ok = rejected == args.n
    print(f"  entries Rejected 5.1.1 after the last round: {rejected} of {args.n}"
          + ("" if ok else "  <-- NOT ALL"))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
