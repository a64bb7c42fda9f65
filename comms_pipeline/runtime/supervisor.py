"""Background daemon processes: start with a pidfile and a log file, stop with SIGTERM.

Pidfiles live in ``var/run/NAME-N.pid`` (N = copy number), logs in ``var/log/NAME-N.log``.
Liveness is the process existing; health is its heartbeat row being fresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Instance:
    name: str
    copy: int
    pidfile: Path
    pid: int | None

    @property
    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def run_dir(var: Path) -> Path:
    return var / "run"


def instances(var: Path, name: str | None = None) -> list[Instance]:
    found = []
    for pidfile in sorted(run_dir(var).glob("*.pid")):
        stem, _, copy = pidfile.stem.rpartition("-")
        if name and stem != name:
            continue
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        found.append(Instance(stem, int(copy) if copy.isdigit() else 1, pidfile, pid))
    return found


def start(var: Path, name: str, copies: int, argv_prefix: list[str],
          env: dict[str, str] | None = None) -> list[Instance]:
    """Start ``copies`` background processes of daemon ``name`` that are not running yet."""
    run_dir(var).mkdir(parents=True, exist_ok=True)
    (var / "log").mkdir(parents=True, exist_ok=True)
    started = []
    for copy in range(1, copies + 1):
        pidfile = run_dir(var) / f"{name}-{copy}.pid"
        current = next((i for i in instances(var, name) if i.copy == copy), None)
        if current and current.alive:
            continue
        log_path = var / "log" / f"{name}-{copy}.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [*argv_prefix, "daemon", "run", name if copy == 1 else f"{name}-{copy}"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, env=env,
            )
        pidfile.write_text(f"{proc.pid}\n")
        started.append(Instance(name, copy, pidfile, proc.pid))
    return started


def stop(var: Path, name: str | None, timeout: float) -> list[tuple[Instance, str]]:
    """SIGTERM every running copy, wait up to ``timeout`` seconds, SIGKILL what remains."""
    results = []
    targets = [i for i in instances(var, name)]
    # Which copies were running is decided once, when they are signalled: a copy that exits
    # while an earlier one is waited for has stopped, not "not running" (a race before).
    signalled = set()
    for inst in targets:
        if inst.alive:
            os.kill(inst.pid, signal.SIGTERM)  # type: ignore[arg-type]
            signalled.add(inst.pidfile)
    deadline = time.monotonic() + timeout
    for inst in targets:
        if inst.pidfile not in signalled:
            results.append((inst, "not running"))
            inst.pidfile.unlink(missing_ok=True)
            continue
        while inst.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        if inst.alive:
            os.kill(inst.pid, signal.SIGKILL)  # type: ignore[arg-type]
            results.append((inst, "killed after timeout"))
        else:
            results.append((inst, "stopped"))
        inst.pidfile.unlink(missing_ok=True)
    return results


def self_command() -> list[str]:
    """How to run this same ``comms`` in a child process."""
    return [sys.executable, "-m", "comms_pipeline.cli.main"]
