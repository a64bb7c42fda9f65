"""Benchmark: end-to-end latency, from a trigger's commit to the gateway's acceptance.

The whole pipeline runs as one service (``comms run``: a continuous worker per stage, woken by
PostgreSQL notifications) against the loopback SMSC and SMTP server of the test suite. This
process inserts triggers with the README's plain SQL statement, one transaction each, at a
fixed rate, and notes when each commit returned; the servers note when they accepted each
message (the SMSC's ``submit_sm_resp``, the SMTP server's 250 after DATA). Every trigger goes
to a contact of its own, so the recipient tells which trigger a message came from.

For each media and rate it prints p50, p95, p99 and max of commit → acceptance, beside the raw
limit measured in the same run: the same gateway call made directly from this process at the
same rate (a bare smpplib submit, a bare smtplib sendmail) — what the gateway itself costs.
Then the same for priority-1 SMS while a bulk run of ``--bulk`` priority-3 requests drains.
Last, the peak RSS of every process of the service.

    python bench/latency.py                          # 10, 100, 500/s for 30 s each (make bench)
    python bench/latency.py --rates 100 --duration 10 --bulk 20000   # a quick look
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import signal
import smtplib
import statistics
import subprocess
import tempfile
import threading
import time
from email.message import EmailMessage

import psycopg2
from sqlalchemy import text

from bench.common import fresh_database
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.store.db import make_engine, upgrade
from tests.servers.smpp import Smsc
from tests.servers.smtp import RecordingHandler, SmtpServer

ROOT = Path(__file__).resolve().parents[1]
SMS, EMAIL = "LATENCY_SMS", "LATENCY_EMAIL"
TRIGGER = ("INSERT INTO request_headers (contact_ref, template_code, entities, params, "
           "priority) VALUES (%s, %s, '{}', '{}', %s)")


class TimedSmsc(Smsc):
    """The test SMSC, noting when it answered each submit_sm (by destination)."""

    def __init__(self) -> None:
        super().__init__(record=True)
        self.accepted_at: dict[str, float] = {}

    def _submit(self, seq, body, out, receipt_seq):  # type: ignore[no-untyped-def]
        before = len(self.accepted)
        kept = super()._submit(seq, body, out, receipt_seq)
        now = time.time()
        with self._lock:
            for submit in self.accepted[before:]:
                self.accepted_at.setdefault(submit.destination, now)
        return kept


class TimedHandler(RecordingHandler):
    """The test SMTP server's handler, noting when it said 250 to each message."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[str, float] = {}

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            now = time.time()
            for rcpt in envelope.rcpt_tos:
                self.accepted_at.setdefault(rcpt, now)
        return reply


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 \
        else [values[0]] * 99
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


def seed(url: str, contacts: int, bulk: int) -> None:
    """``contacts`` contacts with a phone and an email each (L-1 …), the two templates, and
    ``bulk`` more for the bulk run (B-1 …), all in SQL."""
    engine = make_engine(url)
    with engine.begin() as conn:
        save_template(conn, TemplateSpec(SMS, "latency sms", "sms", [VariantSpec(
            "en", body_text="Your code is 123456, #contact_information.name")]))
        save_template(conn, TemplateSpec(EMAIL, "latency email", "email", [VariantSpec(
            "en", subject="Your code, #contact_information.name",
            body_html="<p>Dear #contact_information.name, your code is 123456.</p>")]))
        for prefix, n in (("L", contacts), ("B", bulk)):
            if not n:
                continue
            conn.execute(text(
                f"INSERT INTO contacts (ref, name, preferred_language, created_at) "
                f"SELECT '{prefix}-' || i, 'Person ' || i, 'en', now() "
                f"FROM generate_series(1, {n}) AS g(i)"))
            digits = "99" if prefix == "L" else "96"  # Cypriot mobiles, valid to the checks
            conn.execute(text(
                f"INSERT INTO contact_addresses (contact_id, kind, address_type, value, "
                f"is_primary, created_at) SELECT id, 'phone', 'mobile', "
                f"'+357{digits}' || lpad(substr(ref, 3), 6, '0'), true, now() FROM contacts "
                f"WHERE ref LIKE '{prefix}-%'"))
            conn.execute(text(
                f"INSERT INTO contact_addresses (contact_id, kind, address_type, value, "
                f"is_primary, created_at) SELECT id, 'email', 'home', "
                f"lower(ref) || '@example.com', true, now() FROM contacts "
                f"WHERE ref LIKE '{prefix}-%'"))
        conn.execute(text("ANALYZE"))
    engine.dispose()


def phone(i: int) -> str:
    """The destination the SMSC records for contact L-i (international, without the +)."""
    return f"35799{i:06d}"


def paced(rate: float, duration: float):  # type: ignore[no-untyped-def]
    """Yield k = 0, 1, … at ``rate`` per second for ``duration`` seconds."""
    start = time.perf_counter()
    total = int(rate * duration)
    for k in range(total):
        due = start + k / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        yield k


def insert_at_rate(dsn: str, template: str, first: int, rate: float, duration: float,
                   priority: int = 2) -> dict[int, float]:
    """Triggers for contacts L-first …, one committed transaction each; returns when each
    commit returned, by contact number."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    committed: dict[int, float] = {}
    with conn.cursor() as cur:
        for k in paced(rate, duration):
            i = first + k
            cur.execute(TRIGGER, (f"L-{i}", template, priority))
            committed[i] = time.time()
    conn.close()
    return committed


def wait_for(accepted: dict, keys: list, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(k not in accepted for k in keys):
        time.sleep(0.1)


def latencies(committed: dict[int, float], accepted: dict, key) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    found = [(accepted[key(i)] - t) * 1000 for i, t in committed.items() if key(i) in accepted]
    return found, len(committed) - len(found)


def raw_sms(port: int, rate: float, duration: float) -> list[float]:
    """A bare smpplib submit from this process, at the same rate: submit → response (ms)."""
    import smpplib.client

    client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
    client.connect()
    client.bind_transceiver(system_id="", password="")
    out = []
    for k in paced(rate, duration):
        sent = time.perf_counter()
        client.send_message(source_addr_ton=5, source_addr_npi=0, source_addr="Comms",
                            dest_addr_ton=1, dest_addr_npi=1,
                            destination_addr=f"3579{k:07d}", short_message=b"raw",
                            data_coding=0)
        while client.read_pdu().command != "submit_sm_resp":
            pass
        out.append((time.perf_counter() - sent) * 1000)
    client.unbind()
    client.disconnect()
    return out


def raw_email(port: int, rate: float, duration: float) -> list[float]:
    """A bare smtplib sendmail from this process, at the same rate, one connection."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bench@example.com", "raw@example.com", "raw"
    msg.set_content("raw")
    data = msg.as_bytes()
    smtp = smtplib.SMTP("127.0.0.1", port)
    out = []
    for k in paced(rate, duration):
        sent = time.perf_counter()
        smtp.sendmail("bench@example.com", [f"raw{k}@example.com"], data)
        out.append((time.perf_counter() - sent) * 1000)
    smtp.quit()
    return out


def line(label: str, values: list[float], missing: int = 0) -> str:
    p = percentiles(values)
    gone = f"  NOT ARRIVED {missing}" if missing else ""
    return (f"  {label:<46} n={len(values):>6}  p50 {p['p50']:7.1f}  p95 {p['p95']:7.1f}  "
            f"p99 {p['p99']:7.1f}  max {p['max']:8.1f} ms{gone}")


def service_rss(root: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of ``root`` and every process under it, by command line."""
    out: dict[str, float] = {}
    pids = [root]
    seen = set()
    while pids:
        pid = pids.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        hwm = next((int(x.split()[1]) for x in status.splitlines()
                    if x.startswith("VmHWM:")), 0)
        words = cmd.split()
        if "comms_pipeline.cli.main" in words:
            words = words[words.index("comms_pipeline.cli.main") + 1:]
            words = [w for i, w in enumerate(words) if not w.startswith("--")
                     and not (i and words[i - 1] in ("--log-level", "--config"))]
        name = "comms " + " ".join(words[:4]) if words else cmd[:40]
        out[f"{name} [{pid}]"] = hwm / 1024
        pids.extend(int(c) for c in children)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 100, 500])
    parser.add_argument("--duration", type=float, default=30, help="seconds per rate")
    parser.add_argument("--bulk", type=int, default=200000,
                        help="requests of the bulk run behind the priority-1 SMS (0: skip)")
    parser.add_argument("--priority-rate", type=float, default=10)
    args = parser.parse_args()

    per_media = int(sum(args.rates) * args.duration) + 10
    priority_n = int(args.priority_rate * args.duration)
    contacts = 2 * per_media + priority_n
    url = fresh_database("postgresql", "comms_bench_latency")
    upgrade(url)
    seed(url, contacts, args.bulk)
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    smsc = TimedSmsc().start()
    handler = TimedHandler()
    smtp = SmtpServer(handler).start()
    workdir = Path(tempfile.mkdtemp(prefix="comms-latency-"))
    env = dict(os.environ, COMMS_DATABASE_URL=url, COMMS_PATHS_VAR=str(workdir / "var"),
               COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
               **smtp.env())
    log = (workdir / "service.log").open("w")
    service = subprocess.Popen([sys.executable, "-m", "comms_pipeline.cli.main", "run"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               start_new_session=True)
    results: list[str] = []
    try:
        time.sleep(5)  # every worker up and listening
        if service.poll() is not None:
            raise SystemExit(f"`comms run` exited with {service.returncode}: see {log.name}")
        first = 1
        for media, template in (("sms", SMS), ("email", EMAIL)):
            for rate in args.rates:
                committed = insert_at_rate(dsn, template, first, rate, args.duration)
                first += len(committed)
                if media == "sms":
                    key = phone
                    wait_for(smsc.accepted_at, [key(i) for i in committed], 60)
                    got, missing = latencies(committed, smsc.accepted_at, key)
                    raw = raw_sms(smsc.port, rate, min(args.duration, 10))
                else:
                    def key(i: int) -> str:
                        return f"l-{i}@example.com"
                    wait_for(handler.accepted_at, [key(i) for i in committed], 60)
                    got, missing = latencies(committed, handler.accepted_at, key)
                    raw = raw_email(smtp.port, rate, min(args.duration, 10))
                results.append(line(f"{media} at {rate:g}/s: commit -> gateway accepted",
                                    got, missing))
                results.append(line(f"  raw limit: bare {media} call at {rate:g}/s", raw))
                print(results[-2], results[-1], sep="\n", flush=True)
        if args.bulk:
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute(f"INSERT INTO request_headers (contact_ref, template_code, "
                            f"entities, params, priority) SELECT 'B-' || i, '{SMS}', '{{}}', "
                            f"'{{}}', 3 FROM generate_series(1, {args.bulk}) AS g(i)")
            time.sleep(2)  # the bulk run is being expanded and sent
            committed = insert_at_rate(dsn, SMS, first, args.priority_rate, args.duration,
                                       priority=1)
            wait_for(smsc.accepted_at, [phone(i) for i in committed], 120)
            got, missing = latencies(committed, smsc.accepted_at, phone)
            bulk_sent = sum(1 for d in list(smsc.accepted_at) if d.startswith("35796"))
            results.append(line(f"priority-1 sms at {args.priority_rate:g}/s behind "
                                f"{args.bulk:,} bulk", got, missing))
            results.append(f"    bulk SMS accepted by the SMSC meanwhile: {bulk_sent:,}")
            print(results[-2], results[-1], sep="\n", flush=True)
        rss = service_rss(service.pid)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        smsc.stop()
        smtp.stop()
    print("peak RSS of the service's processes:")
    for name, mb in sorted(rss.items()):
        print(f"  {name:<60} {mb:6.0f} MB")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
