"""``comms run``: every stage of the pipeline on this machine, supervised, until SIGTERM."""

from __future__ import annotations

import click

from comms_pipeline.cli.common import AppContext, pass_app


@click.command("run")
@click.option("--dry-run", is_flag=True, help="Print the processes it would run, and exit.")
@pass_app
def run(app: AppContext, dry_run: bool) -> None:
    """Run the whole pipeline on this machine until SIGTERM: one continuous worker per job
    of [run] workers (woken by new work), the [run.daemons] copies of each daemon, and the
    scheduler for notification types and the jobs left on a cron (the expiry sweep).

    A process that dies is started again after a backoff ([run] restart_seconds, doubled
    each time, up to restart_max_seconds). SIGTERM stops every process: each finishes or
    gives back its batch. `comms daemon status` shows the workers and daemons.
    """
    from comms_pipeline.runtime import supervisor as supervise
    from comms_pipeline.runtime.service import Service, child_env, plan

    root = click.get_current_context().find_root().params
    prefix = [*supervise.self_command(), "--log-level", root.get("log_level") or "info"]
    if root.get("json_logs") is not None:
        prefix.append("--json-logs" if root["json_logs"] else "--text-logs")
    children = plan(app.settings, prefix)
    if dry_run:
        for child in children:
            click.echo(f"{child.key:<18}{' '.join(child.argv[len(prefix):])}")
        return
    if not children:
        raise click.UsageError("[run] names no worker, daemon or scheduler to run")
    service = Service(app.settings, children, child_env(app.settings, app.config_path))
    raise click.exceptions.Exit(service.run())
