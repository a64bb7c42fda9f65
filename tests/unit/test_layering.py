"""The layers hold: the import-linter contracts of ``pyproject.toml`` are kept (the same check
``make lint`` runs), and the core's modules import nothing else of the package when loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_loading_the_settings_loads_no_stage_and_no_renderer():
    code = ("import json, sys; import comms_pipeline.settings.config; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('comms_pipeline'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    loaded = json.loads(out)
    assert all(m.startswith(("comms_pipeline.core", "comms_pipeline.settings"))
               or m == "comms_pipeline" for m in loaded), loaded
    every = "import sys, comms_pipeline.settings.config; print(list(sys.modules))"
    assert "airspeed" not in subprocess.run([sys.executable, "-c", every], cwd=ROOT,
                                            capture_output=True, text=True, check=True).stdout
