"""``comms audit list``: the administrative changes, oldest first, with who made them."""

from __future__ import annotations

import json

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.pipeline import audit as audit_log


@click.group("audit")
def audit() -> None:
    """The audit log: every administrative change, its actor, its time and what changed."""


@audit.command("list")
@click.option("--since", help="From this ISO time (UTC) or this long ago (30m, 2h, 7d).")
@click.option("--actor", help="An actor, or the start of one (cli:, api-key:3, link:).")
@click.option("--target", help="A target kind (template) or kind:id (template:BILL_ISSUED).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def audit_list(app: AppContext, since: str | None, actor: str | None, target: str | None,
               limit: int, as_json: bool) -> None:
    """The entries matching every filter given, oldest first."""
    from comms_pipeline.cli.requests import _ago

    with app.engine.connect() as conn:
        rows = audit_log.list_entries(conn, since=_ago(since), actor=actor, target=target,
                                      limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False, sort_keys=True))
        return
    if not rows:
        click.echo("no audit entries")
        return
    for r in rows:
        target_text = r["target_kind"] + (f":{r['target_id']}" if r["target_id"] else "")
        change = json.dumps(r["change"], ensure_ascii=False, sort_keys=True) \
            if r["change"] else ""
        click.echo(f"{r['id']:>6} {r['at']:%Y-%m-%d %H:%M:%S} {r['actor']:<28} "
                   f"{r['action']:<24} {target_text:<32} {change}")
