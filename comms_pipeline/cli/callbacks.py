"""``comms external-systems callbacks``: client systems' status callback endpoints."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import apikeys
from comms_pipeline.pipeline import callback_endpoints as endpoints
from comms_pipeline.queue.callbacks import EVENTS

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


@click.group("callbacks")
def callbacks() -> None:
    """Status callbacks: signed events about a system's communications, POSTed to its URL."""


def _system(conn: Connection, code: str) -> int:
    try:
        return apikeys.system_id(conn, code)
    except apikeys.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None


@callbacks.command("add")
@click.argument("code")
@click.argument("url")
@click.option("--events", default="all", show_default=True,
              help=f"Comma-separated, of: {', '.join(EVENTS)} (or all).")
@click.option("--secret", help="Signing secret (whsec_<base64>); default: a new one, printed.")
@pass_app
def callbacks_add(app: AppContext, code: str, url: str, events: str,
                  secret: str | None) -> None:
    """Send external system CODE's status events to URL."""
    try:
        with app.engine.begin() as conn:
            endpoint_id, secret = endpoints.add_endpoint(conn, _system(conn, code), url,
                                                         events, secret=secret)
    except CommsError as exc:  # an unknown event, a URL that is not http(s)
        raise click.ClickException(str(exc)) from None
    click.echo(f"callback endpoint {endpoint_id} added for {code}")
    click.echo("signing secret (shown once; give it to the system to verify signatures):")
    click.echo(f"  {secret}")


@callbacks.command("list")
@click.option("--system", "code", help="Only this external system's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_app
def callbacks_list(app: AppContext, code: str | None, as_json: bool) -> None:
    """The callback endpoints, their events, and whether they are enabled."""
    with app.engine.connect() as conn:
        found = endpoints.list_endpoints(conn, _system(conn, code) if code else None)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], indent=2))
        return
    click.echo(f"{'ID':<6} {'SYSTEM':<16} {'ENABLED':<8} {'FAILS':<6} {'PENDING':<8} URL")
    for e in found:
        click.echo(f"{e.id:<6} {e.system:<16} {'yes' if e.enabled else 'no':<8} "
                   f"{e.consecutive_failures:<6} {e.pending:<8} {e.url}")
        click.echo(f"{'':<6} events: {','.join(e.events)}")
        if not e.enabled and e.disabled_reason:
            click.echo(f"{'':<6} disabled: {e.disabled_reason}")


@callbacks.command("remove")
@click.argument("endpoint_id", type=int)
@pass_app
def callbacks_remove(app: AppContext, endpoint_id: int) -> None:
    """Remove endpoint ENDPOINT_ID (events not yet sent to it are dropped)."""
    with app.engine.begin() as conn:
        if not endpoints.remove_endpoint(conn, endpoint_id):
            raise click.ClickException(f"no callback endpoint {endpoint_id}: see "
                                       "`comms external-systems callbacks list`")
    click.echo(f"callback endpoint {endpoint_id} removed")


@callbacks.command("enable")
@click.argument("endpoint_id", type=int)
@pass_app
def callbacks_enable(app: AppContext, endpoint_id: int) -> None:
    """Enable endpoint ENDPOINT_ID again; its waiting events are sent from where they stopped."""
    with app.engine.begin() as conn:
        if not endpoints.enable_endpoint(conn, endpoint_id):
            raise click.ClickException(f"no callback endpoint {endpoint_id}: see "
                                       "`comms external-systems callbacks list`")
    click.echo(f"callback endpoint {endpoint_id} enabled")
