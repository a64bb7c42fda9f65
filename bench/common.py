"""Shared helpers of the benchmarks: databases to run on, peak memory, printing."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

OUT = Path(__file__).resolve().parent / "out"
PG_ADMIN = os.environ.get("COMMS_BENCH_PG_URL",
                          "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def fresh_database(backend: str, name: str) -> str:
    """A new, empty database URL for ``backend`` (``sqlite`` or ``postgresql``)."""
    if backend == "sqlite":
        OUT.mkdir(exist_ok=True)
        path = OUT / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


@contextmanager
def timer() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)


def row(label: str, count: int, seconds: float, unit: str = "rows") -> float:
    rate = count / seconds if seconds else float("inf")
    print(f"  {label:<44} {count:>9} {unit} in {seconds:7.2f} s = {rate:>10,.0f} {unit}/s")
    return rate
