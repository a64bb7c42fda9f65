"""Benchmark: the retention sweep over finished emails past their retention, each with its
body, its document stored in the local store (one file each) and a tracked link.

    .venv/bin/python bench/retention.py [--n 20000] [--backend sqlite --backend postgresql]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select

from bench.common import OUT, fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.runtime.run import run_job
from comms_pipeline.settings.config import load_settings
from comms_pipeline.settings.retention import RetentionSettings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, documents_t, headers_t, tracking_links_t

ROOT = Path(__file__).resolve().parents[1]


def seed(engine, n: int, store: Path) -> None:  # type: ignore[no-untyped-def]
    old = utcnow() - timedelta(days=30)
    data = b"From: a@example.com\r\nSubject: bill\r\n\r\n" + b"x" * 4000
    digest = hashlib.sha256(data).hexdigest()
    with engine.begin() as conn:
        contact_id = add_contact(conn, "C-1", "Bench Contact", addresses=[
            AddressSpec("email", "c1@example.com", is_primary=True)])
        header_id = conn.execute(insert(headers_t).values(
            contact_ref="C-1", template_code="T", status="processed", created_at=old)
            .returning(headers_t.c.id)).scalar_one()
    store.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, 5000):
        count = min(5000, n - start)
        with engine.begin() as conn:
            ids = list(conn.execute(insert(details_t).returning(
                details_t.c.id, sort_by_parameter_order=True), [
                {"header_id": header_id, "contact_id": contact_id, "media": "email",
                 "direction": "outgoing", "address": "c1@example.com", "subject": "Bill",
                 "body": "b" * 500, "state": "completed", "created_at": old,
                 "completed_at": old} for _ in range(count)]).scalars())
            docs = []
            for i in ids:
                path = store / f"{i}.eml"
                path.write_bytes(data)
                docs.append({"detail_id": i, "kind": "email", "content_type": "message/rfc822",
                             "content": data, "size": len(data), "sha256": digest,
                             "storage_backend": "local", "location": str(path),
                             "stored_at": old, "created_at": old})
            conn.execute(insert(documents_t), docs)
            conn.execute(insert(tracking_links_t), [
                {"id": f"l{i}", "detail_id": i, "url": "https://example.com/x", "created_at": old}
                for i in ids])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    for backend in args.backend or ["sqlite"]:
        url = fresh_database(backend, "bench_retention")
        upgrade(url)
        var = OUT / "retention-var"
        shutil.rmtree(var, ignore_errors=True)
        settings = load_settings(path=ROOT / "config" / "comms.toml", environ={
            "COMMS_DATABASE_URL": url, "COMMS_PATHS_VAR": str(var)})
        settings = settings.model_copy(update={"retention": RetentionSettings(
            bodies={"*": 7}, documents={"*": 7}, tracking={"*": 7})})
        engine = make_engine(url)
        seed(engine, args.n, var / "store")
        with timer() as took:
            handled = run_job("retention-sweep", settings, engine)
        row(f"{backend}: retention sweep (body, document + its file, link)", handled, took[0],
            "entries")
        with engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(documents_t)
                                .where(documents_t.c.purged_at.is_(None))).scalar()
        files = sum(1 for _ in (var / "store").iterdir())
        print(f"  documents left {left}, files left {files}, peak RSS {peak_rss_mb():.0f} MB")
        engine.dispose()


if __name__ == "__main__":
    main()
