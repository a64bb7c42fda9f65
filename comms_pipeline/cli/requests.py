"""Requests and the queue: trigger a communication, list, show, retry or cancel entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import and_

from comms_pipeline.cli.common import AppContext, parse_pairs, pass_app
from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.request_values import InvalidValue, check_fields, printable
from comms_pipeline.core.states import (
    DetailState,
    ErrorCode,
    PublicState,
    public_state,
)
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline.request_check import RequestRefused, missing_warnings, refuse_unknown
from comms_pipeline.pipeline.triggers import SEND_TO
from comms_pipeline.pipeline.triggers import trigger as trigger_request
from comms_pipeline.queue.claims import transition_rows
from comms_pipeline.queue.listing import (
    entry_filter,
    entry_history,
    list_entries,
    matching_ids,
    render,
    retryable,
    show_entry,
)
from comms_pipeline.queue.work_queues import pending_details_queue

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadValue(click.ClickException):
    """A value no request may hold: one line (``Error: params.x: ...``), exit status 2."""

    exit_code = 2


def _when(value: str | None) -> datetime | None:
    """An ISO time (UTC) or a delay from now such as ``30m``, ``2h``, ``7d``."""
    if value is None:
        return None
    if value[-1:] in _DURATION and value[:-1].isdigit():
        return utcnow() + timedelta(seconds=int(value[:-1]) * _DURATION[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO time nor a delay like 2h") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@click.command()
@click.option("--contact", "contact_ref", required=True, help="The contact's reference.")
@click.option("--template", "template_code", help="Template (communication) code.")
@click.option("--event", help="Event name (for event rules).")
@click.option("--event-number", help="The workflow event this request belongs to.")
@click.option("--await-resolution", is_flag=True,
              help="A workflow event created 'on create': wait in Awaiting Event Resolution "
                   "until `comms rules resolve EVENT_NUMBER`.")
@click.option("--entity", "entities", multiple=True, metavar="NAME=JSON",
              help='Entity data, e.g. subscription=\'{"number": "S-1"}\'. Repeatable.')
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Unrestricted parameter value. Repeatable.")
@click.option("--media", type=click.Choice(["email", "sms", "push", "letter", "external"]),
              help="Override the template's delivery method.")
@click.option("--send-to", type=click.Choice(SEND_TO), default="primary", show_default=True)
@click.option("--address-type", help="With --send-to type: home, work, mobile, ...")
@click.option("--language", help="Override the contact's preferred language.")
@click.option("--send-after", help="Do not process before: ISO time (UTC) or delay (30m, 2h).")
@click.option("--expires", help="Expiry: ISO time (UTC) or delay from now (e.g. 7d).")
@click.option("--priority", type=click.IntRange(1, 3), default=2, show_default=True,
              help="1 high, 2 medium, 3 low.")
@click.option("--idempotency-key", help="Repeating a trigger with the same key creates nothing.")
@click.option("--override-consent", is_flag=True,
              help="Important message: send whatever the contact's marketing opt-outs.")
@click.option("--no-check", is_flag=True,
              help="Do not check that the template and contact exist nor which tags would be "
                   "missing (bulk loads that know better).")
@pass_app
def trigger(app: AppContext, contact_ref: str, template_code: str | None, event: str | None,
            event_number: str | None, await_resolution: bool, entities: tuple[str, ...],
            params: tuple[str, ...], media: str | None,
            send_to: str, address_type: str | None, language: str | None,
            send_after: str | None, expires: str | None, priority: int,
            idempotency_key: str | None, override_consent: bool, no_check: bool) -> None:
    """Record a communication request (a request header) for the monitor job.

    Unless --no-check, an unknown or inactive template or an unknown contact is refused (exit
    1, as the Web API answers 422) and the tags that would be missing for the data given are
    told on stderr (the request is still recorded: its details would end MISSING_DATA).
    """
    given = parse_pairs(entities, "--entity", as_json=True)
    values = parse_pairs(params, "--param")
    try:  # values first: a request that cannot be stored is refused before any advice
        check_fields(contact_ref=contact_ref, template_code=template_code, event=event,
                     entities=given, params=values)
    except InvalidValue as exc:
        raise BadValue(printable(str(exc))) from None
    if not no_check:
        with app.engine.connect() as conn:
            try:
                refuse_unknown(conn, contact_ref=contact_ref, template_code=template_code)
            except RequestRefused as exc:
                raise click.ClickException(str(exc)) from None
            for warning in missing_warnings(
                    conn, contact_ref=contact_ref, template_code=template_code, event=event,
                    entities=given, params=values, language=language, settings=app.settings):
                click.echo(f"warning: {warning}", err=True)
    try:
        header_id = trigger_request(
            app.engine, contact_ref=contact_ref, template_code=template_code, event=event,
            event_number=event_number, await_resolution=await_resolution,
            entities=given, params=values, media=media, send_to=send_to,
            address_type=address_type, language=language, send_after=_when(send_after),
            expires_at=_when(expires), priority=priority, idempotency_key=idempotency_key,
            override_consent=override_consent)
    except InvalidValue as exc:
        raise BadValue(printable(str(exc))) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"request header {header_id}")


@click.group()
def queue() -> None:
    """The communication queue: list, show, retry, cancel entries."""


@queue.command("list")
@click.option("--state", type=click.Choice([p.value for p in PublicState]),
              help="Life-cycle state.")
@click.option("--media", help="email, sms, push, letter, external")
@click.option("--contact", "contact_ref", help="Contact reference.")
@click.option("--code", help="Error code, e.g. INVALID_ADDRESS.")
@click.option("--since", help="Created since: ISO time (UTC) or a delay back (30m, 2h, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="A header row and one line per entry, JSON, or CSV.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@pass_app
def queue_list(app: AppContext, state: str | None, media: str | None, contact_ref: str | None,
               code: str | None, since: str | None, limit: int, fmt: str,
               as_json: bool) -> None:
    """List queue entries, newest first."""
    where = entry_filter(state=state, media=media, contact_ref=contact_ref, code=code,
                         since=_ago(since))
    with app.engine.connect() as conn:
        rows = list_entries(conn, where, limit)
    fmt = "json" if as_json else fmt
    if fmt == "json":  # the columns scripts used before, and the names
        for r in rows:
            r["public_state"] = r["state"]
            r["contact_ref"] = r["contact"]
    if not rows and fmt == "table":
        click.echo("no queue entries match")
        return
    click.echo(render(rows, fmt))


@queue.command("show")
@click.argument("entry_id", type=int)
@pass_app
def queue_show(app: AppContext, entry_id: int) -> None:
    """Show one entry, its request and its state history."""
    with app.engine.connect() as conn:
        row = show_entry(conn, entry_id)
        if row is None:
            raise click.ClickException(f"no queue entry {entry_id}")
        history = entry_history(conn, entry_id)
    for key, value in row.items():
        if key in ("body",):
            value = f"<{len(value or '')} characters>"
        click.echo(f"{key:>20}: {'-' if value is None else value}")
    click.echo(f"{'public state':>20}: {public_state(row['state']).value}")
    if row.get("purged_at") is not None:  # the subject and body are gone on purpose
        from comms_pipeline.core.retention import removal_notice

        click.echo(f"{'content':>20}: {removal_notice(row['purged_at'], row['purged_by'])}")
    click.echo("history:")
    for h in history:
        click.echo(f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['from_state'] or '(new)'} -> "
                   f"{h['to_state']}  by {h['actor']}{'  ' + h['code'] if h['code'] else ''}")


def _ago(value: str | None) -> datetime | None:
    """``--since``: an ISO time (UTC) or a delay back from now (``2h`` = two hours ago)."""
    if value is None:
        return None
    if value[-1:] in _DURATION and value[:-1].isdigit():
        return utcnow() - timedelta(seconds=int(value[:-1]) * _DURATION[value[-1]])
    return _when(value)


def _bulk_filter(ids: tuple[int, ...], code: str | None, media: str | None,
                 since: str | None, contact_ref: str | None, state: str | None = None):
    if not (ids or code or media or since or contact_ref or state):
        raise click.UsageError("name the entries: IDs, or filters (--state --code --media "
                               "--since --contact)")
    return entry_filter(ids=ids, state=state, code=code, media=media, since=_ago(since),
                        contact_ref=contact_ref)


_BULK = [click.option("--code", help="Only entries with this error code."),
         click.option("--media", help="Only entries of this media."),
         click.option("--since", help="Only entries created since (ISO time or 2h, 7d)."),
         click.option("--contact", "contact_ref", help="Only this contact's entries."),
         click.option("--dry-run", is_flag=True, help="Count the entries; change nothing.")]


def _bulk_options(command):
    for option in reversed(_BULK):
        command = option(command)
    return command


@queue.command("retry")
@click.argument("entry_ids", type=int, nargs=-1)
@click.option("--state", type=click.Choice([PublicState.REJECTED.value,
                                            PublicState.EXPIRED.value]),
              help="Only Rejected or only Expired entries (default: both).")
@_bulk_options
@click.option("--force", is_flag=True,
              help="Retry permanent rejections too (invalid address, missing data, template "
                   "error, suppressed, opted out).")
@pass_app
def queue_retry(app: AppContext, entry_ids: tuple[int, ...], state: str | None,
                code: str | None, media: str | None, since: str | None,
                contact_ref: str | None, dry_run: bool, force: bool) -> None:
    """Send Rejected or Expired entries again (they go back to the sending stage): by IDs
    or by filter, e.g. `queue retry --code 88 --since 2h --dry-run`.

    Each goes to the contact's address as it is now (a corrected address is used). Entries
    rejected for good are refused with the reason unless --force; exit code 1 when any
    entry was not retried.
    """
    from comms_pipeline.runtime.retry_entries import retry_entries

    by_filter = bool(code or media or since or contact_ref or state)
    where = retryable(_bulk_filter(entry_ids, code, media, since, contact_ref, state))
    with app.engine.begin() as conn:
        # Entries named by id go as they are: each one not retried is told why.
        ids = matching_ids(conn, where) if by_filter else list(entry_ids)
        if dry_run:
            entries = f"{len(ids)} entr{'y' if len(ids) == 1 else 'ies'}"
            click.echo(f"would queue {entries} again (dry run)")
            return
        result = retry_entries(conn, ids, force=force, actor="cli:retry",
                               settings=app.settings)
    n = len(result.retried)
    click.echo(f"{n} entr{'y' if n == 1 else 'ies'} queued again")
    for entry_id, (old, new) in sorted(result.readdressed.items()):
        click.echo(f"  {entry_id}: to the contact's address now, {new} (was {old or 'none'})")
    for entry_id, why in sorted(result.refused.items()):
        click.echo(f"not retried {entry_id}: {why}")
    skipped = set(entry_ids) - set(ids)
    if skipped:
        click.echo(f"not Rejected or Expired (left alone): {', '.join(map(str, sorted(skipped)))}")
    if result.refused:
        raise click.exceptions.Exit(1)


@queue.command("cancel")
@click.argument("entry_ids", type=int, nargs=-1)
@_bulk_options
@pass_app
def queue_cancel(app: AppContext, entry_ids: tuple[int, ...], code: str | None,
                 media: str | None, since: str | None, contact_ref: str | None,
                 dry_run: bool) -> None:
    """Cancel Pending entries (they become Rejected with code CANCELLED): by IDs or by
    filter, e.g. `queue cancel --media sms --contact C-1001 --dry-run`."""
    q = pending_details_queue()
    where = and_(_bulk_filter(entry_ids, code, media, since, contact_ref), q.pending())
    with app.engine.begin() as conn:
        if dry_run:
            ids = matching_ids(conn, where)
        else:
            ids = transition_rows(conn, q, where, DetailState.REJECTED, "cli:cancel",
                                  ErrorCode.CANCELLED,
                                  {"error_code": ErrorCode.CANCELLED,
                                   "error_description": "cancelled by an operator",
                                   "completed_at": utcnow()})
            if ids:
                audit.record(conn, action="queue.cancel", target_kind="queue_entry",
                             target_id=ids[0] if len(ids) == 1 else None,
                             change={"cancelled": sorted(ids)})
    click.echo(f"would cancel {len(ids)} (dry run)" if dry_run else f"{len(ids)} cancelled")
    skipped = set(entry_ids) - set(ids)
    if skipped:
        click.echo(f"not Pending or claimed right now: {', '.join(map(str, sorted(skipped)))}")
