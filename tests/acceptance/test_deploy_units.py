"""The systemd units of ``config/systemd/`` parse, name ``comms`` commands and options that
exist, and are the ones ``docs/deploy.md`` describes."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "config" / "systemd").glob("*.service"))
INSTALLED = "/opt/comms/.venv/bin/comms"
GLOBAL_OPTIONS = {"--json-logs", "--text-logs"}


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def test_there_are_units_for_the_api_the_scheduler_and_the_daemons():
    assert {p.name for p in UNITS} >= {"comms-api.service", "comms-scheduler.service",
                                       "comms-daemon@.service", "comms.service"}


def test_the_one_machine_unit_runs_comms_run_and_lets_it_stop_its_processes():
    unit = _unit(ROOT / "config" / "systemd" / "comms.service")["Service"]
    assert shlex.split(unit["ExecStart"])[1:] == ["--json-logs", "run"]
    # SIGTERM to `comms run` alone: it forwards it and waits; systemd's final SIGKILL (after
    # TimeoutStopSec) still reaches every process of the unit.
    assert unit["KillMode"] == "mixed"
    assert int(unit["TimeoutStopSec"]) > 30  # longer than [daemons] stop_timeout_seconds


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_unit_runs_a_comms_command_that_exists(path):
    unit = _unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0] == INSTALLED
    words = [a for a in argv[1:] if a not in GLOBAL_OPTIONS]
    command = []
    for word in words:
        if word.startswith("-") or "%" in word:
            break
        command.append(word)
    assert command, argv
    shown = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", *command,
                            "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in shown.stdout, f"{path.name}: {option} is not an option of {command}"
    assert path.name in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_systemd_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` where it is installed (the installed path of ``comms`` is
    replaced by this checkout's, which must exist for systemd to accept the unit)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # the INI checks above still ran
        return
    comms = Path(sys.prefix) / "bin" / "comms"
    assert comms.exists()
    names = []
    for path in UNITS:
        text = path.read_text(encoding="utf-8").replace(INSTALLED, str(comms))
        name = path.name.replace("@.service", "@sms-1.service")
        (tmp_path / name).write_text(text, encoding="utf-8")
        if name != path.name:
            (tmp_path / path.name).write_text(text, encoding="utf-8")
        names.append(str(tmp_path / name))
    proc = subprocess.run([analyze, "verify", *names], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
