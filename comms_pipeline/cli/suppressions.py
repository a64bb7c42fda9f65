"""``comms suppressions``: the addresses no communication goes to — list, add, remove (with
who and why, the row kept), import and export as CSV."""

from __future__ import annotations

import getpass
import sys
from datetime import datetime, timedelta

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline import suppressions as sup

MEDIA = click.Choice([str(m) for m in sup.SUPPRESSIBLE])


def _actor(by: str | None) -> str:
    return f"cli:{by or getpass.getuser()}"


def _when(value: str | None) -> datetime | None:
    """``--expires``: a number of days from now, or an ISO 8601 UTC time."""
    if not value:
        return None
    if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
        return utcnow() + timedelta(days=float(value[:-1]))
    try:
        return datetime.fromisoformat(value.replace("Z", "")).replace(tzinfo=None)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number of days (30d) or an ISO 8601 "
                                 f"time (2027-01-31T00:00)", param_hint="--expires") from None


def _line(s: sup.Suppression, now: datetime) -> str:
    state = ("removed" if s.removed_at else "expired" if not s.active(now) else "active")
    until = f"{s.expires_at:%Y-%m-%d}" if s.expires_at else "-"
    return (f"{s.id:<6} {s.media:<5} {s.address[:40]:<40} {s.reason:<22} {s.scope:<9} "
            f"{s.created_at:%Y-%m-%d} {until:<10} {state:<7} {s.created_by}")


@click.group()
def suppressions() -> None:
    """The suppression list: addresses that bounced, complained or are dead (the Comms
    Monitor rejects them SUPPRESSED)."""


@suppressions.command("list")
@click.option("--media", type=MEDIA)
@click.option("--address", help="One address (needs --media).")
@click.option("--all", "include_inactive", is_flag=True, help="Expired and removed ones too.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@pass_app
def list_cmd(app: AppContext, media: str | None, address: str | None,
             include_inactive: bool, limit: int) -> None:
    """List suppressions, newest first."""
    now = utcnow()
    with app.engine.connect() as conn:
        rows = sup.list_suppressions(conn, now=now, address=address, media=media,
                                     include_inactive=include_inactive, limit=limit,
                                     region=app.settings.monitor.default_country)
    if not rows:
        click.echo("no suppressions match")
        return
    click.echo(f"{'ID':<6} {'MEDIA':<5} {'ADDRESS':<40} {'REASON':<22} {'SCOPE':<9} "
               f"{'SINCE':<10} {'UNTIL':<10} {'STATE':<7} BY")
    for s in rows:
        click.echo(_line(s, now))
        if s.removed_at:
            click.echo(f"       removed {s.removed_at:%Y-%m-%d %H:%M} by {s.removed_by}: "
                       f"{s.removal_reason}")


@suppressions.command("add")
@click.argument("address")
@click.option("--media", type=MEDIA, required=True)
@click.option("--reason", type=click.Choice(list(sup.REASONS)), default="manual",
              show_default=True)
@click.option("--scope", type=click.Choice(list(sup.SCOPES)),
              help="all, or marketing only (default: marketing for complaints, else all).")
@click.option("--expires", help="When it stops applying: 30d, or an ISO 8601 UTC time.")
@click.option("--note", help="Why (shown on every entry it rejects).")
@click.option("--by", help="Who asks (recorded; default: the login user).")
@pass_app
def add_cmd(app: AppContext, address: str, media: str, reason: str, scope: str | None,
            expires: str | None, note: str | None, by: str | None) -> None:
    """Suppress ADDRESS for a media."""
    with app.engine.begin() as conn:
        s, new = sup.add(conn, address=address, media=media, reason=reason, scope=scope,
                         source_detail_id=None, expires_at=_when(expires), actor=_actor(by),
                         description=note, created_at=None,
                         region=app.settings.monitor.default_country)
    click.echo(f"{'suppressed' if new else 'already suppressed'}: {s.address} ({s.media}, "
               f"{s.reason}, scope {s.scope}, id {s.id})")


@suppressions.command("remove")
@click.argument("address")
@click.option("--media", type=MEDIA, required=True)
@click.option("--why", required=True, help="Why it may be written to again (recorded).")
@click.option("--by", help="Who asks (recorded; default: the login user).")
@pass_app
def remove_cmd(app: AppContext, address: str, media: str, why: str, by: str | None) -> None:
    """Take ADDRESS off the list (e.g. an operator corrected a hard-bounced address); the
    suppression is kept with who removed it and why."""
    with app.engine.begin() as conn:
        removed = sup.remove(conn, address=address, media=media, actor=_actor(by), why=why,
                             region=app.settings.monitor.default_country)
    click.echo(f"removed {len(removed)} suppression(s) of {removed[0].address} ({media})")


@suppressions.command("export")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True), default="-")
@click.option("--all", "include_inactive", is_flag=True,
              help="Expired and removed ones too (with who removed them and why).")
@pass_app
def export_cmd(app: AppContext, path: str, include_inactive: bool) -> None:
    """Write the list as CSV to PATH (default: standard output)."""
    from comms_pipeline.pipeline.suppression_files import write_csv

    with app.engine.connect() as conn:
        rows = sup.list_suppressions(conn, now=utcnow(), include_inactive=include_inactive,
                                     limit=None)
    rows.reverse()  # oldest first: a file reads as the list grew
    if path == "-":
        write_csv(sys.stdout, rows, with_removal=include_inactive)
        return
    with open(path, "w", encoding="utf-8", newline="") as out:
        n = write_csv(out, rows, with_removal=include_inactive)
    click.echo(f"{n} suppression(s) written to {path}", err=True)


@suppressions.command("import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--by", help="Who imports (recorded where a row names no creator).")
@pass_app
def import_cmd(app: AppContext, path: str, by: str | None) -> None:
    """Add the suppressions of a CSV file (columns as `export` writes them; address and
    media required). One bad row imports nothing; importing twice adds nothing."""
    from comms_pipeline.pipeline.suppression_files import import_csv

    region = app.settings.monitor.default_country
    with (click.open_file(path, encoding="utf-8-sig") as source,
          app.engine.begin() as conn):
        report = import_csv(conn, source, actor=_actor(by), region=region)
    click.echo(f"imported {report.added}, already suppressed {report.already}, "
               f"skipped (removed) {report.skipped_removed}")
