"""Operations: jobs, daemons, the scheduler and the pipeline's status."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import click
import structlog

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.core.progress_line import progress_line
from comms_pipeline.runtime import supervisor as supervise
from comms_pipeline.runtime.registry import DAEMONS, JOBS
from comms_pipeline.runtime.run import RunReport, run_stage, run_stage_workers, stage_backlog
from comms_pipeline.store.outage import EX_TEMPFAIL, DatabaseUnavailable

#: The jobs ``job run monitor`` runs after the monitor in batch mode ([monitor] then_merge).
MERGE_JOBS = ("email-monitor", "letter-monitor")


@click.group()
def job() -> None:
    """Batch jobs (for cron or `comms scheduler run`): each drains its backlog and exits
    (with --follow: then waits for new work, as a daemon does)."""


@job.command("run")
@click.argument("name", type=click.Choice(sorted(JOBS)))
@click.option("--batch-size", type=click.IntRange(1), help="Rows claimed per transaction.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes claiming the backlog side by side (PostgreSQL scales best).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve this process's Prometheus metrics on http://0.0.0.0:PORT/metrics.")
@click.option("--follow", is_flag=True,
              help="Keep running: after the backlog, wait for new work (woken by the "
                   "database's notifications on PostgreSQL) until SIGTERM.")
@pass_app
def job_run(app: AppContext, name: str, batch_size: int | None, progress: bool | None,
            workers: int, metrics_port: int | None, follow: bool) -> None:
    """Run job NAME until its backlog is done (with --follow: until SIGTERM). The monitor
    then runs email-monitor and letter-monitor ([monitor] then_merge; not with --follow).

    Exit code 0 means it finished; 1 means a batch failed (its entries carry the error and are
    retried); 75 means the database stayed away past [database] outage_wait_once_seconds
    (outage_wait_seconds with --follow).
    """
    if follow and workers > 1:
        raise click.UsageError("--follow runs one worker; run several `job run --follow` "
                               "processes (or `comms run`) for more")
    _serve_metrics(app, metrics_port)
    shown = not follow and (sys.stderr.isatty() if progress is None else progress)
    report = _run_and_report(app, name, once=not follow, batch_size=batch_size,
                             workers=workers, progress=shown)
    if (name == "monitor" and not follow and not report.interrupted
            and app.settings.monitor.then_merge):
        # The seeds' process flow: the Email and Letter Monitor jobs start when the Comms
        # Monitor job has finished ([monitor] then_merge; a failed run stops the chain).
        for merge_job in MERGE_JOBS:
            if _run_and_report(app, merge_job, once=True, batch_size=None, workers=workers,
                               progress=shown).interrupted:
                break


def _serve_metrics(app: AppContext, port: int | None, copy: int = 1) -> None:
    """What this process does (outcomes, claim and batch durations), for Prometheus; the
    database's backlog gauges are the Web API's /metrics, so copies never double them.

    Without --metrics-port, ``[daemons] metrics_port`` names the port; copy N of a daemon
    (systemd's ``comms-daemon@sms-N``, ``daemon start --copies``) takes the port N - 1 above
    it, so copies on one machine do not fight over one port. A port taken is an error when
    the flag asked for it; from the configuration it is only a warning, because a job the
    scheduler starts while another job holds that port must still run."""
    from comms_pipeline.queue import metrics

    configured = port is None
    if port is None:
        if app.settings.daemons.metrics_port is None:
            return
        port = app.settings.daemons.metrics_port + copy - 1
    try:
        metrics.serve(port)
    except OSError as exc:
        if configured:
            structlog.get_logger().warning("metrics.port_unavailable", port=port,
                                           reason=exc.strerror)
            return
        raise click.BadParameter(f"cannot listen on port {port}: {exc.strerror}",
                                 param_hint="--metrics-port") from None


#: How a run names what became of the rows it handled.
_OUTCOME_WORDS = {"completed": "sent", "awaiting_external": "handed to external systems",
                  "retry": "to retry later", "gave_up": "failed after the last attempt",
                  "rejected": "rejected"}


def _breakdown(outcomes: dict[str, int]) -> str:
    """`` (3 sent, 1 to retry later)``: handled is not sent."""
    if not outcomes:
        return ""
    parts = [f"{count} {_OUTCOME_WORDS.get(name, name.replace('_', ' '))}"
             for name, count in sorted(outcomes.items(), key=lambda kv: -kv[1])]
    return f" ({', '.join(parts)})"


def _run_and_report(app: AppContext, name: str, *, once: bool, batch_size: int | None,
                    workers: int = 1, progress: bool = False) -> RunReport:
    """Run a stage, print what it did, and exit 1 when a batch failed (jobs and daemons)."""
    def run(on_progress: Callable[[int], None] | None) -> RunReport:
        if workers > 1:
            return run_stage_workers(name, app.settings, app.engine, workers,
                                     batch_size=batch_size, on_progress=on_progress)
        return run_stage(name, app.settings, app.engine, once=once, batch_size=batch_size,
                         on_progress=on_progress)

    try:
        if progress and once:
            total = stage_backlog(name, app.settings, app.engine)
            label = name if workers == 1 else f"{name} x{workers}"
            with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                                   show_percent=True, show_eta=True) as bar, \
                    progress_line(sys.stderr, bar):
                report = run(bar.update)
        else:
            report = run(None)
    except DatabaseUnavailable as exc:  # the database stayed away past the wait limit
        click.echo(f"error: {name}: {exc}; try again later", err=True)
        raise click.exceptions.Exit(EX_TEMPFAIL) from None
    if once:
        click.echo(f"{name}: {report.handled + report.retried} handled"
                   f"{_breakdown(report.outcomes)}"
                   + (f", {report.refused} taken over by another worker" if report.refused
                      else ""))
    problem = report.problem()
    if problem:
        click.echo(f"error: {problem}", err=True)
        raise click.exceptions.Exit(report.exit_code)
    return report


@job.command("list")
def job_list() -> None:
    """List the jobs."""
    for name in sorted(JOBS):
        click.echo(name)


@click.group()
def daemon() -> None:
    """Delivery daemons: run in the foreground, or start/stop/inspect background copies."""


class DaemonInstance(click.Choice):
    """A daemon's name, or a copy's instance name ``NAME-N`` (systemd's
    ``comms-daemon@sms-2``): the copy number only names the unit."""

    def convert(self, value, param, ctx):
        name, copy = split_copy(str(value))
        super().convert(name, param, ctx)
        return value if copy > 1 else name


def split_copy(value: str) -> tuple[str, int]:
    """``sms-2`` -> (``sms``, 2); a plain daemon name is copy 1."""
    name, sep, copy = value.rpartition("-")
    if value not in DAEMONS and sep and copy.isdigit() and name in DAEMONS:
        return name, max(int(copy), 1)
    return value, 1


@daemon.command("run")
@click.argument("name", type=DaemonInstance(sorted(DAEMONS)))
@click.option("--once", is_flag=True, help="Drain the backlog and exit (cron mode).")
@click.option("--batch-size", type=click.IntRange(1), help="Rows claimed per transaction.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve this process's Prometheus metrics on http://0.0.0.0:PORT/metrics.")
@pass_app
def daemon_run(app: AppContext, name: str, once: bool, batch_size: int | None,
               metrics_port: int | None) -> None:
    """Run daemon NAME in the foreground until SIGTERM (or, with --once, until idle).

    NAME may carry a copy number, as systemd's instance names do (sms-2 runs sms). With
    --once: exit code 0 means the backlog is done; 1 means a batch failed; 75 means the
    database stayed away past [database] outage_wait_once_seconds.
    """
    name, copy = split_copy(name)
    _serve_metrics(app, metrics_port, copy)
    _run_and_report(app, name, once=once, batch_size=batch_size)


@daemon.command("start")
@click.argument("name", type=click.Choice(sorted(DAEMONS)))
@click.option("--copies", default=1, show_default=True, type=click.IntRange(1, 64),
              help="How many copies to run (they claim work, never share it).")
@pass_app
def daemon_start(app: AppContext, name: str, copies: int) -> None:
    """Start daemon NAME in the background (pidfile and log under var/)."""
    env = dict(os.environ)
    if app.config_path:
        env["COMMS_CONFIG"] = os.path.abspath(app.config_path)
    env.setdefault("COMMS_PATHS_VAR", str(app.settings.var_dir))
    started = supervise.start(app.settings.var_dir, name, copies, supervise.self_command(), env)
    for inst in started:
        click.echo(f"started {name}-{inst.copy} (pid {inst.pid}); "
                   f"log: {app.settings.var_dir / 'log' / f'{name}-{inst.copy}.log'}")
    if not started:
        click.echo(f"{name}: already running")


@daemon.command("stop")
@click.argument("name", required=False, type=click.Choice(sorted(DAEMONS)))
@pass_app
def daemon_stop(app: AppContext, name: str | None) -> None:
    """Stop daemon NAME (every daemon when omitted): SIGTERM, then wait for it to exit."""
    results = supervise.stop(app.settings.var_dir, name, app.settings.daemons.stop_timeout_seconds)
    for inst, what in results:
        click.echo(f"{inst.name}-{inst.copy} (pid {inst.pid}): {what}")
    if not results:
        click.echo("nothing to stop")


@daemon.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def daemon_status(app: AppContext, as_json: bool) -> None:
    """Show daemons; exit 1 if a started daemon is dead or its heartbeat is stale."""
    from comms_pipeline.runtime.health import daemon_health

    rows, healthy = daemon_health(app.settings, app.engine)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "daemons": rows}, default=str, indent=2))
    elif not rows:
        click.echo("no daemons started")
    else:
        click.echo(f"{'DAEMON':<18}{'PID':>8}  {'HOST':<16}{'STATE':<10}{'LAST BEAT':>10}"
                   f"{'HANDLED':>10}")
        for r in rows:
            age = "-" if r["beat_age"] is None else f"{r['beat_age']:.0f}s ago"
            click.echo(f"{r['name']:<18}{r['pid'] or '-':>8}  {r['host']:<16}{r['state']:<10}"
                       f"{age:>10}{r['processed']:>10}")
    sys.exit(0 if healthy else 1)


@click.group()
def scheduler() -> None:
    """The built-in scheduler (APScheduler) for the batch jobs."""


@scheduler.command("run")
@click.option("--standby-poll", type=click.FloatRange(0.1), metavar="SECONDS",
              help="How often a standby scheduler tries to take over "
                   "(default: [scheduler] standby_poll_seconds).")
@click.option("--skip-job", "skip_jobs", multiple=True, type=click.Choice(sorted(JOBS)),
              help="Do not fire this job (it runs continuously elsewhere, as under "
                   "`comms run`); repeatable.")
@pass_app
def scheduler_run(app: AppContext, standby_poll: float | None,
                  skip_jobs: tuple[str, ...]) -> None:
    """Run the jobs on the cron expressions of [scheduler.jobs], and every notification type
    that has a cron, until stopped (types are looked at again every minute).

    One scheduler is active at a time: start one on each of two machines and the second
    waits as a standby, taking over within --standby-poll seconds when the first dies."""
    from comms_pipeline.runtime.scheduler import run_scheduler

    if standby_poll is not None:
        app.settings.scheduler.standby_poll_seconds = standby_poll
    run_scheduler(app.settings, app.engine, frozenset(skip_jobs))


def _age(seconds: float | None) -> str:
    """An age for people: 42s, 7m, 3h, 2d (``-`` when nothing waits)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable counts.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Backlog of every stage (ready now, the oldest one's age, and apart from it what is
    scheduled for later) and the queue's entries by life-cycle state."""
    from comms_pipeline.queue.status import pipeline_status

    data = pipeline_status(app.engine)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Request headers ({data['headers_total']}):")
    for name, count in data["headers"].items():
        click.echo(f"  {name:<28}{count:>10}")
    click.echo(f"Queue entries ({data['details_total']}):")
    for name, count in data["details"].items():
        click.echo(f"  {name:<28}{count:>10}")
    if data.get("test_details"):
        click.echo(f"  (and {data['test_details']} test entries of test API keys, simulated: "
                   "not counted above)")
    click.echo(f"Backlog by stage:{'ready':>23}{'oldest':>10}{'later':>10}"
               "   (later: scheduled, or waiting to retry)")
    for name, count in data["backlog"].items():
        click.echo(f"  {name:<28}{count:>10}{_age(data['oldest_pending_age_seconds'][name]):>10}"
                   f"{data['scheduled_later'][name]:>10}")
    rates = data["sent_per_minute"]
    if rates:
        click.echo(f"Sent per minute:{'last 5 min':>24}{'last 60 min':>13}")
        for media, rate in sorted(rates.items()):
            click.echo(f"  {media:<28}{rate['5m']:>10}{rate['60m']:>13}")
    failing = data["documents"]["failing_storage"]
    if failing:
        click.echo("Documents failing to be stored (retried; see the storage daemon's log):")
        for code, count in failing.items():
            click.echo(f"  {code:<28}{count:>10}")
