"""What an operator reads when a command fails: one line naming the cause and the fix.

``comms`` calls :func:`report` for any exception that escapes a command. Each kind of mistake
has its own exit code, so scripts and systemd can tell them apart; ``--debug`` (or
``COMMS_DEBUG=1``) adds the traceback for the cases that are a bug rather than a mistake.

=====  ==========================================================================
code   meaning
=====  ==========================================================================
1      the command failed (a job's failures, a refused action)
2      usage or configuration (an unknown option, an invalid key or variable)
3      the database does not exist
4      the database cannot be reached
5      the database has no schema or an older one: run ``comms db upgrade``
6      permission denied (a file, a folder, the database's user or password)
7      refused as a conflict (a duplicate contact, template, external system, ...)
8      a gateway's configuration cannot be used
70     an unexpected internal error (a bug: run again with --debug and report it)
=====  ==========================================================================
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass

import click

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DB_MISSING = 3
EXIT_DB_UNREACHABLE = 4
EXIT_DB_NOT_MIGRATED = 5
EXIT_PERMISSION = 6
EXIT_CONFLICT = 7
EXIT_GATEWAY_CONFIG = 8
EXIT_INTERNAL = 70

#: Set by ``comms --debug``; ``COMMS_DEBUG=1`` works before the options are even parsed.
DEBUG = False
#: The command's AppContext (its --config), for naming the database in messages.
APP = None

_UNREACHABLE = ("connection refused", "could not translate host name", "timeout expired",
                "could not connect", "no route to host", "name or service not known",
                "server closed the connection", "network is unreachable", "database is locked")
_PERMISSION = ("password authentication failed", "permission denied", "readonly database",
               "no password supplied", "pg_hba.conf", "role \"")
_NOT_MIGRATED = re.compile(r"no such (table|column)|relation .* does not exist|"
                           r"column .* does not exist")


@dataclass(frozen=True)
class Problem:
    exit_code: int
    message: str


def debug_wanted() -> bool:
    return DEBUG or os.environ.get("COMMS_DEBUG", "").lower() not in ("", "0", "false", "no")


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line an operator can act on (plus the traceback when debugging);
    return the exit code."""
    problem = diagnose(exc)
    if debug_wanted():
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    click.echo(f"error: {problem.message}", err=True)
    return problem.exit_code


def diagnose(exc: BaseException) -> Problem:
    from sqlalchemy import exc as sa_exc

    from comms_pipeline.core.errors import (
        CommsError,
        ConfigError,
        GatewayConfigError,
        MissingExtraError,
    )

    if isinstance(exc, GatewayConfigError | MissingExtraError):
        return Problem(EXIT_GATEWAY_CONFIG, str(exc))
    if isinstance(exc, ConfigError):
        return Problem(EXIT_USAGE, str(exc))
    if isinstance(exc, CommsError):
        return Problem(EXIT_USAGE, str(exc))
    if isinstance(exc, sa_exc.IntegrityError):
        return _integrity(exc)
    if isinstance(exc, sa_exc.DBAPIError):
        return _database(exc)
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return Problem(EXIT_USAGE, f"database.url cannot be used ({_first_line(exc)}): write it "
                                   f"as sqlite:///FILE or postgresql://USER@HOST/DATABASE")
    if isinstance(exc, PermissionError):
        return Problem(EXIT_PERMISSION, f"permission denied: {exc.filename or exc}: run as the "
                                        f"user that owns it, or change its permissions")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return Problem(EXIT_FAILED, f"{exc.strerror or exc}{where}")
    return Problem(EXIT_INTERNAL, f"unexpected internal error ({type(exc).__name__}: "
                                  f"{_first_line(exc)}): run again with --debug for the "
                                  f"traceback, and report it")


def _database(exc: BaseException) -> Problem:
    detail = _first_line(getattr(exc, "orig", None) or exc)
    low = detail.lower()
    url = _database_label()
    missing = re.search(r'database "([^"]+)" does not exist', detail)
    if missing:
        return Problem(EXIT_DB_MISSING, f"the database {missing.group(1)} does not exist "
                                        f"({url}): create it (createdb {missing.group(1)}), "
                                        f"then run `comms db upgrade`")
    if "unable to open database file" in low:
        return Problem(EXIT_DB_MISSING, f"cannot open the SQLite database {url}: its folder is "
                                        f"missing or not writable; run from the checkout (or "
                                        f"set COMMS_PATHS_VAR), then `comms db upgrade`")
    if any(word in low for word in _PERMISSION):
        return Problem(EXIT_PERMISSION, f"the database refused access ({detail}; {url}): check "
                                        f"the user and password in database.url, or the file's "
                                        f"permissions")
    if any(word in low for word in _UNREACHABLE):
        return Problem(EXIT_DB_UNREACHABLE, f"cannot reach the database {url} ({detail}): is "
                                            f"it running, and is database.url "
                                            f"(COMMS_DATABASE_URL) right?")
    if _NOT_MIGRATED.search(low):
        return Problem(EXIT_DB_NOT_MIGRATED, f"the database {url} has no schema or an older "
                                             f"one ({detail}): run `comms db upgrade`")
    return Problem(EXIT_FAILED, f"the database failed ({detail}; {url}): run again with --debug "
                                f"for the details")


#: Tables by what an operator calls their rows.
_NOUNS = {"contacts": "a contact", "templates": "a template", "external_systems":
          "an external system", "api_keys": "an API key", "request_headers": "a request",
          "notification_types": "a notification type", "contact_addresses": "an address"}


def _integrity(exc: BaseException) -> Problem:
    detail = str(getattr(exc, "orig", None) or exc)
    statement = getattr(exc, "statement", None) or ""
    table = re.search(r"(?:INSERT INTO|UPDATE)\s+\"?(\w+)", statement, re.I)
    sqlite = re.search(r"UNIQUE constraint failed: (\w+)\.(\w+)", detail)
    postgres = re.search(r"Key \(([^)]+)\)=\(([^)]*)\) already exists", detail)
    if sqlite or postgres:
        name = sqlite.group(1) if sqlite else (table.group(1) if table else "")
        column = sqlite.group(2) if sqlite else postgres.group(1)  # type: ignore[union-attr]
        value = f" ({postgres.group(2)})" if postgres else ""
        noun = _NOUNS.get(name, f"a row of {name}" if name else "a row")
        return Problem(EXIT_CONFLICT, f"refused: {noun} with this {column}{value} already "
                                      f"exists: use another {column}, or change the existing "
                                      f"one")
    return Problem(EXIT_CONFLICT, f"refused by the database ({_first_line(detail)})")


def _first_line(exc: object) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def _database_label() -> str:
    """The configured database, password hidden (for the message only; never fails)."""
    try:
        from sqlalchemy.engine import make_url

        from comms_pipeline.settings.config import load_settings

        settings = APP.settings if APP is not None else load_settings()
        url = make_url(settings.database_url)
        return url.render_as_string(hide_password=True)
    except Exception:  # a message helper: the original error matters more
        return "database.url"
