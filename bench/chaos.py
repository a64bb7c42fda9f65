"""Chaos benchmark: the pipeline on PostgreSQL under a fault schedule, and what it lost.

Two copies of every stage run as processes against a throwaway PostgreSQL cluster (so that
restarting it disturbs nobody else) and the loopback servers of the test suite: the Comms
Monitor and Email Monitor jobs (looping: started again whenever a run ends, as cron would),
the SMS daemon (SMPP), the Email daemon (SMTP), the Letter daemon (SFTP print house), the
Push-to-External daemon (signed HTTP webhooks) and the Storage daemon (documents to SFTP).
The load mixes SMS and email requests expanded by the monitor, letters awaiting send with
their PDFs, and webhook entries. Meanwhile a random worker is SIGKILLed every few seconds
(and started again, as a supervisor would), one daemon is SIGSTOPped past its lease and
woken, PostgreSQL is restarted, and each gateway server (SMTP, SMSC, SFTP, HTTP) is stopped
and started again. At the end every header and detail must be terminal, none claimed, and
every document of a sent email or letter stored; per channel the servers' own records give
what was sent, lost and duplicated, beside the bound (kills of that channel's workers plus
the frozen batch, x batch size).

    python bench/chaos.py --n 20000        # the published run (make bench)
    python bench/chaos.py --n 1000         # a quick look
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import tempfile
import time

from sqlalchemy import create_engine, func, select, text

from comms_pipeline.gateways.webhook import new_secret
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, add_external_system
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.db import upgrade
from comms_pipeline.store.models import details_t, documents_t, headers_t
from tests import factories
from tests.integration.details_factory import add_details
from tests.integration.documents_factory import add_entries
from tests.servers.http_gateways import WebhookReceiver
from tests.servers.pgcluster import PgCluster
from tests.servers.sftp import SftpServer
from tests.servers.smpp import Smsc
from tests.servers.smtp import SmtpServer

BATCH = 50
LEASE = 4
HEADER_PENDING = ("awaiting_processing", "awaiting_event_resolution")
TERMINAL_DETAIL = {"completed", "rejected", "expired", "cancelled", "failed"}


class Worker:
    """One copy of a stage: started again after each SIGKILL (and, for the looping job,
    after each run that ends by itself)."""

    def __init__(self, name: str, argv: list[str], env: dict, logdir: Path, looping: bool):
        self.name, self.argv, self.env, self.looping = name, argv, env, looping
        self.logdir = logdir
        self.kills = 0
        self.died = []  # exit codes of runs that ended by themselves with an error
        self.starts = 0
        self.proc: subprocess.Popen | None = None
        self._ended = 0.0
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = (self.logdir / f"{self.name}-{self.starts}.log").open("w")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)

    def tend(self, more_work: bool) -> None:
        code = self.proc.poll()
        if code is None:
            return
        if code not in (0, -signal.SIGKILL):
            self.died.append(code)
        if code == -signal.SIGKILL:
            self.start()
        elif self.looping and more_work:  # the next cron run, a moment later
            self._ended = self._ended or time.monotonic()
            if time.monotonic() - self._ended > 2:
                self._ended = 0.0
                self.start()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.kills += 1
            self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "hung"
        if code not in (0, -signal.SIGKILL, -signal.SIGTERM):
            self.died.append(code)


class Load:
    """How many entries of each channel the run holds (SMS 40 %, email 30 %, webhooks 20 %,
    letters 10 %)."""

    def __init__(self, n: int) -> None:
        self.sms = n * 4 // 10
        self.email = n * 3 // 10
        self.hooks = n * 2 // 10
        self.letters = n - self.sms - self.email - self.hooks


def load(url: str, n: int, receiver: WebhookReceiver) -> Load:
    """SMS and email requests for the monitors to expand and merge; letters (with their PDF)
    and webhook entries ready to send."""
    mix = Load(n)
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.sms_template(conn)
        factories.email_template(conn)
        for i in range(mix.sms):
            add_contact(conn, f"S-{i}", f"Person {i}",
                        addresses=[AddressSpec("phone", f"+3579{i:07d}", "mobile", True)])
        for i in range(mix.email):
            add_contact(conn, f"E-{i}", f"Person {i}",
                        addresses=[AddressSpec("email", f"e{i}@example.com", "home", True)])
        for i in range(mix.sms):
            trigger(conn, contact_ref=f"S-{i}", template_code="SMS_HELLO")
        for i in range(mix.email):
            trigger(conn, contact_ref=f"E-{i}", template_code="EMAIL_HELLO")
        system = add_external_system(conn, "PORTAL", "Customer portal",
                                     webhook_url=f"{receiver.url}/hooks/comms",
                                     webhook_secret=receiver.secret)
    add_entries(engine, "letter", mix.letters, contact_ref="L-1")
    add_details(engine, "sms", [(f"+4477{i:07d}", f"Your code is {i}")
                                for i in range(mix.hooks)],
                state="awaiting_external", external_system_id=system)
    engine.dispose()
    return mix


def counts(engine) -> dict:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        headers = dict(conn.execute(select(headers_t.c.status, func.count())
                                    .group_by(headers_t.c.status)).all())
        details = dict(conn.execute(select(details_t.c.state, func.count())
                                    .group_by(details_t.c.state)).all())
        claimed = conn.execute(select(func.count()).where(details_t.c.claimed_by.isnot(None))
                               ).scalar_one()
        claimed += conn.execute(select(func.count()).where(headers_t.c.claimed_by.isnot(None))
                                ).scalar_one()
        claimed += conn.execute(select(func.count()).where(
            documents_t.c.claimed_by.isnot(None))).scalar_one()
        unstored = conn.execute(
            select(func.count()).select_from(documents_t.join(
                details_t, details_t.c.id == documents_t.c.detail_id))
            .where(details_t.c.state == "completed", documents_t.c.stored_at.is_(None))
        ).scalar_one()
    return {"headers": headers, "details": details, "claimed": claimed,
            "unstored documents": unstored}


def inject(fault: str, servers: dict, workers: list[Worker], engine) -> str:  # type: ignore[no-untyped-def]
    """One fault of the schedule; returns what it struck."""
    if fault == "pg-restart":
        engine.dispose()
        servers["cluster"].stop()
        time.sleep(2)
        servers["cluster"].start()
    elif fault == "smtp-restart":
        servers["smtp"].stop()
        time.sleep(2)
        servers["smtp"].start()
    elif fault == "smsc-restart":
        old = servers["smsc"]
        old.stop()
        time.sleep(2)
        servers["smsc"] = Smsc(port=old.port).start()
        servers["smsc"].accepted[:0] = old.accepted
    elif fault == "sftp-restart":  # the print house and the archive
        servers["sftp"].stop()
        time.sleep(2)
        servers["sftp"].start()
    elif fault == "http-restart":
        old = servers["http"]
        old.stop()
        time.sleep(2)
        new = WebhookReceiver(old.secret, port=old.port).start()
        new.delivered[:0] = old.delivered
        servers["http"] = new
    elif fault == "sigstop":
        frozen = random.choice([w for w in workers if not w.looping])
        frozen.proc.send_signal(signal.SIGSTOP)
        time.sleep(LEASE * 2)
        frozen.proc.send_signal(signal.SIGCONT)
        return f"{fault} {frozen.name}"
    return fault


def drive(workers: list[Worker], engine, servers: dict, events: list[str],  # type: ignore[no-untyped-def]
          args: argparse.Namespace) -> None:
    """Kill, freeze and restart things until everything is terminal (or the limit)."""
    faults = ["smtp-restart", "smsc-restart", "sftp-restart", "http-restart", "sigstop"]
    random.shuffle(faults)
    faults.append("pg-restart")  # first: while every worker is busy
    start = time.monotonic()
    next_kill = start + random.uniform(*args.kill_every)
    next_fault = start + 2

    def done() -> bool:
        c = counts(engine)
        pending = sum(v for k, v in c["details"].items() if k not in TERMINAL_DETAIL)
        waiting = sum(c["headers"].get(s, 0) for s in HEADER_PENDING)
        return (waiting == 0 and pending == 0 and c["claimed"] == 0
                and c["unstored documents"] == 0)

    while time.monotonic() - start < args.limit:
        try:
            if done():
                return
        except Exception:
            pass
        now = time.monotonic()
        if now >= next_kill:
            random.choice(workers).kill()
            next_kill = now + random.uniform(*args.kill_every)
        if faults and now >= next_fault:
            fault = faults.pop()
            events.append(f"{now - start:.0f}s " + inject(fault, servers, workers, engine))
            next_fault = time.monotonic() + 3
        for w in workers:
            w.tend(more_work=True)
        time.sleep(0.2)


STAGES = {  # worker name: (argv after `comms`, looping job?)
    "monitor": (["job", "run", "monitor", "--batch-size", str(BATCH), "--no-progress"], True),
    "email-monitor": (["job", "run", "email-monitor", "--batch-size", str(BATCH),
                       "--no-progress"], True),
    "sms": (["daemon", "run", "sms"], False),
    "email": (["daemon", "run", "email"], False),
    "letter": (["daemon", "run", "letter"], False),
    "push-external": (["daemon", "run", "push-external"], False),
    "storage": (["daemon", "run", "storage"], False),
}


def sent_by_server(servers: dict) -> dict[str, collections.Counter]:
    """What each server recorded, by entry: a key seen twice is a duplicate."""
    sftp: SftpServer = servers["sftp"]
    letters: collections.Counter = collections.Counter()
    for manifest in (sftp.root / "incoming").glob("*/manifest.json"):
        # A batch counts once its manifest is there: the print house takes nothing else.
        for letter in json.loads(manifest.read_text())["letters"]:
            letters[letter["detail_id"]] += 1
    # Documents: the files in the archive, and how often each was written.
    writes = collections.Counter(path for op, path in sftp.operations
                                 if op == "open" and path.startswith("/archive/"))
    stored = collections.Counter({path: writes[path] or 1 for path in (
        "/" + str(f.relative_to(sftp.root)) for f in (sftp.root / "archive").rglob("*")
        if f.is_file())})
    hooks = collections.Counter(r.headers["webhook-id"] for r in servers["http"].delivered)
    return {"sms": collections.Counter(m.destination for m in servers["smsc"].messages()),
            "email": collections.Counter(m.rcpt_tos[0] for m in servers["smtp"].messages),
            "letter": letters, "push-external": hooks, "storage": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="communications in all")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(1.0, 3.0))
    parser.add_argument("--limit", type=float, default=1800, help="give up after (seconds)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    cluster = PgCluster().init()
    cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="comms-chaos-"))
    smtp = SmtpServer().start()
    smsc = Smsc().start()
    sftp = SftpServer(workdir / "sftp-root").start()
    known_hosts = sftp.write_known_hosts(workdir / "known_hosts")
    http = WebhookReceiver(new_secret()).start()
    servers = {"cluster": cluster, "smtp": smtp, "smsc": smsc, "sftp": sftp, "http": http}
    workers: list[Worker] = []
    events: list[str] = []
    try:
        admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE comms"))
        admin.dispose()
        url = cluster.url("comms")
        upgrade(url)
        t0 = time.monotonic()
        mix = load(url, args.n, http)
        print(f"loaded {mix.sms} SMS and {mix.email} email requests, {mix.letters} letters "
              f"and {mix.hooks} webhooks in {time.monotonic() - t0:.1f} s")
        env = dict(os.environ, COMMS_DATABASE_URL=url, COMMS_PATHS_VAR=str(workdir / "var"),
                   COMMS_CLAIMS_LEASE_SECONDS=str(LEASE), COMMS_DAEMONS_POLL_INTERVAL="0.2",
                   COMMS_DAEMONS_HEARTBEAT_SECONDS="1", COMMS_DAEMONS_BATCH_SIZE=str(BATCH),
                   COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
                   COMMS_GATEWAYS_SMS_TIMEOUT="3", COMMS_CLAIMS_BACKOFF_BASE_SECONDS="1",
                   COMMS_CLAIMS_BACKOFF_MAX_SECONDS="5", COMMS_CLAIMS_MAX_ATTEMPTS="1000",
                   COMMS_GATEWAYS_WEBHOOK_BACKEND="http", COMMS_GATEWAYS_WEBHOOK_TIMEOUT="3",
                   COMMS_GATEWAYS_WEBHOOK_ALLOW_LOOPBACK_TARGETS="true",
                   **smtp.env(COMMS_GATEWAYS_EMAIL_TIMEOUT="3"),
                   **sftp.env("letter", known_hosts, timeout="3"),
                   **sftp.env("storage", known_hosts, timeout="3", remote_dir="/archive"))
        cli = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs"]
        for copy in (1, 2):
            for stage, (argv, looping) in STAGES.items():
                workers.append(Worker(f"{stage}-{copy}", [*cli, *argv], env, workdir,
                                      looping=looping))
        engine = create_engine(url, pool_pre_ping=True)
        start = time.monotonic()
        drive(workers, engine, servers, events, args)
        elapsed = time.monotonic() - start
        alive_daemons = all(w.proc.poll() is None for w in workers if not w.looping)
        final = counts(engine)
        with engine.connect() as conn:
            docs = conn.execute(select(func.count()).select_from(documents_t)).scalar_one()
        engine.dispose()
    finally:
        for w in workers:
            w.stop()
        for name in ("smtp", "smsc", "sftp", "http"):
            servers[name].stop()

    sent = sent_by_server(servers)
    kills = collections.Counter(w.name.rsplit("-", 1)[0] for w in workers for _ in range(w.kills))
    frozen = [e.split()[-1].rsplit("-", 1)[0] for e in events if e.split()[1] == "sigstop"]
    died = {w.name: w.died for w in workers if w.died}
    entries = {"sms": mix.sms, "email": mix.email, "letter": mix.letters,
               "push-external": mix.hooks, "storage": docs}
    labels = {"sms": "sms (SMPP)", "email": "email (SMTP)", "letter": "letters (SFTP)",
              "push-external": "webhooks (HTTP)", "storage": "documents stored (SFTP)"}
    table = []
    for channel, n in entries.items():
        got = sent[channel]
        bound = (kills[channel] + 1 + frozen.count(channel)) * BATCH
        table.append((labels[channel], n, len(got), n - len(got),
                      sum(c - 1 for c in got.values()), kills[channel], bound))
    lines = [f"chaos run: --n {args.n}, {elapsed:.0f} s, faults: {', '.join(events)}; "
             f"final: {final}; daemons all running at the end: {alive_daemons}; "
             f"workers that exited by themselves with an error: {died or 'none'}; "
             f"kills in all: {sum(kills.values())} (monitor jobs: "
             f"{kills['monitor'] + kills['email-monitor']})", "",
             "| channel | entries | sent | lost | duplicated | kills | bound |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c} | {n} | {s} | {lost} | {dup} | {k} | {b} |"
              for c, n, s, lost, dup, k, b in table]
    print("\n".join(lines))
    if args.record:
        with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as fh:
            fh.write("\n## Chaos (bench/chaos.py)\n\n" + "\n".join(lines) + "\n")
    cluster.destroy()
    ok = all(lost == 0 and dup <= b for _, _, _, lost, dup, _, b in table) and not died
    sys.exit(0 if ok and alive_daemons else 1)


if __name__ == "__main__":
    main()
