"""The README's tour, run as written on a fresh copy of the checkout: it cannot drift again.

Every block marked ```` ```sh tour ```` (and ```` ```python tour ````) is run in README order
in one shell, in a fresh copy of the tracked files, with the test's own virtualenv standing in
for the ``.venv`` that ``make demo`` would create. A command that exits non-zero, or output
holding a ``Traceback``, fails the test. ``make test`` is dry-run (``make -n``): running the
suite from inside the suite would recurse.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(sh|python) tour\n(.*?)^```$", re.S | re.M)


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(readme)]


def tour_script(readme: str, python: str) -> str:
    lines = ["set -euo pipefail", "set -x"]
    for n, (kind, body) in enumerate(tour_blocks(readme)):
        if kind == "python":
            lines.append(f"{shlex.quote(python)} - <<'TOUR_PY_{n}'\n{body}TOUR_PY_{n}")
        else:
            lines.append(re.sub(r"^make test\b", "make -n test", body, flags=re.M))
    return "\n".join(lines) + "\n"


def fresh_copy(dest: Path) -> None:
    """The checkout's files as a fresh clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    # `make demo` finds its .venv installed (the test's own), so it installs nothing: the
    # stamps must be newer than the files they depend on.
    (dest / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    for name in ("setup.cfg", "pyproject.toml"):
        os.utime(dest / name, (0, 0))


def test_readme_blocks_marked_as_the_tour_start_with_demo_then_test():
    blocks = tour_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = [line.split("#")[0].strip() for _, body in blocks[:1] for line in body.splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert len(blocks) >= 5


@pytest.mark.slow  # about a minute: the demo and some forty commands
def test_readme_tour_runs_as_written(tmp_path):
    if not (Path(sys.prefix) / "bin" / "comms").exists():
        raise AssertionError(f"no comms script in {sys.prefix}: install the package first")
    checkout = tmp_path / "checkout"
    fresh_copy(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    env["PYTHONPATH"] = str(checkout)  # the copy's code, not the editable install's
    assert subprocess.run(["make", "-q", ".venv/.installed"], cwd=checkout, env=env).returncode \
        == 0, "make would install into the test's virtualenv"
    script = tour_script((checkout / "README.md").read_text(encoding="utf-8"), sys.executable)
    proc = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the README tour failed:\n{output[-6000:]}"
    assert "Traceback" not in output, output[-6000:]
    assert (checkout / "var" / "comms.db").exists()
