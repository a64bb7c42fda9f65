"""``comms templates add`` on hostile sources, as a real CLI child process under resource
limits, on SQLite and PostgreSQL: a source that used to hang the command for minutes (rows of
unclosed ``#*`` comments or of unclosed directives) is refused with a clear message, within
the child's CPU and address-space limits; a good template is still added."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_SECONDS = 60  # the child is killed past this: a budget, far above what a refusal takes
ADDRESS_SPACE = 2 * 1024 ** 3


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _template_dir(tmp_path: Path, code: str, html: str) -> Path:
    folder = tmp_path / code.lower()
    folder.mkdir()
    (folder / "template.toml").write_text(f'code = "{code}"\nname = "Hostile"\nmedia = "email"\n',
                                          encoding="utf-8")
    (folder / "en.subject").write_text("Hello", encoding="utf-8")
    (folder / "en.html").write_text(html, encoding="utf-8")
    return folder


def _add(settings, folder: Path) -> tuple[subprocess.CompletedProcess, float]:  # type: ignore[no-untyped-def]
    """``comms templates add`` in a child with CPU and memory limits; its result and its own
    peak RSS in MB (from wait4: RUSAGE_CHILDREN is the largest of every child the session
    has waited for, a stranger's included)."""
    env = {**os.environ, "COMMS_DATABASE_URL": settings.database_url,
           "COMMS_PATHS_VAR": str(folder.parent / "var"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [
               os.environ.get("PYTHONPATH")])])}
    args = [sys.executable, "-m", "comms_pipeline.cli.main", "templates", "add", str(folder)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=err,
                                preexec_fn=_limits)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, proc.returncode,
                                             out.read().decode(errors="replace"),
                                             err.read().decode(errors="replace"))
    return result, usage.ru_maxrss / 1024


@pytest.mark.parametrize("html, message", [
    ("<p>a #* b " * 45_000, "never closed"),           # 450 KB: minutes of parsing before
    ("#if(" * 120_000, "too complex to read"),          # 480 KB of unclosed directives
])
def test_a_hostile_source_is_refused_not_parsed_for_minutes(settings, tmp_path, html,
                                                            message) -> None:
    result, peak_mb = _add(settings, _template_dir(tmp_path, "HOSTILE", html))
    assert result.returncode == 1, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert peak_mb < 500


def test_a_good_template_is_still_added(settings, tmp_path) -> None:
    result, _ = _add(settings, _template_dir(
        tmp_path, "GOOD", "<p>Dear #contact_information.name #* a note *#</p>"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "added template GOOD" in result.stdout
