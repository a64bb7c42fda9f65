"""Benchmark: the SMS daemon (SMPP, through the database) against a bare smpplib submit loop.

Both send the same texts to the same loopback SMSC (``tests/servers/smpp.py``, in its own
process so that it does not share this process's GIL). The raw limit is smpplib's own client
doing what it offers: send one ``submit_sm``, wait for its ``submit_sm_resp``, send the next.
The pipeline is the SMS daemon in ``once`` mode claiming batches of awaiting-send entries,
sending them over one bound transceiver and recording every outcome with its transition;
it runs with ``window=1`` (the same one-at-a-time exchange) and with ``--window`` submits
outstanding. Peak RSS is this process's and the SMSC process's.

    .venv/bin/python bench/sms.py [--n 20000] [--window 32] [--backend sqlite|postgresql]

With ``--response-delay-ms D`` the SMSC holds every answer D ms (a distant SMSC): the window
then sets the limit, ``window / D`` messages a second, and the run compares the daemon with
its window kept full across batches (``daemons.prefetch_batches = 3``) against the
window drained at every batch (``prefetch_batches = 0``), as a share of that limit, with the
number of times the SMSC saw the window run empty:

    .venv/bin/python bench/sms.py --response-delay-ms 20 --window 10 --batch-size 100 --n 3000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import subprocess

from sqlalchemy import func, insert, select

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, headers_t

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "Comms"


def texts(n: int) -> list[tuple[str, str]]:
    return [(f"+44770{i:07d}", f"Your code is {100000 + i}. It expires in 10 minutes.")
            for i in range(n)]


def start_smsc(receipts: bool, delay_ms: float = 0.0) -> tuple[subprocess.Popen, int]:
    extra = ["--receipts", "after"] if receipts else []
    if delay_ms:
        extra += ["--response-delay-ms", str(delay_ms)]
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.smpp", "--port", "0", *extra],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the SMSC did not start: {line!r}")
    return proc, int(line.split()[1])


def raw_loop(port: int, items: list[tuple[str, str]]) -> float:
    """smpplib's client as it comes: submit, wait for the response, next."""
    import smpplib.client

    client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
    client.connect()
    client.bind_transceiver(system_id="", password="")
    with timer() as took:
        for to, text in items:
            client.send_message(source_addr_ton=5, source_addr_npi=0, source_addr=SOURCE,
                                dest_addr_ton=1, dest_addr_npi=1, destination_addr=to[1:],
                                short_message=text.encode("ascii"), data_coding=0,
                                registered_delivery=1)
            while True:
                pdu = client.read_pdu()
                if pdu.command == "submit_sm_resp":
                    if pdu.status:
                        raise SystemExit(f"the SMSC refused a submit: {pdu.status:#x}")
                    break
    client.unbind()
    client.disconnect()
    return took[0]


def seed(engine, items: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with engine.begin() as conn:
        header_id = conn.execute(insert(headers_t).values(
            contact_ref="C-bench", template_code="OTP", media="sms", status="processed",
            created_at=now).returning(headers_t.c.id)).scalar_one()
    step = 5000
    for start in range(0, len(items), step):
        with engine.begin() as conn:
            conn.execute(insert(details_t), [
                {"header_id": header_id, "media": "sms", "direction": "outgoing",
                 "address": to, "body": text, "parts": 1, "state": "awaiting_send",
                 "priority": 2, "created_at": now} for to, text in items[start:start + step]])


def pipeline(backend: str, port: int, items: list[tuple[str, str]], window: int,
             batch_size: int, receipts: bool = False, prefetch: int | None = None) -> float:
    url = fresh_database(backend, f"comms_bench_sms_{backend}")
    upgrade(url)
    env = {
        "COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(ROOT / "bench" / "out" / "var"),
        "COMMS_GATEWAYS_SMS_BACKEND": "smpp", "COMMS_GATEWAYS_SMS_PORT": str(port),
        "COMMS_GATEWAYS_SMS_WINDOW": str(window), "COMMS_GATEWAYS_SMS_SOURCE_ADDR": SOURCE}
    if prefetch is not None:
        env["COMMS_DAEMONS_PREFETCH_BATCHES"] = str(prefetch)
    settings = load_settings(environ=env)
    engine = make_engine(settings.database_url)
    seed(engine, items)
    with timer() as took:
        Runner(settings, engine, SmsDaemon(settings, engine), once=True,
               batch_size=batch_size).run()
    with engine.connect() as conn:
        done = conn.execute(select(func.count()).select_from(details_t)
                            .where(details_t.c.state == "completed")).scalar_one()
        delivered = conn.execute(select(func.count()).select_from(details_t)
                                 .where(details_t.c.gateway_status == "DELIVRD")).scalar_one()
    engine.dispose()
    if done != len(items):
        raise SystemExit(f"only {done} of {len(items)} entries completed")
    if receipts and delivered != len(items):
        raise SystemExit(f"only {delivered} of {len(items)} receipts were recorded")
    return took[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved rounds; the best of each is reported (noisy hosts)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--receipts", action="store_true",
                        help="the SMSC sends a delivery receipt per message; the daemon's runs "
                        "include recording them on the queue entries")
    parser.add_argument("--response-delay-ms", type=float, default=0.0,
                        help="the SMSC holds each answer this long: compare the window kept "
                        "full across batches with the window drained at every batch")
    args = parser.parse_args()
    if args.response_delay_ms:
        return window_across_batches(args)

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("smpp").setLevel(logging.ERROR)  # smpplib's client chatter
    smsc, port = start_smsc(args.receipts)
    items = texts(args.n)
    runs: dict[str, list[float]] = {"raw": [], "one": [], "many": []}
    print(f"sms: {args.n} single-part SMS, loopback SMSC (real SMPP v3.4 PDUs) in a separate "
          f"process, database {args.backend}, batches of {args.batch_size}, best of "
          f"{args.repeat}" + (", with delivery receipts" if args.receipts else ""))
    try:
        for _ in range(args.repeat):
            runs["raw"].append(raw_loop(port, items))
            runs["one"].append(pipeline(args.backend, port, items, 1, args.batch_size,
                                        args.receipts))
            runs["many"].append(pipeline(args.backend, port, items, args.window,
                                         args.batch_size, args.receipts))
    finally:
        out, _ = smsc.communicate(input="", timeout=60)
    accepted = int(out.split("ACCEPTED")[-1].split()[0]) if "ACCEPTED" in out else -1
    raw = row("bare smpplib loop (submit, wait, next)", args.n, min(runs["raw"]), "sms")
    one = row("SMS daemon, window 1", args.n, min(runs["one"]), "sms")
    many = row(f"SMS daemon, window {args.window}", args.n, min(runs["many"]), "sms")
    print(f"  ratio daemon(window 1) / bare loop:  {one / raw:.2f}")
    print(f"  ratio daemon(window {args.window}) / bare loop: {many / raw:.2f}")
    print(f"  SMSC accepted {accepted} submits (expected {3 * args.repeat * args.n})")
    print(f"  peak RSS: this process {peak_rss_mb():.0f} MB, "
          f"SMSC process {peak_rss_mb(children=True):.0f} MB")


def window_across_batches(args: argparse.Namespace) -> None:
    """The daemon against a slow-answering SMSC: with and without prefetching batches."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    smsc, port = start_smsc(False, args.response_delay_ms)
    items = texts(args.n)
    limit = args.window / (args.response_delay_ms / 1000)
    print(f"sms: {args.n} SMS, SMSC answering after {args.response_delay_ms:g} ms, window "
          f"{args.window} (limit {limit:,.0f}/s), batches of {args.batch_size}, database "
          f"{args.backend}, best of {args.repeat}")
    runs: dict[str, list[float]] = {"full": [], "drained": []}
    try:
        for _ in range(args.repeat):
            runs["full"].append(pipeline(args.backend, port, items, args.window,
                                         args.batch_size, prefetch=3))
            runs["drained"].append(pipeline(args.backend, port, items, args.window,
                                            args.batch_size, prefetch=0))
    finally:
        out, _ = smsc.communicate(input="", timeout=60)
    full = row("SMS daemon, window kept full across batches", args.n, min(runs["full"]),
               "sms")
    drained = row("SMS daemon, window drained at every batch", args.n,
                  min(runs["drained"]), "sms")
    print(f"  share of the window's limit: kept full {full / limit:.0%}, "
          f"drained at every batch {drained / limit:.0%}")
    print(f"  SMSC: {out.strip()} (the window ran empty this often, over both variants)")
    print(f"  peak RSS: this process {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
