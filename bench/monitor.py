"""Benchmark: the Comms Monitor job expanding headers into details, on PostgreSQL and SQLite.

The raw limit, measured in the same run on the same database, is the same number of detail
rows written by one ``INSERT … SELECT`` joining headers, contacts and addresses. The pipeline
does much more per row (addresses validated with phonenumbers, template merge, limits, state
history), so the ratio says what that costs.

    .venv/bin/python bench/monitor.py [--n 100000] [--backend postgresql --backend sqlite]
        [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.run import run_stage_workers
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t

CONTACTS = 10_000


def seed(engine, n: int) -> None:
    pg = engine.dialect.name == "postgresql"
    series = ("generate_series(0, :k - 1) AS g(i)" if pg else
              "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < :k)"
              " SELECT i FROM s) AS g")
    phone = "'+35799' || lpad(i::text, 6, '0')" if pg else "printf('+35799%06d', i)"
    with engine.begin() as conn:
        save_template(conn, TemplateSpec("SMS_BENCH", "bench sms", "sms", [VariantSpec(
            "en", body_text="Dear #contact_information.name, payment #payment.number of EUR "
                            "#payment.amount received. Thank you!")],
            referring_entities=["payment"]))
        save_template(conn, TemplateSpec("EMAIL_BENCH", "bench email", "email", [VariantSpec(
            "en", subject="Your bill", body_html="<p>Dear #contact_information.name</p>")]))
        conn.execute(text(f"INSERT INTO contacts (ref, name, preferred_language, "
                          f"opt_in_direct_marketing, opt_in_affiliate_marketing, created_at) "
                          f"SELECT 'C-' || i, 'Contact ' || i, 'en', true, false, "
                          f"CURRENT_TIMESTAMP FROM {series}"), {"k": CONTACTS})
        for kind, value in (("phone", phone), ("email", "'c' || i || '@example.com'")):
            conn.execute(text(f"INSERT INTO contact_addresses (contact_id, kind, address_type, "
                              f"value, is_primary, created_at) SELECT c.id, '{kind}', 'home', "
                              f"{value}, true, "
                              f"CURRENT_TIMESTAMP FROM {series} JOIN contacts c "
                              f"ON c.ref = 'C-' || g.i"), {"k": CONTACTS})
        conn.execute(text(
            f"INSERT INTO request_headers (contact_ref, template_code, entities, send_to, "
            f"priority, status, attempts, details_created, created_at) "
            f"SELECT 'C-' || (i % {CONTACTS}), CASE WHEN i % 5 = 0 THEN 'EMAIL_BENCH' "
            f"ELSE 'SMS_BENCH' END, '{{\"payment\": {{\"number\": \"P-1\", \"amount\": "
            f"\"10.00\"}}}}', 'primary', 2, 'awaiting_processing', 0, 0, CURRENT_TIMESTAMP "
            f"FROM {series}"), {"k": n})


RAW = """
INSERT INTO request_details (header_id, contact_id, template_id, media, direction, address,
    language, body, priority, state, attempts, created_at)
SELECT h.id, c.id, t.id, t.media, 'outgoing', a.value, 'en', 'x', h.priority,
    CASE WHEN t.media = 'sms' THEN 'awaiting_send' ELSE 'awaiting_merge' END, 0,
    CURRENT_TIMESTAMP
FROM request_headers h
JOIN contacts c ON c.ref = h.contact_ref
JOIN templates t ON t.code = h.template_code
JOIN contact_addresses a ON a.contact_id = c.id
 AND a.kind = CASE WHEN t.media = 'sms' THEN 'phone' ELSE 'email' END
"""


def bench(backend: str, n: int, workers: int) -> dict:
    url = fresh_database(backend, f"comms_bench_monitor_{backend}")
    upgrade(url)
    engine = make_engine(url)
    seed(engine, n)
    print(f"{backend}: {n} headers, {CONTACTS} contacts")
    with timer() as t, engine.begin() as conn:
        conn.execute(text(RAW))
    raw = row("raw limit: one INSERT ... SELECT", n, t[0], "details")
    with engine.begin() as conn:
        conn.execute(details_t.delete())
    settings = load_settings(environ={"COMMS_DATABASE_URL": url})
    from comms_pipeline.jobs.monitor import MonitorJob

    runner = Runner(settings, engine, MonitorJob(settings, engine),
                    batch_size=settings.monitor.batch_size, once=True)
    with timer() as t:
        runner.run()
    with engine.connect() as conn:
        made = conn.execute(select(func.count()).select_from(details_t)).scalar_one()
    assert made == n, f"expected {n} details, got {made}"
    pipe = row("pipeline: comms job run monitor", made, t[0], "details")
    print(f"  ratio pipeline / raw = {pipe / raw:.3f}   peak RSS {peak_rss_mb():.0f} MB")
    result = {"raw": raw, "pipeline": pipe}
    if workers > 1:
        reset(engine)
        os.environ["COMMS_DATABASE_URL"] = url
        with timer() as t:
            handled = run_stage_workers("monitor", settings, engine, workers).handled
        assert handled == n, f"expected {n} handled, got {handled}"
        par = row(f"pipeline: comms job run monitor --workers {workers}", n, t[0], "details")
        print(f"  ratio pipeline ({workers} workers) / raw = {par / raw:.3f}   "
              f"peak RSS of one worker {peak_rss_mb(children=True):.0f} MB")
        result["parallel"] = par
    engine.dispose()
    return result


def reset(engine) -> None:
    """Back to the starting line: no details, every header awaiting processing."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM state_transitions"))
        conn.execute(details_t.delete())
        conn.execute(text("UPDATE request_headers SET status = 'awaiting_processing', "
                          "status_code = NULL, status_reason = NULL, details_created = 0, "
                          "attempts = 0, claimed_by = NULL, lease_until = NULL"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--backend", action="append", choices=["postgresql", "sqlite"])
    parser.add_argument("--workers", type=int, default=2,
                        help="also measure this many monitor processes side by side")
    args = parser.parse_args()
    for backend in args.backend or ["postgresql", "sqlite"]:
        bench(backend, args.n, args.workers)


if __name__ == "__main__":
    main()
