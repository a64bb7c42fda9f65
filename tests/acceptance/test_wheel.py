"""The wheel an operator installs carries what the product reads at run time: the
migrations (outside the package in a checkout), the built-in templates and the agent page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_migrations_templates_and_static_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("comms_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.relative_to(ROOT / "sql" / "migrations").as_posix()
                  for p in (ROOT / "sql" / "migrations").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts}
    assert {f"comms_pipeline/sql_migrations/{m}" for m in migrations} <= names
    assert not any("__pycache__" in n for n in names)
    assert "comms_pipeline/templates/builtin/payment_receipt/template.toml" in names
    assert "comms_pipeline/web/static/agent.html" in names
