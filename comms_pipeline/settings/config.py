"""Configuration: defaults in code, a TOML file on top, ``COMMS_*`` environment variables last.

Every key has a working default for the embedded setup (SQLite and local folders under
``var/``), so the pipeline runs with no file at all. An environment variable is named after the
key's path: ``database.url`` -> ``COMMS_DATABASE_URL``,
``gateways.sms.backend`` -> ``COMMS_GATEWAYS_SMS_BACKEND``. Invalid configuration raises
:class:`ConfigError` naming the key and the problem.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from comms_pipeline.core.cron import check_cron
from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.stages import JOB_NAMES
from comms_pipeline.settings.bounces import BounceSettings
from comms_pipeline.settings.callbacks import CallbackSettings
from comms_pipeline.settings.entity_sources import EntitySource
from comms_pipeline.settings.gateways import GatewaysSettings
from comms_pipeline.settings.links import LinkSettings
from comms_pipeline.settings.notifications import NotificationSettings
from comms_pipeline.settings.retention import RetentionSettings
from comms_pipeline.settings.run import RunSettings
from comms_pipeline.settings.suppressions import SuppressionSettings
from comms_pipeline.settings.web import WebSettings

ENV_PREFIX = "COMMS_"
#: ``COMMS_*`` variables that are not configuration keys but are read elsewhere.
ENV_OTHERS = frozenset({"COMMS_CONFIG", "COMMS_DEBUG", "COMMS_LOG_LEVEL"})
#: Prefixes left to the test suite and the benchmarks.
ENV_OTHER_PREFIXES = ("COMMS_TEST_", "COMMS_BENCH_")
DEFAULT_CONFIG_PATHS = (Path("config/comms.toml"),)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


#: URL schemes as people write them -> the driver the pipeline uses for them.
DATABASE_SCHEMES = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "sqlite": "sqlite",
}


class DatabaseSettings(_Section):
    url: str = "sqlite:///{var}/comms.db"
    echo: bool = False
    pool_size: int = Field(5, ge=1)
    #: A daemon waits this long for a database that went away (a restart, a failover, a
    #: network blip) before it exits; 0 waits for ever.
    outage_wait_seconds: float = Field(0.0, ge=0)
    #: The same for ``--once`` runs (cron jobs): they then exit with code 75 (EX_TEMPFAIL),
    #: and the next run picks up where the claims say.
    outage_wait_once_seconds: float = Field(300.0, ge=0)
    # PostgreSQL session limits (0 switches one off). A frozen worker (SIGSTOP, a paused VM,
    # a partitioned host) inside a transaction would otherwise hold its row locks, hiding
    # the rows from every other claimer (SKIP LOCKED) for as long as it is frozen.
    #: The longest one statement may run (a bulk COPY of a large run included).
    statement_timeout_seconds: float = Field(300.0, ge=0)
    #: The longest a statement waits for a row lock held by another session.
    lock_timeout_seconds: float = Field(30.0, ge=0)
    #: A session idle inside a transaction this long is ended by the server (its locks go):
    #: a little above what a finishing transaction spends between two statements.
    idle_in_transaction_seconds: float = Field(60.0, ge=0)
    #: libpq TCP keepalives: a peer gone silent is noticed after about idle + 3 x interval.
    tcp_keepalive_idle_seconds: int = Field(30, ge=1)
    tcp_keepalive_interval_seconds: int = Field(10, ge=1)
    #: libpq connect_timeout: how long one attempt to reach a host may take (per host, with
    #: several hosts in the URL).
    connect_timeout_seconds: int = Field(10, ge=1)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        """``postgres://`` and ``postgresql://`` (as libpq, Heroku and most tools write them)
        mean PostgreSQL through psycopg2; any other scheme is refused here, by name, rather
        than failing later inside SQLAlchemy."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("not a database URL: expected sqlite:///FILE or "
                             "postgresql://USER@HOST/DATABASE")
        driver = DATABASE_SCHEMES.get(scheme.lower())
        if driver is None:
            raise ValueError(f"database scheme {scheme!r} is not supported: use sqlite:///FILE "
                             f"or postgresql://USER@HOST/DATABASE")
        return f"{driver}://{rest}"


class PathSettings(_Section):
    var: Path = Path("var")


class ClaimSettings(_Section):
    lease_seconds: float = Field(60.0, gt=0)
    #: With the backoff below, retries span about three hours: a gateway down for a while
    #: (a restart, an outage) delays its backlog rather than rejecting it.
    max_attempts: int = Field(10, ge=1)
    backoff_base_seconds: float = Field(30.0, ge=0)
    backoff_max_seconds: float = Field(3600.0, ge=0)


class MonitorSettings(_Section):
    batch_size: int = Field(1000, ge=1)
    default_language: str = "en"
    default_country: str = Field("GB", min_length=2, max_length=2)
    then_merge: bool = Field(True, description=(
        "`comms job run monitor` (batch mode) runs the email and letter monitors when it "
        "has finished, as the seeds' process flow says"))


class DaemonSettings(_Section):
    batch_size: int = Field(100, ge=1)
    poll_interval: float = Field(1.0, gt=0, description=(
        "seconds an idle worker waits before it looks again; on PostgreSQL with listen, "
        "only the fallback for a missed notification"))
    listen: bool = Field(True, description=(
        "on PostgreSQL, idle workers LISTEN on their stage's channel and claim as soon as "
        "new work is notified (migration 0009's triggers)"))
    heartbeat_seconds: float = Field(5.0, gt=0)
    stale_after_seconds: float = Field(30.0, gt=0)
    stop_timeout_seconds: float = Field(30.0, gt=0)
    prefetch_batches: int = Field(0, ge=0, le=100, description=(
        "batches the SMS daemon (one SMPP gateway) may claim into the one in flight, so "
        "its window stays full across batches: worth it for a distant SMSC (answers tens "
        "of ms away); 0 (default) drains it at every batch, cheaper on a near one"))
    metrics_port: int | None = Field(None, ge=1, le=65535, description=(
        "serve each daemon's and job's Prometheus metrics on this port when --metrics-port "
        "is not given; copy N of a daemon (sms-N) uses metrics_port + N - 1"))


class EmailSettings(_Section):
    from_address: str = "Comms Demo <no-reply@example.com>"
    reply_to: str | None = None
    message_id_domain: str = "comms.example.com"
    unsubscribe_url: str = "http://127.0.0.1:8000/links/unsubscribe"


class LetterSettings(_Section):
    processes: int = Field(1, ge=1, le=64, description="letter rendering processes")
    sender: list[str] = Field(default_factory=list,
                              description="sender block lines, the first the PDF's author "
                                          "(default: the From name and a demo address)")
    tagged: bool = Field(False, description="tagged PDFs (structure for screen readers), "
                                            "rendered one letter at a time")


class SchedulerSettings(_Section):
    """Cron expressions (five fields) per job name; an empty string disables the job."""

    jobs: dict[str, str] = Field(
        default_factory=lambda: {
            "monitor": "* * * * *",
            "email-monitor": "* * * * *",
            "letter-monitor": "*/5 * * * *",
            "expiry-sweep": "*/15 * * * *",
        }
    )
    timezone: str = "UTC"
    #: Seconds between a standby scheduler's tries of the leader lock: it takes over within
    #: about this long after the leader dies.
    standby_poll_seconds: float = Field(1.0, gt=0)
    #: Seconds between the leader's checks that it still holds the lock (on PostgreSQL, that
    #: its lock's connection still answers); a leader that lost it stops firing jobs.
    leader_check_seconds: float = Field(5.0, gt=0)
    #: Jobs fired every N seconds instead of on their cron (tests; very busy pipelines).
    intervals: dict[str, float] = Field(default_factory=dict)

    @field_validator("intervals")
    @classmethod
    def _known_interval_jobs(cls, intervals: dict[str, float]) -> dict[str, float]:
        for name, seconds in intervals.items():
            if name not in JOB_NAMES:
                raise ValueError(f"no job named {name!r} (known: {', '.join(sorted(JOB_NAMES))})")
            if seconds <= 0:
                raise ValueError(f"{name}: an interval is a positive number of seconds")
        return intervals

    @field_validator("jobs")
    @classmethod
    def _five_fields(cls, jobs: dict[str, str]) -> dict[str, str]:
        for name, expr in jobs.items():
            if name not in JOB_NAMES:
                raise ValueError(f"no job named {name!r} (known: {', '.join(sorted(JOB_NAMES))})")
            if expr:
                try:
                    check_cron(expr)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return jobs


class Settings(_Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    claims: ClaimSettings = Field(default_factory=ClaimSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    daemons: DaemonSettings = Field(default_factory=DaemonSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    gateways: GatewaysSettings = Field(default_factory=GatewaysSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    letters: LetterSettings = Field(default_factory=LetterSettings)
    links: LinkSettings = Field(default_factory=LinkSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    suppressions: SuppressionSettings = Field(default_factory=SuppressionSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    bounces: BounceSettings = Field(default_factory=BounceSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    entity_sources: dict[str, EntitySource] = Field(default_factory=dict)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    source: str = "defaults"

    @property
    def var_dir(self) -> Path:
        return self.paths.var.resolve()

    @property
    def database_url(self) -> str:
        return self.database.url.replace("{var}", str(self.var_dir))


def _env_overrides(model: type[BaseModel], prefix: str, environ: dict[str, str]) -> dict:
    """Collect ``COMMS_*`` variables for every known key of ``model`` (recursively)."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = _env_overrides(annotation, env_name + "_", environ)
            if nested:
                found[name] = nested
        elif env_name in environ:
            raw = environ[env_name]
            if raw[:1] in ("{", "["):
                try:
                    found[name] = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(f"invalid configuration ({env_name}): not valid JSON "
                                      f"({exc})") from None
            else:
                found[name] = raw
    return found


def _env_names(model: type[BaseModel], prefix: str) -> set[str]:
    """Every variable name :func:`_env_overrides` reads for ``model``."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, env_name + "_")
        else:
            names.add(env_name)
    return names


def _check_env_names(environ: dict[str, str]) -> None:
    """A mistyped variable (``COMMS_DATABSE_URL``) must not be ignored silently: the daemons
    would run on the default private SQLite file instead of the database meant."""
    known = _env_names(Settings, ENV_PREFIX) - {"COMMS_SOURCE"}
    for name in sorted(environ):
        if (not name.startswith(ENV_PREFIX) or name in known or name in ENV_OTHERS
                or name.startswith(ENV_OTHER_PREFIXES)):
            continue
        close = difflib.get_close_matches(name, sorted(known | ENV_OTHERS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see config/comms.toml for the keys"
        raise ConfigError(f"unknown environment variable {name}: {hint} "
                          f"(rename or unset it)")


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(err: ValidationError, source: str) -> str:
    problems = [f"{'.'.join(str(p) for p in problem['loc']) or '(top level)'}: "
                f"{problem['msg'].removeprefix('Value error, ')}" for problem in err.errors()]
    if len(problems) == 1:  # the usual case: one line an operator reads at a glance
        return f"invalid configuration ({source}): {problems[0]}"
    return "\n".join([f"invalid configuration ({source}):", *(f"  {p}" for p in problems)])


def load_settings(path: str | Path | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Load settings from ``path`` (or ``$COMMS_CONFIG``, or ``config/comms.toml`` if present)."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("COMMS_CONFIG")
    data: dict[str, Any] = {}
    source = "defaults"
    candidates = [Path(path)] if path else [p for p in DEFAULT_CONFIG_PATHS if p.is_file()]
    for candidate in candidates:
        if not candidate.is_file():
            raise ConfigError(f"configuration file not found: {candidate}")
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{candidate}: not valid TOML: {exc}") from exc
        source = str(candidate)
    _check_env_names(environ)
    data = _merge(data, _env_overrides(Settings, ENV_PREFIX, environ))
    data["source"] = source
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
