"""Chaos benchmark: the pipeline on PostgreSQL under a fault schedule, and what it lost.

Two copies of every stage run as processes against a throwaway PostgreSQL cluster (so that
restarting it disturbs nobody else) and the loopback SMSC and SMTP server of the test suite:
the Comms Monitor job (looping: started again whenever a run ends, as cron would), the SMS
daemon (SMPP) and the Email daemon (SMTP). Meanwhile a random worker is SIGKILLed every few
seconds (and started again, as a supervisor would), one daemon is SIGSTOPped past its lease
and woken, PostgreSQL is restarted, and the SMTP server and the SMSC are each stopped and
started again. At the end every header and detail must be terminal and none claimed; per
channel the servers' own records give what was sent, lost and duplicated, beside the bound
(kills of that channel's workers x batch size, plus the frozen batch).

    python bench/chaos.py --n 20000        # the published run (make bench)
    python bench/chaos.py --n 600          # a quick look

Not covered yet: letters and storage (SFTP) and the HTTP gateways.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import collections
import os
import random
import signal
import subprocess
import tempfile
import time

from sqlalchemy import create_engine, func, select, text

from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.db import upgrade
from comms_pipeline.store.models import details_t, headers_t
from tests import factories
from tests.integration.documents_factory import add_entries
from tests.servers.pgcluster import PgCluster
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


def load(url: str, n: int) -> tuple[int, int]:
    n_sms = n * 3 // 5
    n_email = n - n_sms
    engine = create_engine(url)
    with engine.begin() as conn:
        factories.sms_template(conn)
        for i in range(n_sms):
            add_contact(conn, f"S-{i}", f"Person {i}",
                        addresses=[AddressSpec("phone", f"+3579{i:07d}", "mobile", True)])
        for i in range(n_sms):
            trigger(conn, contact_ref=f"S-{i}", template_code="SMS_HELLO")
    add_entries(engine, "email", n_email)
    engine.dispose()
    return n_sms, n_email


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
    return {"headers": headers, "details": details, "claimed": claimed}


def inject(fault: str, servers: dict, workers: list[Worker], engine) -> None:  # type: ignore[no-untyped-def]
    """One fault of the schedule."""
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
    elif fault == "sigstop":
        frozen = random.choice([w for w in workers if not w.looping])
        frozen.proc.send_signal(signal.SIGSTOP)
        time.sleep(LEASE * 2)
        frozen.proc.send_signal(signal.SIGCONT)


def drive(workers: list[Worker], engine, servers: dict, events: list[str],  # type: ignore[no-untyped-def]
          args: argparse.Namespace, n_sms: int) -> None:
    """Kill, freeze and restart things until everything is terminal (or the limit)."""
    faults = ["smtp-restart", "smsc-restart", "sigstop"]
    random.shuffle(faults)
    faults.append("pg-restart")  # first: while every worker is busy
    start = time.monotonic()
    next_kill = start + random.uniform(*args.kill_every)
    next_fault = start + 2

    def done() -> bool:
        c = counts(engine)
        pending = sum(v for k, v in c["details"].items() if k not in TERMINAL_DETAIL)
        waiting = sum(c["headers"].get(s, 0) for s in HEADER_PENDING)
        return waiting == 0 and pending == 0 and c["claimed"] == 0

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
            events.append(f"{now - start:.0f}s {fault}")
            inject(fault, servers, workers, engine)
            next_fault = time.monotonic() + 3
        for w in workers:
            w.tend(more_work=True)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="communications in all")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(1.0, 3.0))
    parser.add_argument("--limit", type=float, default=1800, help="give up after (seconds)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    cluster = PgCluster().init()
    cluster.start()
    smtp = SmtpServer().start()
    smsc = Smsc().start()
    workdir = Path(tempfile.mkdtemp(prefix="comms-chaos-"))
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
        n_sms, n_email = load(url, args.n)
        print(f"loaded {n_sms} SMS requests and {n_email} emails in "
              f"{time.monotonic() - t0:.1f} s")
        env = dict(os.environ, COMMS_DATABASE_URL=url, COMMS_PATHS_VAR=str(workdir / "var"),
                   COMMS_CLAIMS_LEASE_SECONDS=str(LEASE), COMMS_DAEMONS_POLL_INTERVAL="0.2",
                   COMMS_DAEMONS_HEARTBEAT_SECONDS="1", COMMS_DAEMONS_BATCH_SIZE=str(BATCH),
                   COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
                   COMMS_GATEWAYS_SMS_TIMEOUT="3", COMMS_CLAIMS_BACKOFF_BASE_SECONDS="1",
                   COMMS_CLAIMS_BACKOFF_MAX_SECONDS="5", COMMS_CLAIMS_MAX_ATTEMPTS="1000",
                   **smtp.env(COMMS_GATEWAYS_EMAIL_TIMEOUT="3"))
        cli = [sys.executable, "-m", "comms_pipeline.cli.main", "--json-logs"]
        for copy in (1, 2):
            workers.append(Worker(f"monitor-{copy}", [*cli, "job", "run", "monitor",
                                  "--batch-size", str(BATCH), "--no-progress"], env, workdir,
                                  looping=True))
            for stage in ("sms", "email"):
                workers.append(Worker(f"{stage}-{copy}", [*cli, "daemon", "run", stage], env,
                                      workdir, looping=False))
        engine = create_engine(url, pool_pre_ping=True)
        servers = {"cluster": cluster, "smtp": smtp, "smsc": smsc}
        start = time.monotonic()
        drive(workers, engine, servers, events, args, n_sms)
        smsc = servers["smsc"]
        elapsed = time.monotonic() - start
        alive_daemons = all(w.proc.poll() is None for w in workers if not w.looping)
        final = counts(engine)
        engine.dispose()
    finally:
        for w in workers:
            w.stop()
        smtp.stop()
        smsc.stop()

    sms_sent = collections.Counter(m.destination for m in smsc.messages())
    email_sent = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
    kills = collections.Counter(w.name.rsplit("-", 1)[0] for w in workers for _ in range(w.kills))
    died = {w.name: w.died for w in workers if w.died}
    table = [
        ("sms (SMPP)", n_sms, len(sms_sent), n_sms - len(sms_sent),
         sum(c - 1 for c in sms_sent.values()), kills["sms"] + kills["monitor"],
         (kills["sms"] + 1) * BATCH),
        ("email (SMTP)", n_email, len(email_sent), n_email - len(email_sent),
         sum(c - 1 for c in email_sent.values()), kills["email"], (kills["email"] + 1) * BATCH),
    ]
    lines = [f"chaos run: --n {args.n}, {elapsed:.0f} s, faults: {', '.join(events)}; "
             f"final: {final}; daemons all running at the end: {alive_daemons}; "
             f"workers that exited by themselves with an error: {died or 'none'}", "",
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
