"""``comms notifications``, ``comms rules`` and ``comms communications``.

Notification types and runs, event rules (and the release of events awaiting resolution),
and the communications log of agents.
"""

from __future__ import annotations

import json
from typing import Any

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.notifications import log as comm_log
from comms_pipeline.notifications import types as defs
from comms_pipeline.pipeline import notification_listing as listing
from comms_pipeline.pipeline.tracking import run_report


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> None:
    cells = [tuple("" if v is None else str(v) for v in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def report_chart(report: dict[str, int], width: int = 40) -> list[str]:
    """A run's tracking report as a bar chart for the terminal: each count beside a bar of
    its share of the run's communications."""
    total = report.get("communications", 0)
    lines = []
    for label in ("communications", "sent", "opened", "clicked"):
        count = report.get(label, 0)
        share = min(count / total, 1.0) if total else 0.0
        lines.append(f"  {label:<15}{count:>10,}  {'#' * round(share * width):<{width}}"
                     f"  {share:>6.1%}")
    return lines


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


# -- notifications ------------------------------------------------------------------------------

@click.group()
def notifications() -> None:
    """Notification types and runs (batch communications over a population)."""


@notifications.command("run")
@click.argument("type_code", metavar="TYPE")
@click.option("--dry-run", is_flag=True, help="Count who would be notified; write nothing.")
@click.option("--batch-size", type=click.IntRange(1, 100_000),
              help="Recipients per transaction (default: notifications.batch_size).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr.")
@click.option("--run-key", metavar="KEY",
              help="The period this run covers (default: the type's current period: the day, "
                   "or the month/week/hour its cron implies).")
@pass_app
def notifications_run(app: AppContext, type_code: str, dry_run: bool, batch_size: int | None,
                      progress: bool, run_key: str | None) -> None:
    """Run notification type TYPE for one period (resumes its unfinished run, if any).

    A period is notified once: when its run already finished, nothing is sent and the exit
    code is 1. A second `run` of the same type started meanwhile waits for the first.
    """
    from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications

    try:
        summary = run_notifications(app.settings, app.engine, type_code, dry_run=dry_run,
                                    progress=progress, batch_size=batch_size, run_key=run_key)
    except RunAlreadyDoneError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    what = "dry run" if dry_run else f"run {summary['run_id']}"
    if dry_run and summary.get("resumes_run"):
        what += f" (from where run {summary['resumes_run']} stopped)"
    click.echo(f"{type_code} {what}: created {summary['created']}, skipped by consent "
               f"{summary['skipped_consent']}, skipped by condition "
               f"{summary['skipped_condition']}, errors {summary['errors']}"
               + (f" (resumed {summary['resumed']}x)" if summary.get("resumed") else ""))
    if summary.get("run_key"):
        click.echo(f"  run key: {summary['run_key']}")
    for code, n in sorted((summary.get("skip_reasons") or {}).items()):
        click.echo(f"  {code}: {n}")


@notifications.command("list")
@pass_app
def notifications_list(app: AppContext) -> None:
    """The notification types."""
    with app.engine.connect() as conn:
        rows = listing.notification_types(conn)
    if not rows:
        click.echo("no notification types (try: comms notifications load-builtin)")
        return
    _table([tuple(r) for r in rows],
           ("TYPE", "CLASSIFICATION", "ENTITY", "TEMPLATE", "CRON", "ACTIVE", "LAST RUN"))


@notifications.command("runs")
@click.argument("type_code", metavar="[TYPE]", required=False)
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@pass_app
def notifications_runs(app: AppContext, type_code: str | None, limit: int) -> None:
    """Recent notification runs (of TYPE)."""
    with app.engine.connect() as conn:
        rows = listing.recent_runs(conn, type_code, limit)
    _table([tuple(r) for r in rows], ("RUN", "TYPE", "RUN KEY", "STATUS", "CREATED",
                                      "SKIP CONSENT",
                                      "SKIP CONDITION", "ERRORS", "STARTED", "FINISHED"))


@notifications.command("show-run")
@click.argument("run_id", type=int)
@click.option("--skipped", "show_skipped", type=click.IntRange(0), default=10,
              show_default=True, help="How many skipped recipients to list.")
@pass_app
def notifications_show_run(app: AppContext, run_id: int, show_skipped: int) -> None:
    """One run: its counters, summary and the first skipped recipients with their reasons."""
    with app.engine.connect() as conn:
        run = listing.run_with_type(conn, run_id)
        if run is None:
            raise click.ClickException(f"no notification run {run_id}")
        skipped = listing.skipped_recipients(conn, run_id, show_skipped)
        report = run_report(conn, run_id)
    click.echo(f"run {run.id} of {run.code}: {run.status}")
    for name in ("run_key", "created", "skipped_consent", "skipped_condition", "errors",
                 "resume_after",
                 "started_at", "finished_at"):
        click.echo(f"  {name:<18} {getattr(run, name)}")
    click.echo(f"  summary            {json.dumps(run.summary, sort_keys=True)}")
    click.echo("tracking (share of the run's communications):")
    for line in report_chart(report):
        click.echo(line)
    if skipped:
        click.echo("skipped:")
        _table([(s.contact_ref, s.recipient_key, s.reason_code, s.reason) for s in skipped],
               ("CONTACT", "KEY", "CODE", "REASON"))


@notifications.command("load-builtin")
@pass_app
def notifications_load_builtin(app: AppContext) -> None:
    """Load the built-in notification types and event rules (the seeds' examples)."""
    loaded = defs.load_path(defs.BUILTIN_DIR)
    with app.engine.begin() as conn:
        _warn(defs.save_definitions(conn, loaded))
    for kind, codes in loaded.codes().items():
        if codes:
            click.echo(f"{kind}: {', '.join(codes)}")


# -- rules --------------------------------------------------------------------------------------

@click.group()
def rules() -> None:
    """Event rules: which communications an event creates."""


@rules.command("list")
@pass_app
def rules_list(app: AppContext) -> None:
    """The event rules."""
    with app.engine.connect() as conn:
        rows = listing.event_rules(conn)
    _table([tuple(r) for r in rows], ("RULE", "ENTITY", "EVENT", "EMAIL TEMPLATE",
                                      "SMS TEMPLATE", "SEND TO", "SEGMENT", "ACTIVE"))


@rules.command("load")
@click.argument("path", type=click.Path(exists=True))
@pass_app
def rules_load(app: AppContext, path: str) -> None:
    """Load event rules, notification types and segments from a TOML file or directory."""
    loaded = defs.load_path(path)
    with app.engine.begin() as conn:
        _warn(defs.save_definitions(conn, loaded))
    for kind, codes in loaded.codes().items():
        if codes:
            click.echo(f"{kind}: {', '.join(codes)}")


@rules.command("resolve")
@click.argument("event_number")
@pass_app
def rules_resolve(app: AppContext, event_number: str) -> None:
    """Release the requests awaiting resolution of workflow event EVENT_NUMBER."""
    from comms_pipeline.notifications.event_rules import resolve_event

    with app.engine.begin() as conn:
        ids = resolve_event(conn, event_number)
    click.echo(f"{len(ids)} request(s) of event {event_number} now awaiting processing")


# -- communications -----------------------------------------------------------------------------

@click.group()
def communications() -> None:
    """The communications log: interactions logged by agents, and the pipeline's sends."""


def _content_options(f: Any) -> Any:
    for option in (
        click.option("--draft", is_flag=True, help="Save as Draft (complete it later)."),
        click.option("--by", "created_by", help="Who logs it (agent name)."),
        click.option("--content"),
        click.option("--subject"),
    ):
        f = option(f)
    return f


@communications.command("log")
@click.option("--contact", "contact_ref", required=True, help="Contact reference.")
@click.option("--media", required=True, type=click.Choice(comm_log.MEDIA))
@click.option("--direction", required=True, type=click.Choice(comm_log.DIRECTIONS))
@click.option("--category", required=True, help="e.g. inquiry, complaint, support.")
@_content_options
@pass_app
def communications_log(app: AppContext, contact_ref: str, media: str, direction: str,
                       category: str, subject: str | None, content: str | None,
                       created_by: str | None, draft: bool) -> None:
    """Log an interaction with a contact."""
    with app.engine.begin() as conn:
        new_id = comm_log.log_interaction(
            conn, contact_ref=contact_ref, media=media, direction=direction, category=category,
            subject=subject, content=content, draft=draft, created_by=created_by)
    click.echo(f"communication {new_id} logged ({'draft' if draft else 'completed'})")


@communications.command("follow-up")
@click.argument("comm_id", metavar="ID", type=int)
@click.option("--media", required=True, type=click.Choice(comm_log.MEDIA))
@click.option("--direction", required=True, type=click.Choice(comm_log.DIRECTIONS))
@click.option("--category", help="Default: the earlier communication's.")
@_content_options
@pass_app
def communications_follow_up(app: AppContext, comm_id: int, media: str, direction: str,
                             category: str | None, subject: str | None, content: str | None,
                             created_by: str | None, draft: bool) -> None:
    """Log a follow-up of communication ID (same contact, referring to it)."""
    with app.engine.begin() as conn:
        new_id = comm_log.follow_up(conn, comm_id, media=media, direction=direction,
                                    category=category, subject=subject, content=content,
                                    draft=draft, created_by=created_by)
    click.echo(f"communication {new_id} logged as a follow-up of {comm_id}")


@communications.command("complete")
@click.argument("comm_id", metavar="ID", type=int)
@click.option("--content", help="Replace the draft's content.")
@pass_app
def communications_complete(app: AppContext, comm_id: int, content: str | None) -> None:
    """Complete draft communication ID."""
    with app.engine.begin() as conn:
        comm_log.complete(conn, comm_id, content=content)
    click.echo(f"communication {comm_id} completed")


@communications.command("list")
@click.option("--contact", "contact_ref", required=True, help="Contact reference.")
@click.option("--status", type=click.Choice([comm_log.DRAFT, comm_log.COMPLETED]))
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@pass_app
def communications_list(app: AppContext, contact_ref: str, status: str | None,
                        limit: int) -> None:
    """A contact's communications, newest first (logged and sent)."""
    with app.engine.begin() as conn:
        entries = comm_log.list_for_contact(conn, contact_ref, limit=limit, status=status)
    _table([(e.id, f"{e.created_at:%Y-%m-%d %H:%M}", e.media, e.direction, e.category,
             e.status, e.follow_up_of_id, (e.subject or "")[:50], e.created_by)
            for e in entries],
           ("ID", "AT", "MEDIA", "DIRECTION", "CATEGORY", "STATUS", "FOLLOWS", "SUBJECT", "BY"))


@communications.command("show")
@click.argument("comm_id", metavar="ID", type=int)
@pass_app
def communications_show(app: AppContext, comm_id: int) -> None:
    """One communication, the ones it follows up and its follow-ups."""
    with app.engine.connect() as conn:
        entry = comm_log.get(conn, comm_id)
        earlier, later = comm_log.chain(conn, comm_id)
    for name in ("id", "contact_ref", "media", "direction", "category", "status", "subject",
                 "created_by", "created_at", "completed_at", "follow_up_of_id", "detail_id",
                 "removed"):
        click.echo(f"{name:<16} {getattr(entry, name) if getattr(entry, name) is not None else ''}")
    if entry.content:
        click.echo(f"content:\n{entry.content}")
    for title, items in (("follows up", earlier), ("follow-ups", later)):
        if items:
            click.echo(f"{title}:")
            for e in items:
                click.echo(f"  {e.id}  {e.created_at:%Y-%m-%d %H:%M}  {e.media}/{e.direction}  "
                           f"{e.status}  {e.subject or ''}")
