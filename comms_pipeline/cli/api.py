"""The Web API's commands: serve it, and manage who may call it.

``comms api serve`` runs the FastAPI app under uvicorn; ``comms external-systems`` manages the
external systems and their keys; ``comms api-keys`` the agents' and admins' keys. A key is
printed once, when it is made: only its hash is kept.
"""

from __future__ import annotations

import os

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline import admin_records as admin
from comms_pipeline.pipeline import apikeys, quotas


def _show_key(key: apikeys.NewKey, owner: str) -> None:
    click.echo(f"API key for {owner} (shown once; store it now):")
    click.echo(f"  {key.key}")
    click.echo(f"prefix {key.prefix} identifies it in `list` and in the logs")


@click.group("api")
def api() -> None:
    """The Web API (FastAPI + uvicorn)."""


@api.command("serve")
@click.option("--host", help="Interface to listen on (default: [web] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: [web] port).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes (more than one re-reads the configuration in each).")
@pass_app
def serve(app: AppContext, host: str | None, port: int | None, workers: int) -> None:
    """Serve the Web API until interrupted (OpenAPI at /openapi.json, docs at /docs)."""
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("the Web API needs the 'api' extra: "
                                   "pip install 'comms-pipeline[api]'") from None
    web = app.settings.web
    host, port = host or web.host, port or web.port
    click.echo(f"serving the Web API on http://{host}:{port} (docs: /docs)", err=True)
    if workers > 1:
        if app.config_path:
            os.environ["COMMS_CONFIG"] = app.config_path
        uvicorn.run("comms_pipeline.web.app:create_app_from_environment", factory=True,
                    host=host, port=port, workers=workers, access_log=False,
                    log_level="warning")
        return
    from comms_pipeline.web.app import create_app

    # uvicorn's access log would print query strings (dynamic-link tokens): the app logs
    # api.request events by route template instead.
    uvicorn.run(create_app(app.settings, app.engine), host=host, port=port, access_log=False,
                log_level="warning")


@click.group("external-systems")
def external_systems() -> None:
    """External systems: portals, apps, provisioning systems that process their entries."""


@external_systems.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--webhook-url", help="Push entries to this URL (else the system pulls them).")
@click.option("--webhook-secret", help="Secret that signs the webhooks.")
@click.option("--max-chars", type=click.IntRange(1), help="The system's own text limit.")
@pass_app
def systems_add(app: AppContext, code: str, name: str, webhook_url: str | None,
                webhook_secret: str | None, max_chars: int | None) -> None:
    """Add external system CODE and print its API key."""
    with app.engine.begin() as conn:
        if admin.find_external_system(conn, code) is not None:
            raise click.ClickException(f"external system {code!r} already exists "
                                       "(rotate-key gives it a new key)")
        admin.add_external_system(conn, code, name, max_chars=max_chars,
                                  webhook_url=webhook_url, webhook_secret=webhook_secret)
        key = apikeys.create_system_key(conn, code)
    click.echo(f"external system {code} added")
    _show_key(key, code)


@external_systems.command("list")
@pass_app
def systems_list(app: AppContext) -> None:
    """The external systems, their delivery and their keys' prefixes."""
    with app.engine.connect() as conn:
        systems = admin.external_systems(conn)
        keys = [k for k in apikeys.list_keys(conn) if k["system"] and not k["revoked_at"]]
    click.echo(f"{'CODE':<16} {'ENABLED':<8} {'DELIVERY':<9} {'KEY PREFIXES':<28} NAME")
    for s in systems:
        prefixes = ",".join(k["prefix"] for k in keys if k["system"] == s.code) or "-"
        delivery = "webhook" if s.webhook_url else "pull"
        state = "yes" if s.enabled else "no"
        click.echo(f"{s.code:<16} {state:<8} {delivery:<9} {prefixes:<28} {s.name}")
        if not s.enabled and s.disabled_reason:
            click.echo(f"{'':<16} disabled: {s.disabled_reason}")


def _limits_line(rate: int | None, daily: dict | None) -> str:
    parts = [f"{rate}/s" if rate is not None else "no rate limit"]
    parts += [f"{m} {n:,}/day" for m, n in sorted((daily or {}).items())]
    return ", ".join(parts) if rate is not None or daily else "unlimited"


def _usage_line(used: dict[str, int], daily: dict | None) -> str:
    if not used:
        return "nothing counted today"
    out = [f"{used.get(quotas.REQUESTS, 0)} request(s) this second"]
    for m in quotas.MEDIA:
        if m in used:
            limit = (daily or {}).get(m)
            out.append(f"{m} {used[m]:,}" + (f" of {limit:,}" if limit else ""))
    return ", ".join(out)


@external_systems.command("show")
@click.argument("code")
@pass_app
def systems_show(app: AppContext, code: str) -> None:
    """Show CODE: its delivery, limits, keys (live and test) and today's usage (UTC)."""
    with app.engine.connect() as conn:
        try:
            sid = apikeys.system_id(conn, code)
        except apikeys.ApiKeyError as exc:
            raise click.ClickException(str(exc)) from None
        found = quotas.system_overview(conn, sid)
    s = found["system"]
    click.echo(f"external system {s['code']}: {s['name']}")
    click.echo(f"  enabled      {'yes' if s['enabled'] else 'no'}"
               + (f" ({s['disabled_reason']})" if s["disabled_reason"] else ""))
    click.echo(f"  delivery     {'webhook ' + s['webhook_url'] if s['webhook_url'] else 'pull'}")
    click.echo(f"  limits       {_limits_line(s['rate_limit_per_second'], s['daily_limits'])}"
               "  (live keys together)")
    click.echo(f"  usage today  {_usage_line(found['usage'], s['daily_limits'])}")
    click.echo("keys:")
    if not found["keys"]:
        click.echo("  none active")
    for k in found["keys"]:
        click.echo(f"  {k['prefix']:<14} {k['kind']:<5} "
                   f"{_limits_line(k['rate_limit_per_second'], k['daily_limits'])}; "
                   f"{_usage_line(found['key_usage'][k['prefix']], k['daily_limits'])}")


def _apply_limits(conn, *, system_id: int | None = None, key_id: int | None = None,
                  rate: int | None, no_rate: bool, daily: tuple[str, ...]) -> dict:
    try:
        return quotas.set_limits(conn, system_id=system_id, key_id=key_id, rate=rate,
                                 clear_rate=no_rate, daily=quotas.parse_daily(daily))
    except quotas.LimitsError as exc:
        raise click.BadParameter(str(exc)) from None


_RATE_HELP = "Web API requests per second (live keys of the system together)."
_DAILY_HELP = ("A daily limit per media, MEDIA=N (e.g. email=250000, letter=20000), or "
               "MEDIA=off; repeatable. Counted per UTC day when a request is accepted.")


@external_systems.command("limits")
@click.argument("code")
@click.option("--rate", type=click.IntRange(1), help=_RATE_HELP)
@click.option("--no-rate", is_flag=True, help="Remove the rate limit.")
@click.option("--daily", multiple=True, metavar="MEDIA=N", help=_DAILY_HELP)
@pass_app
def systems_limits(app: AppContext, code: str, rate: int | None, no_rate: bool,
                   daily: tuple[str, ...]) -> None:
    """Set CODE's rate limit and daily limits (none given: show them). Unlimited by default;
    API processes apply a change within web.limits_refresh_seconds."""
    with app.engine.begin() as conn:
        try:
            sid = apikeys.system_id(conn, code)
        except apikeys.ApiKeyError as exc:
            raise click.ClickException(str(exc)) from None
        now = _apply_limits(conn, system_id=sid, rate=rate, no_rate=no_rate, daily=daily)
    click.echo(f"{code}: {_limits_line(now['rate_limit_per_second'], now['daily_limits'])}")


@external_systems.command("test-key")
@click.argument("code")
@pass_app
def systems_test_key(app: AppContext, code: str) -> None:
    """Make a test key for CODE: its communications reach only the simulator (see the
    README's "Test keys"), and count against no quota. The system's live keys stay."""
    try:
        with app.engine.begin() as conn:
            key = apikeys.create_system_key(conn, code, kind="test")
    except apikeys.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    _show_key(key, f"{code} (test: simulated sends only)")


@external_systems.command("rotate-key")
@click.argument("code")
@pass_app
def systems_rotate(app: AppContext, code: str) -> None:
    """Revoke CODE's keys and print a new one."""
    try:
        with app.engine.begin() as conn:
            key = apikeys.rotate_system_key(conn, code)
    except apikeys.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    _show_key(key, code)


@external_systems.command("disable")
@click.argument("code")
@click.option("--reason", default="disabled by an operator", show_default=True)
@pass_app
def systems_disable(app: AppContext, code: str, reason: str) -> None:
    """Stop webhooks to CODE and revoke its keys (its entries stay in the queue)."""
    try:
        with app.engine.begin() as conn:
            sid = apikeys.system_id(conn, code)
            admin.disable_external_system(conn, sid, reason)
            revoked = apikeys.revoke_system_keys(conn, sid, utcnow())
    except apikeys.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"external system {code} disabled; {revoked} key(s) revoked")


@external_systems.command("apply-status")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--system", "code", required=True,
              help="The external system whose file it is: only its entries can be changed.")
@pass_app
def systems_apply_status(app: AppContext, path: str, code: str) -> None:
    """Acknowledge entries from a third party's status file (CSV or JSON).

    A file acts only on the entries of the system named with --system, as an API key does.

    \b
    CSV header: entry_id,status,error_code,error_description
    status: Sent (Completed), Error (Rejected), Removed (Completed and Removed)
    """
    from comms_pipeline.queue.actions import apply_status_file

    result = apply_status_file(app.engine, path, external_system=code)
    click.echo(f"{result.applied} entr{'y' if result.applied == 1 else 'ies'} updated, "
               f"{len(result.refused)} refused")
    for line, entry, reason in result.refused:
        click.echo(f"  line {line} (entry {entry if entry is not None else '?'}): {reason}")
    if result.refused:
        raise click.exceptions.Exit(1)


@click.group("api-keys")
def api_keys() -> None:
    """API keys of agents and admins."""


@api_keys.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["agent", "admin"]), required=True)
@click.option("--test", is_flag=True,
              help="A test key: the communications it requests reach only the simulator.")
@pass_app
def keys_add(app: AppContext, name: str, role: str, test: bool) -> None:
    """Make a key for NAME (a person or a tool) with ROLE."""
    kind = "test" if test else "live"
    with app.engine.begin() as conn:
        key = apikeys.create_key(conn, role, name, kind=kind)
    _show_key(key, f"{name} ({role}{', test' if test else ''})")


@api_keys.command("limits")
@click.argument("prefix")
@click.option("--rate", type=click.IntRange(1), help="Web API requests per second.")
@click.option("--no-rate", is_flag=True, help="Remove the rate limit.")
@click.option("--daily", multiple=True, metavar="MEDIA=N", help=_DAILY_HELP)
@pass_app
def keys_limits(app: AppContext, prefix: str, rate: int | None, no_rate: bool,
                daily: tuple[str, ...]) -> None:
    """Set the key's own rate and daily limits (besides its system's)."""
    with app.engine.begin() as conn:
        kid = quotas.key_id(conn, prefix)
        if kid is None:
            raise click.ClickException(f"no active key with prefix {prefix!r}")
        now = _apply_limits(conn, key_id=kid, rate=rate, no_rate=no_rate, daily=daily)
    click.echo(f"key {prefix}: {_limits_line(now['rate_limit_per_second'], now['daily_limits'])}")


@api_keys.command("list")
@pass_app
def keys_list(app: AppContext) -> None:
    """Every key: prefix, role, owner, last use (never the key itself)."""
    with app.engine.connect() as conn:
        keys = apikeys.list_keys(conn)
    click.echo(f"{'PREFIX':<14} {'ROLE':<9} {'KIND':<5} {'STATUS':<8} {'LAST USED':<20} NAME")
    for k in keys:
        used = f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never"
        status = "revoked" if k["revoked_at"] else "active"
        click.echo(f"{k['prefix']:<14} {k['role']:<9} {k['kind']:<5} {status:<8} {used:<20} "
                   f"{k['name']}")


@api_keys.command("revoke")
@click.argument("prefix")
@pass_app
def keys_revoke(app: AppContext, prefix: str) -> None:
    """Revoke the key with PREFIX."""
    with app.engine.begin() as conn:
        if not apikeys.revoke_key(conn, prefix):
            raise click.ClickException(f"no active key with prefix {prefix!r}")
    click.echo(f"key {prefix} revoked")


def _add_callbacks() -> None:
    from comms_pipeline.cli.callbacks import callbacks

    external_systems.add_command(callbacks)


_add_callbacks()
