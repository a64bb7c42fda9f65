"""Benchmark: the Letter Monitor job (through the database) against one WeasyPrint call per letter.

The raw limit, measured in the same run on the same letters, is the naive way: one
``weasyprint.HTML(string=...).write_pdf()`` per letter, the stylesheet inline in each document
(on a subset, ``--bare-n``, half before and half after the job runs, taken as a rate). The
pipeline claims awaiting-merge details, renders their templates, lays each chunk of letters
out as one document, splits it per letter with pypdf and stores every PDF with its detail's
state change; it runs with one and with two rendering processes (pool start-up included).
Rates are given per wall-clock second and per CPU-second (this process and its workers).
Peak RSS is this process's and the largest rendering worker's (read from /proc).

    .venv/bin/python bench/letters.py [--n 600] [--bare-n 40] [--processes 1 --processes 2]
                                      [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# The repository root instead of bench/ itself: a bench script named after a standard module
# (bench/email.py) must not shadow it, here or in the rendering workers that inherit sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if sys.path[1:2] == [str(Path(__file__).resolve().parent)]:
    sys.path.pop(1)

from sqlalchemy import delete, func, select, update

from bench.common import fresh_database, peak_rss_mb, row, timer
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.jobs.letter_monitor import LetterMonitorJob, sender_lines
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.rendering.pdf import LAYOUT_DIR, LetterContent, LetterRenderer
from comms_pipeline.settings.config import load_settings
from comms_pipeline.store.db import make_engine, upgrade
from comms_pipeline.store.models import details_t, documents_t, transitions_t

RESULTS = Path(__file__).resolve().parent / "results" / "letters.md"
BODY = ("<p>Dear #contact_information.name,</p>"
        "<p>Your bill <b>#bill.number</b> for the period #bill.period is now available. "
        "The amount of <b>#bill.amount</b> will be collected on #bill.due.</p>"
        "<table><tr><th>Item</th><th>Amount</th></tr>"
        "#foreach($line in $bill.lines)<tr><td>$line.name</td><td>$line.amount</td></tr>#end"
        "</table><p>If you have any questions, please call us on 0800 000 000 or reply to "
        "this letter. Thank you for being our customer.</p><p>Kind regards,<br>Billing</p>")
LINES = [{"name": "Broadband 500", "amount": "€29.90"}, {"name": "TV Plus", "amount": "€9.90"},
         {"name": "Calls", "amount": "€3.15"}]


def bill(i: int) -> dict:
    return {"number": f"B-{100000 + i}", "period": "April 2026", "amount": "€42.95",
            "due": "2026-05-20", "lines": LINES}


def seed(engine, n: int) -> None:
    with engine.begin() as conn:
        save_template(conn, TemplateSpec("BILL_LETTER", "Bill letter", "letter",
                                         referring_entities=["bill"], variants=[VariantSpec(
                                             "en", "Your bill #bill.number", BODY)]))
        for i in range(n):
            add_contact(conn, f"C-{i}", f"Customer {i} Example", language="en", addresses=[
                AddressSpec("postal", f"{i} Station Road\nSpringfield\nSP{i % 90 + 10} 1AB",
                            is_primary=True)])
            trigger(conn, contact_ref=f"C-{i}", template_code="BILL_LETTER",
                    entities={"bill": bill(i)})


def reset(engine) -> None:
    """Put every letter back to Awaiting Merge for the next run."""
    with engine.begin() as conn:
        conn.execute(delete(documents_t))
        conn.execute(delete(transitions_t).where(transitions_t.c.to_state != "awaiting_merge"))
        conn.execute(update(details_t).values(
            state="awaiting_merge", subject=None, attempts=0, claimed_by=None, lease_until=None,
            error_code=None, error_description=None, completed_at=None))


class TreeWatch:
    """Peak RSS (VmHWM) and CPU time of this process's descendants, sampled from /proc."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.cpu_ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.1):
            stats = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        stats[int(entry.name)] = (
                            (entry / "stat").read_text().rsplit(")", 1)[1].split())
                    except (OSError, IndexError):
                        continue
            parents = {pid: int(fields[1]) for pid, fields in stats.items()}
            for pid, fields in stats.items():
                ancestor, hops = parents.get(pid), 0
                while ancestor and ancestor != me and hops < 64:
                    ancestor, hops = parents.get(ancestor), hops + 1
                if ancestor == me:
                    self.peak_kb = max(self.peak_kb, _hwm_kb(pid))
                    self.cpu_ticks[pid] = int(fields[11]) + int(fields[12])


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Measure:
    label: str
    letters: int
    wall: float
    cpu: float
    processes: int = 1
    worker_mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.letters / self.wall

    @property
    def cpu_rate(self) -> float:
        return self.letters / self.cpu


def bare_documents(settings, count: int) -> list[str]:
    """The same letters as standalone HTML documents, the stylesheet inline in each."""
    from comms_pipeline.rendering import build_context, compile_template

    css = (LAYOUT_DIR / "letter.css").read_text(encoding="utf-8")
    frame = LetterRenderer(sender_lines(settings))  # only to build the same section HTML
    body = compile_template(BODY, html=True)
    docs = []
    for i in range(count):
        context = build_context(contact={"ref": f"C-{i}", "name": f"Customer {i} Example"},
                                entities={"bill": bill(i)}, params=None,
                                referring_entities=["bill"], language="en")
        letter = LetterContent(i, f"Customer {i} Example",
                               f"{i} Station Road\nSpringfield\nSP{i % 90 + 10} 1AB",
                               f"Your bill B-{100000 + i}", body.render(context), "en",
                               "2026-05-01", f"No. {i}")
        docs.append(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{css}</style>"
                    f"</head><body>{frame._section(0, letter)}</body></html>")
    return docs


def bare_loop(docs: list[str]) -> Measure:
    """The naive loop: one ``HTML(string=...).write_pdf()`` per letter."""
    import weasyprint

    cpu = time.process_time()
    with timer() as t:
        for html in docs:
            pdf = weasyprint.HTML(string=html, base_url=str(LAYOUT_DIR)).write_pdf()
            assert pdf.startswith(b"%PDF-")
    measure = Measure("raw: one HTML().write_pdf() per letter", len(docs), t[0],
                      time.process_time() - cpu)
    report(measure)
    return measure


def job_run(settings, engine, n: int, processes: int, batch_size: int) -> Measure:
    reset(engine)
    job = LetterMonitorJob(settings, engine, processes=processes)
    cpu = time.process_time()
    with TreeWatch() as tree, timer() as t:
        Runner(settings, engine, job, batch_size=batch_size, once=True).run()
    cpu = time.process_time() - cpu + tree.cpu_seconds
    with engine.connect() as conn:
        made = conn.execute(select(func.count()).select_from(documents_t)).scalar_one()
        waiting = conn.execute(select(func.count()).select_from(details_t).where(
            details_t.c.state != "awaiting_send")).scalar_one()
    assert made == n and waiting == 0, f"expected {n} letters, got {made} ({waiting} not sent)"
    measure = Measure(f"pipeline: letter-monitor, {processes} process(es)", n, t[0], cpu,
                      processes, tree.peak_kb / 1024)
    report(measure)
    return measure


def report(m: Measure) -> None:
    row(m.label, m.letters, m.wall, "letters")
    print(f"  {'':<44} CPU {m.cpu:6.2f} s = {m.cpu_rate:6.1f} letters per CPU-second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="letters through the job")
    parser.add_argument("--bare-n", type=int, default=40, help="letters in the naive loop")
    parser.add_argument("--processes", type=int, action="append")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()

    url = fresh_database(args.backend, f"comms_bench_letters_{args.backend}")
    upgrade(url)
    settings = load_settings(environ={"COMMS_DATABASE_URL": url,
                                      "COMMS_PATHS_VAR": str(Path(__file__).parent / "out")})
    engine = make_engine(url)
    from comms_pipeline.runtime.registry import build_job

    seed(engine, args.n)
    Runner(settings, engine, build_job("monitor", settings, engine), once=True).run()
    load = os.getloadavg()[0]
    print(f"{args.backend}: {args.n} letters (one page each), batch size {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {load:.2f}")
    # The naive loop runs in two halves, before and after the job runs, so that both sides
    # see the same (shared machine's) conditions on average.
    docs = bare_documents(settings, args.bare_n)
    half = len(docs) // 2
    before = bare_loop(docs[:half])
    runs = [job_run(settings, engine, args.n, p, args.batch_size)
            for p in args.processes or [1, 2]]
    after = bare_loop(docs[half:])
    bare = Measure("raw: one HTML().write_pdf() per letter", before.letters + after.letters,
                   before.wall + after.wall, before.cpu + after.cpu)
    report(bare)
    for m in runs:
        print(f"  {m.processes} process(es): ratio pipeline / raw = {m.rate / bare.rate:.2f} "
              f"({m.rate / bare.rate / m.processes:.2f} per process; per CPU-second "
              f"{m.cpu_rate / bare.cpu_rate:.2f})   largest worker peak RSS {m.worker_mb:.0f} MB")
    self_mb = peak_rss_mb()
    print(f"  peak RSS: this process {self_mb:.0f} MB, "
          f"children (waited for) {peak_rss_mb(children=True):.0f} MB")
    engine.dispose()
    if not args.no_write:
        write_results(args, bare, runs, self_mb, load)


NOTE = """\
How to read it: *letters/s* is wall-clock and moves with whatever else the machine runs (the
load average is printed); *letters/CPU-s* counts the CPU time of this process and of its
rendering workers, so its ratio holds under load. Both paths lay out the same HTML with the
same stylesheet; the pipeline also claims the rows, renders the templates, splits the PDF
with pypdf and stores every letter with its state change in the same transaction. With two
processes the wall-clock gain needs two free cores (the main process merges and stores while
the workers lay out); its CPU per letter shows the pool's cost (start-up included).

Where the time goes (profiled, one-page letter): WeasyPrint's style cascade and layout of
each letter's page take about 30-40 ms of CPU whether the letter is laid out alone or among
25 others; batching removes the per-document fixed cost (stylesheet parsing, font set-up,
writing and font subsetting of a PDF), about 15-25 ms per call once fonts are warm. So the
gain per process is bounded near 1.3-1.6x here now. The issue's 5 letters/s per call was
also measured at the start of this work (4.5/s per call against 30/s for the batch path in
the same script: 6.7x); that large per-call cost vanished later in the session, around the
time the machine's font set and font cache changed, and could not be reproduced since.\
"""


def write_results(args, bare: Measure, runs: list[Measure], self_mb: float,
                  load: float) -> None:
    command = (f".venv/bin/python bench/letters.py --n {args.n} --bare-n {args.bare_n} "
               + " ".join(f"--processes {m.processes}" for m in runs)
               + f" --backend {args.backend}")
    lines = [
        "# Letters: Letter Monitor job vs one WeasyPrint call per letter", "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, {args.backend}, load average "
        f"{load:.2f} at the start).", "",
        "| what | letters/s | ratio | per process | letters/CPU-s | ratio (CPU) "
        "| largest worker peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| raw: `HTML(string=...).write_pdf()` per letter ({bare.letters} letters) "
        f"| {bare.rate:.1f} | 1.00 | 1.00 | {bare.cpu_rate:.1f} | 1.00 | (main process) |",
    ]
    for m in runs:
        worker = f"{m.worker_mb:.0f} MB" if m.worker_mb else "(main process)"
        lines.append(
            f"| letter-monitor job, {m.processes} process(es), {m.letters} letters via the DB "
            f"| {m.rate:.1f} | {m.rate / bare.rate:.2f} | {m.rate / bare.rate / m.processes:.2f} "
            f"| {m.cpu_rate:.1f} | {m.cpu_rate / bare.cpu_rate:.2f} | {worker} |")
    lines += ["", f"Peak RSS of the benchmark process: {self_mb:.0f} MB.", "", NOTE, ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print(f"  written to {RESULTS}")


if __name__ == "__main__":
    main()
