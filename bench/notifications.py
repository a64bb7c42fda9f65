"""Benchmark: a notification run over a population generated in SQL, on PostgreSQL and SQLite.

The population (accounts receivable with an outstanding amount and a due date) and as many
contacts are generated in the business tables of the same database. The raw limit, measured
in the same run on the same database, is the same request headers (template, contact,
``#notification.*`` entities as JSON, idempotency key, expiry) written by one
``INSERT … SELECT``. The pipeline does more per recipient: it streams the population through a
server-side cursor, evaluates the type's conditions, looks the contacts up for consent, and
writes a notification, a header and the run's cursor in one transaction per batch. Peak RSS is
read when 100,000 recipients are done and at the end: a flat figure means memory does not grow
with the population. Then, unless ``--no-kill``, a second run is SIGKILLed halfway (in a
child process), started again, and checked for completeness without duplicates.

    .venv/bin/python bench/notifications.py                      # 200,000 on PG, 100,000 on SQLite
    .venv/bin/python bench/notifications.py --backend postgresql --n 1000000   # the 1M run
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from comms_pipeline.store.models import notifications_t, runs_t

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.notifications.runs import run_notifications
from comms_pipeline.notifications.types import Definitions, TypeDef, save_definitions
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import headers_t

DEFAULT_N = {"postgresql": 200_000, "sqlite": 100_000}
RSS_MARK = 100_000
TYPE = "BENCH_BALANCE"

POPULATION = """
SELECT ar.id AS recipient_key, ar.contact_ref AS contact_ref,
       ar.number AS "accounts_receivable.number", ar.name AS "accounts_receivable.name",
       ar.outstanding_amount AS "accounts_receivable.outstanding_amount",
       ar.currency AS "accounts_receivable.currency",
       ar.outstanding_amount AS total_notified_amount, ar.due_date AS due_date
FROM bench_accounts ar
"""


def series(pg: bool, n: int) -> str:
    if pg:
        return f"generate_series(1, {n}) AS g(i)"
    return (f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})"
            f" SELECT i FROM s) AS g")


def seed(engine, n: int) -> None:
    pg = engine.dialect.name == "postgresql"
    due = "DATE '2024-10-01' + (i % 20)" if pg else "date('2024-10-01', '+' || (i % 20) || ' days')"
    with engine.begin() as conn:
        save_template(conn, TemplateSpec(TYPE, "bench balance", "email", [VariantSpec(
            "en", subject="Your account #notification.accounts_receivable.number",
            body_html="<p>Dear #notification.accounts_receivable.name, you owe "
                      "#notification.total_notified_amount.</p>")],
            classification="financial", referring_entities=["notification"]))
        conn.execute(text(
            "CREATE TABLE bench_accounts (id INTEGER PRIMARY KEY, number VARCHAR(32), "
            "contact_ref VARCHAR(64), name VARCHAR(200), outstanding_amount NUMERIC(12, 2), "
            "currency CHAR(3), due_date DATE)"))
        conn.execute(text(
            f"INSERT INTO bench_accounts SELECT i, 'AR-' || i, 'B-' || i, 'Customer ' || i, "
            f"(i % 500) + 0.5, 'EUR', {due} FROM {series(pg, n)}"))
        conn.execute(text(
            "INSERT INTO contacts (ref, name, preferred_language, opt_in_direct_marketing, "
            "opt_in_affiliate_marketing, created_at) SELECT contact_ref, name, 'en', false, "
            "false, CURRENT_TIMESTAMP FROM bench_accounts"))
        save_definitions(conn, Definitions({}, {TYPE: TypeDef(
            name="bench", classification="financial", entity="accounts_receivable",
            template=TYPE, population_query=POPULATION, apply_data_protection=False,
            expiry_hours=72, conditions=[
                {"field": "accounts_receivable.outstanding_amount", "op": "more_than",
                 "value": 0}, {"field": "due_date", "op": "due_days_ago", "value": 1}])}, {}))
        if pg:
            conn.execute(text("ANALYZE"))


def raw_insert(engine, n: int) -> float:
    """The same headers by one INSERT … SELECT."""
    pg = engine.dialect.name == "postgresql"
    obj = "json_build_object" if pg else "json_object"
    now = "CURRENT_TIMESTAMP"
    expires = ("CURRENT_TIMESTAMP + INTERVAL '72 hours'" if pg
               else "datetime('now', '+72 hours')")
    entities = (f"{obj}('accounts_receivable', {obj}('number', number, 'name', name, "
                f"'outstanding_amount', outstanding_amount, 'currency', currency), "
                f"'notification', {obj}('number', 'N0-' || id, 'type', '{TYPE}', "
                f"'total_notified_amount', outstanding_amount, 'due_date', due_date, "
                f"'accounts_receivable', {obj}('number', number, 'name', name, "
                f"'outstanding_amount', outstanding_amount, 'currency', currency)))")
    sql = (f"INSERT INTO request_headers (template_code, contact_ref, entities, "
           f"idempotency_key, expires_at, send_to, priority, status, override_consent, "
           f"attempts, details_created, created_at) SELECT '{TYPE}', contact_ref, {entities}, "
           f"'raw-' || id, {expires}, 'primary', 3, 'awaiting_processing', false, 0, 0, {now} "
           f"FROM bench_accounts")
    with timer() as t, engine.begin() as conn:
        conn.execute(text(sql))
    # The rows stay: deleting headers is quadratic (request_headers.copy_of_id has no index
    # for its foreign-key check), and the pipeline then writes into a table as large, which
    # if anything favours the raw limit.
    return row("raw limit: one INSERT … SELECT of the headers", n, t[0], "recipients")


def pipeline(settings, engine, n: int, batch: int) -> tuple[float, float, float]:
    marks: dict[str, float] = {}

    def on_batch(batches: int) -> None:
        if "rss" not in marks and batches * batch >= min(RSS_MARK, n):
            marks["rss"] = peak_rss_mb()

    with timer() as t:
        summary = run_notifications(settings, engine, TYPE, batch_size=batch, on_batch=on_batch)
    assert summary["created"] == n, summary
    rate = row("pipeline: run_notifications", n, t[0], "recipients")
    return rate, marks.get("rss", 0.0), peak_rss_mb()


CHILD_FLAG = "--child"
#: The killed run covers a period of its own: today's was notified by the pipeline part.
KILL_KEY = "kill-and-resume"


def child(url: str, var: str, batch: int, kill_at: int) -> None:
    settings = load_settings(path=None, environ={"COMMS_DATABASE_URL": url,
                                                 "COMMS_PATHS_VAR": var})
    engine = make_engine(settings.database_url)

    def die(batches: int) -> None:
        if batches == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    run_notifications(settings, engine, TYPE, batch_size=batch, on_batch=die, run_key=KILL_KEY)


def kill_and_resume(settings, engine, n: int, batch: int) -> None:
    kill_at = max(1, n // batch // 2)
    with timer() as t:
        proc = subprocess.run([sys.executable, __file__, CHILD_FLAG, settings.database_url,
                               str(settings.var_dir), str(batch), str(kill_at)])
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        with engine.connect() as conn:
            run = conn.execute(select(runs_t).order_by(runs_t.c.id.desc()).limit(1)).one()
        killed_at = run.created
        summary = run_notifications(settings, engine, TYPE, batch_size=batch, run_key=KILL_KEY)
    with engine.connect() as conn:
        notes, keys = conn.execute(
            select(func.count(), func.count(notifications_t.c.recipient_key.distinct()))
            .where(notifications_t.c.run_id == run.id)).one()
        headers = conn.execute(select(func.count()).select_from(headers_t).where(
            headers_t.c.idempotency_key.like(f"notif-{run.id}-%"))).scalar_one()
    ok = notes == keys == headers == n and summary["resumed"] == 1
    print(f"  kill and restart: SIGKILL after {killed_at:,} recipients (run {run.id}, status "
          f"{run.status}); resumed and finished: {notes:,} notifications, {keys:,} distinct "
          f"recipients, {headers:,} headers -> {'no duplicates, none missing' if ok else 'FAIL'}"
          f" ({t[0]:.1f} s for both parts)")
    assert ok


def bench(backend: str, n: int, batch: int, kill: bool) -> None:
    print(f"== {backend}: {n:,} recipients, batches of {batch}")
    url = fresh_database(backend, "bench_notifications")
    upgrade(url)
    settings = load_settings(path=None, environ={"COMMS_DATABASE_URL": url,
                                                 "COMMS_PATHS_VAR": "bench/out/var"})
    engine = make_engine(settings.database_url)
    started = time.perf_counter()
    seed(engine, n)
    print(f"  population and contacts generated in SQL in {time.perf_counter() - started:.1f} s;"
          f" peak RSS before the run {peak_rss_mb():.0f} MB")
    raw = raw_insert(engine, n)
    rate, rss_mark, rss_end = pipeline(settings, engine, n, batch)
    print(f"  ratio pipeline / raw limit: {rate / raw:.3f}")
    print(f"  peak RSS: {rss_mark:.0f} MB at {min(RSS_MARK, n):,} recipients, "
          f"{rss_end:.0f} MB at {n:,}")
    if kill:
        kill_and_resume(settings, engine, n, batch)
    engine.dispose()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["postgresql", "sqlite"])
    parser.add_argument("--n", type=int, help="recipients (default 200,000 PG / 100,000 SQLite)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--no-kill", action="store_true", help="skip the kill-and-restart run")
    args = parser.parse_args()
    for backend in args.backend or ["postgresql", "sqlite"]:
        bench(backend, args.n or DEFAULT_N[backend], args.batch_size, not args.no_kill)


if __name__ == "__main__":
    main()
