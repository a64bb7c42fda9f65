"""``comms run``: the whole pipeline on one machine, as one supervised service.

One process starts and watches children of this same ``comms``: a continuous worker for each
job of ``[run] workers`` (``job run NAME --follow``), the configured copies of each daemon
(``daemon run NAME-N``) and the scheduler for what stays on a cron (notification types, the
expiry sweep: ``scheduler run --skip-job …``). A child that dies is started again after a
backoff (``[run] restart_seconds``, doubled per death in a row up to ``restart_max_seconds``).
SIGTERM (or SIGINT) is forwarded to every child; each finishes or gives back its batch, and
what has not exited after ``[daemons] stop_timeout_seconds`` is killed (its claims pass to
whoever claims next when their lease ends).

Workers and daemons get a pidfile in ``var/run/`` like ``daemon start``'s, so ``comms daemon
status`` shows them (and says ``dead`` while one waits to be restarted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.signals import on_stop_signals
from comms_pipeline.runtime import supervisor as supervise

if TYPE_CHECKING:
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: How often the children are looked at.
TICK_SECONDS = 0.2


@dataclass
class Child:
    """One supervised process: ``key`` names it (``sms-2``, ``monitor-1``, ``scheduler``)."""

    key: str
    argv: list[str]
    pidfile: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    deaths: int = 0
    restart_at: float | None = None
    restarts: int = 0
    #: Each death's exit code, and the wait before the restart that followed it.
    history: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def plan(settings: Settings, argv_prefix: list[str]) -> list[Child]:
    """The children ``comms run`` supervises, from ``[run]``."""
    cfg = settings.run
    run_dir = supervise.run_dir(settings.var_dir)
    children = [Child(f"{name}-1", [*argv_prefix, "job", "run", name, "--follow",
                                    "--no-progress"], run_dir / f"{name}-1.pid")
                for name in cfg.workers]
    for name, copies in cfg.daemons.items():
        for copy in range(1, copies + 1):
            children.append(Child(f"{name}-{copy}", [
                *argv_prefix, "daemon", "run", name if copy == 1 else f"{name}-{copy}"],
                run_dir / f"{name}-{copy}.pid"))
    if cfg.scheduler:
        skip = [arg for name in cfg.workers for arg in ("--skip-job", name)]
        children.append(Child("scheduler", [*argv_prefix, "scheduler", "run", *skip]))
    return children


class Service:
    """Starts ``children``, restarts the ones that die, stops them all on :meth:`stop`."""

    def __init__(self, settings: Settings, children: list[Child],
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.children = children
        self.env = env
        self.stopping = threading.Event()

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, env=self.env,
                                      start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        if child.pidfile is not None:
            child.pidfile.parent.mkdir(parents=True, exist_ok=True)
            child.pidfile.write_text(f"{child.proc.pid}\n")
        log.info("run.started", child=child.key, pid=child.proc.pid)

    def _reap(self, child: Child, now: float) -> None:
        code = child.proc.poll() if child.proc is not None else None
        if child.proc is None or code is None:
            return
        cfg = self.settings.run
        if now - child.started_at >= cfg.restart_reset_seconds:
            child.deaths = 0
        delay = min(cfg.restart_seconds * 2 ** child.deaths, cfg.restart_max_seconds)
        child.deaths += 1
        child.history.append(code)
        child.delays.append(delay)
        child.restart_at = now + delay
        log.warning("run.child_died", child=child.key, pid=child.proc.pid, returncode=code,
                    restart_in=round(delay, 1))
        child.proc = None

    def tick(self) -> None:
        """Reap the children that died and start the ones whose backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping.is_set():
                return
            self._reap(child, now)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def stop(self, *_args: object) -> None:
        """Ask for the stop (safe from a signal handler); :meth:`run` does the rest."""
        self.stopping.set()

    def run(self) -> int:
        """Supervise until :meth:`stop` (SIGTERM, SIGINT); 0 when every child stopped in time."""
        on_stop_signals(self.stop)
        log.info("run.starting", children=[c.key for c in self.children])
        try:
            for child in self.children:
                if not self.stopping.is_set():
                    self._spawn(child)
            while not self.stopping.wait(TICK_SECONDS):
                self.tick()
        finally:
            killed = self._stop_children()
        log.info("run.stopped", killed=killed)
        return 0 if not killed else 1

    def _stop_children(self) -> list[str]:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.settings.daemons.stop_timeout_seconds
        killed = []
        for child in running:
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                child.proc.kill()  # type: ignore[union-attr]
                child.proc.wait()  # type: ignore[union-attr]
                killed.append(child.key)
                log.error("run.killed_after_timeout", child=child.key)
        for child in self.children:
            if child.pidfile is not None:
                child.pidfile.unlink(missing_ok=True)
        return killed


def child_env(settings: Settings, config_path: str | None) -> dict[str, str]:
    """The children's environment: this one, with the same configuration file and var/."""
    env = dict(os.environ)
    if config_path:
        env["COMMS_CONFIG"] = os.path.abspath(config_path)
    env.setdefault("COMMS_PATHS_VAR", str(settings.var_dir))
    return env
