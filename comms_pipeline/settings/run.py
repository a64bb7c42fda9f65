"""The ``[run]`` section: what ``comms run`` supervises on this machine."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comms_pipeline.core.stages import DAEMON_NAMES, JOB_NAMES


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Jobs run as continuous workers (``job run NAME --follow``), one process each; the
    #: scheduler no longer fires them. The others (the expiry sweep) keep their cron.
    workers: list[str] = Field(
        default_factory=lambda: ["monitor", "email-monitor", "letter-monitor"])
    #: Copies of each daemon (``daemon run NAME-N``); 0 or absent: not run.
    daemons: dict[str, int] = Field(default_factory=lambda: {name: 1 for name in DAEMON_NAMES})
    #: Run the scheduler too (notification types' crons, the jobs not in ``workers``).
    scheduler: bool = True
    #: A copy that dies is started again after this long, doubled at each death in a row
    #: up to ``restart_max_seconds``; a copy that ran ``restart_reset_seconds`` starts afresh.
    restart_seconds: float = Field(1.0, gt=0)
    restart_max_seconds: float = Field(30.0, gt=0)
    restart_reset_seconds: float = Field(60.0, gt=0)

    @field_validator("workers")
    @classmethod
    def _known_jobs(cls, workers: list[str]) -> list[str]:
        for name in workers:
            if name not in JOB_NAMES:
                raise ValueError(f"no job named {name!r} (known: {', '.join(JOB_NAMES)})")
        return list(dict.fromkeys(workers))

    @field_validator("daemons")
    @classmethod
    def _known_daemons(cls, daemons: dict[str, int]) -> dict[str, int]:
        for name, copies in daemons.items():
            if name not in DAEMON_NAMES:
                raise ValueError(f"no daemon named {name!r} (known: {', '.join(DAEMON_NAMES)})")
            if not 0 <= copies <= 64:
                raise ValueError(f"{name}: copies are 0 to 64")
        return daemons
