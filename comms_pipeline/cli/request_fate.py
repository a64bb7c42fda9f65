"""``comms requests``: why a request was or was not sent (its status, code and reason, its
queue entries and their history), without writing SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.queue.request_fate import UnknownStatus, list_requests, request_fate


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` (ago), or an ISO date/time (UTC)."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return (datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
                ).replace(tzinfo=None)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("expected 30m, 2h, 7d or an ISO date/time such as "
                                 "2026-12-01T09:00", param_hint="--since") from None
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@click.group()
def requests() -> None:
    """Communication requests (headers) and their fate: list them, show one."""


@requests.command("list")
@click.option("--status", help="error, not_sent, opted_out, cancelled, processed, "
                               "awaiting_processing, awaiting_event_resolution.")
@click.option("--code", help="Status code, e.g. UNKNOWN_CONTACT, OPTED_OUT.")
@click.option("--since", "since_text", metavar="WHEN",
              help="Made since: 30m, 2h, 7d ago, or an ISO date/time (UTC).")
@click.option("--contact", "contact_ref", help="Contact reference.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def requests_list(app: AppContext, status: str | None, code: str | None,
                  since_text: str | None, contact_ref: str | None, limit: int,
                  as_json: bool) -> None:
    """List requests, newest first, with their status, code and reason."""
    since = parse_since(since_text) if since_text else None
    try:
        with app.engine.connect() as conn:
            rows = list_requests(conn, status=status, code=code, since=since,
                                 contact_ref=contact_ref, limit=limit)
    except UnknownStatus as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("no requests match")
        return
    click.echo(f"{'ID':>7}  {'CREATED':<19}  {'CONTACT':<10} {'TEMPLATE / EVENT':<26} "
               f"{'STATUS':<26} {'ENTRIES':>7}  REASON")
    for r in rows:
        what = r["template_code"] or f"event {r['event']}"
        reason = " ".join(f"{r['status_code'] or ''} {r['status_reason'] or ''}".split())
        click.echo(f"{r['id']:>7}  {_when(r['created_at']):<19}  {r['contact_ref']:<10} "
                   f"{what:<26} {r['status']:<26} {r['details_created']:>7}  {reason}")


@requests.command("show")
@click.argument("request_id", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def requests_show(app: AppContext, request_id: int, as_json: bool) -> None:
    """Show request REQUEST_ID: its header, status, code and reason, its queue entries and
    their states, and the history of both."""
    with app.engine.connect() as conn:
        fate = request_fate(conn, request_id)
    if fate is None:
        raise click.ClickException(f"no request {request_id}")
    if as_json:
        click.echo(json.dumps(fate, default=str, indent=2))
        return
    h = fate["header"]
    click.secho(f"request {h['id']}", bold=True)
    for key in ("contact_ref", "template_code", "event", "event_number", "rule_code", "media",
                "priority", "send_after", "expires_at", "created_at", "requested_by",
                "idempotency_key"):
        if h.get(key) is not None:
            click.echo(f"  {key:<16} {h[key]}")
    click.echo(f"  {'status':<16} {h['status']}")
    if h["status_code"] or h["status_reason"]:
        click.echo(f"  {'code':<16} {h['status_code'] or '-'}")
        click.echo(f"  {'reason':<16} {h['status_reason'] or '-'}")
    click.secho(f"\nqueue entries ({len(fate['entries'])})", bold=True)
    for e in fate["entries"]:
        address = (e["address"] or "-").splitlines()[0]
        error = f"  {e['error_code']}: {e['error_description']}" if e["error_code"] else ""
        via = f"  via {e['gateway']}" if e.get("gateway") else ""
        click.echo(f"  #{e['id']:<6} {e['media']:<8} {e['public_state']:<22} {address}{error}"
                   f"{via}")
    click.secho("\nhistory", bold=True)
    for t in fate["history"]:
        what = "request" if t["kind"] == "header" else f"entry #{t['row_id']}"
        code = f" [{t['code']}]" if t["code"] else ""
        click.echo(f"  {_when(t['at'])}  {what:<12} {t['from_state'] or '(new)'} -> "
                   f"{t['to_state']}{code}  by {t['actor'] or '-'}")
