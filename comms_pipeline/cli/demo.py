"""``comms demo``: run the pipeline end to end on the embedded default and explain it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from comms_pipeline.cli.common import AppContext, pass_app


@click.command()
@pass_app
def demo(app: AppContext) -> None:
    """Run the whole pipeline on a fresh SQLite database (var/comms.db) and local folders.

    Triggers requests across media (some deliberately bad), runs every job and daemon to
    completion, and prints what was sent, what was rejected and why, and where it all is.
    """
    from comms_pipeline.runtime.demo import run_demo

    summary = run_demo(app.settings, lambda line: click.echo(f"  {line}"))
    headers, details = summary["headers"], summary["details"]
    click.secho("\nSent / completed:", bold=True)
    for d in details:
        if d["public_state"] == "Completed":
            where = d["location"] or d["gateway_ref"] or ""
            click.echo(f"  #{d['id']:<3} {d['media']:<7} {d['contact_ref']:<7} "
                       f"{(d['address'] or '').splitlines()[0]:<30} [{d['language']}] {where}")
    click.secho("\nRejected, not sent, or in error (and why):", bold=True)
    for h in headers:
        if h["status"] not in ("processed", "awaiting_processing"):
            click.echo(f"  request {h['id']:<3} {h['status']:<10} {h['status_code']}: "
                       f"{h['status_reason']}")
    for d in details:
        if d["public_state"] in ("Rejected", "Expired"):
            click.echo(f"  entry #{d['id']:<4} {d['media']:<7} {d['public_state']:<9} "
                       f"{d['error_code']}: {d['error_description']}")
    pending = [d for d in details if d["public_state"] == "Pending"]
    if pending:
        click.secho(f"\nStill pending: {len(pending)} (for external systems to pull)", bold=True)
    var = summary["var"]
    click.secho("\nOutputs:", bold=True)
    click.echo(f"  database      {var}/comms.db")
    click.echo(f"  emails (.eml) {var}/out/email/")
    click.echo(f"  SMS, push     {var}/out/sms/*.jsonl, {var}/out/push/*.jsonl")
    click.echo(f"  letters (PDF) {var}/out/letters/")
    click.echo(f"  stored docs   {var}/store/YYYY/MM/DD/HH/")
    command = _comms_command()
    click.secho("\nInspect it with the plain commands (they use the same database):", bold=True)
    for line in ("status", "queue list", "requests list --status error", "documents list"):
        click.echo(f"  {command} {line}")


def _comms_command() -> str:
    """How the person who ran the demo reaches ``comms``: the checkout's ``bin/comms`` from a
    checkout, ``comms`` when it is on PATH, else the interpreter's own script."""
    if Path("bin/comms").is_file():
        return "bin/comms"
    if shutil.which("comms"):
        return "comms"
    return str(Path(sys.executable).with_name("comms"))
