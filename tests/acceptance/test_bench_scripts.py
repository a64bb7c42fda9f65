"""Every benchmark script still runs against the package as it is now: its imports resolve
and its --help answers (``make bench`` runs them all; a moved module must not break one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")
                                          if p.name != "common.py"))
def test_the_benchmark_answers_help(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=BENCH.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
