"""``comms``: the command line of comms-pipeline.

Every subcommand reads the configuration (``--config``, ``$COMMS_CONFIG`` or
``config/comms.toml``, then ``COMMS_*`` variables) and talks to the database it names.
"""

from __future__ import annotations

import importlib
import sys

import click

from comms_pipeline import __version__
from comms_pipeline.cli import errors as cli_errors
from comms_pipeline.cli.common import AppContext
from comms_pipeline.pipeline import audit
from comms_pipeline.runtime.logs import configure_logging

#: Subcommands, imported when used: name -> "module:attribute".
COMMANDS = {
    "db": "comms_pipeline.cli.admin:db",
    "media": "comms_pipeline.cli.admin:media",
    "contacts": "comms_pipeline.cli.admin:contacts",
    "trigger": "comms_pipeline.cli.requests:trigger",
    "queue": "comms_pipeline.cli.requests:queue",
    "requests": "comms_pipeline.cli.request_fate:requests",
    "job": "comms_pipeline.cli.ops:job",
    "daemon": "comms_pipeline.cli.ops:daemon",
    "scheduler": "comms_pipeline.cli.ops:scheduler",
    "status": "comms_pipeline.cli.ops:status",
    "run": "comms_pipeline.cli.service:run",
    "demo": "comms_pipeline.cli.demo:demo",
    "templates": "comms_pipeline.cli.templates:templates",
    "documents": "comms_pipeline.cli.documents:documents",
    "api": "comms_pipeline.cli.api:api",
    "external-systems": "comms_pipeline.cli.api:external_systems",
    "api-keys": "comms_pipeline.cli.api:api_keys",
    "notifications": "comms_pipeline.cli.notifications:notifications",
    "rules": "comms_pipeline.cli.notifications:rules",
    "communications": "comms_pipeline.cli.notifications:communications",
    "suppressions": "comms_pipeline.cli.suppressions:suppressions",
    "audit": "comms_pipeline.cli.audit:audit",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; an exit it asks for (``ctx.exit(1)``, ``raise Exit(1)``)
        becomes the process's exit code.

        ``main`` runs click with ``standalone_mode=False`` (so that our own errors are
        reported our way), and in that mode click *returns* the code of an ``Exit`` instead
        of exiting with it: the code was thrown away and every failure exited 0. Raising
        ``SystemExit`` here carries it past click, to the shell (and to ``CliRunner``).
        """
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit as exc:
            raise SystemExit(exc.exit_code) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="COMMS_CONFIG",
              help="Configuration file (TOML). Default: config/comms.toml when present.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Least important log events shown.")
@click.option("--json-logs/--text-logs", default=None,
              help="Log as JSON lines (default when stderr is not a terminal).")
@click.option("--debug", is_flag=True, envvar="COMMS_DEBUG",
              help="On an error, show the traceback too (also COMMS_DEBUG=1).")
@click.version_option(__version__, prog_name="comms")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str,
        json_logs: bool | None, debug: bool) -> None:
    """comms-pipeline: business events in, personalised customer communications out.

    \b
    Triggers write request headers; `comms job run monitor` expands them into queue entries;
    `comms job run email-monitor` / `letter-monitor` merge documents; daemons
    (`comms daemon run|start sms|email|letter|storage|push-handset|push-external`) ship them;
    `comms daemon run bounces` takes bounces and complaints back.
    `comms status` shows every stage's backlog; `comms demo` runs it all on local folders.
    """
    configure_logging(log_level, json_logs)
    if ctx.obj is None:  # tests and embedding programs may pass their own AppContext
        ctx.obj = AppContext(config_path)
    cli_errors.DEBUG, cli_errors.APP = debug, ctx.obj
    audit.use_actor_unless_set(audit.cli_actor())  # what this command changes is the user's


def main() -> None:
    try:
        cli.main(standalone_mode=False, prog_name="comms")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except Exception as exc:  # one line naming the cause and the fix, not a traceback
        sys.exit(cli_errors.report(exc))


if __name__ == "__main__":
    main()
