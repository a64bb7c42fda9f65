"""Layering rules, enforced: jobs and daemons never import each other, and nothing below the
shells (CLI, Web API) imports them. Read from the source with ast, no imports executed."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "comms_pipeline"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py")) if sub else sorted(PACKAGE.glob("*.py"))


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(PACKAGE)} imports {m}" for p in paths for m in _imports(p)
            if m.startswith(forbidden)]


def test_jobs_and_daemons_never_import_each_other():
    assert _violations(_modules("jobs"), ("comms_pipeline.daemons",)) == []
    assert _violations(_modules("daemons"), ("comms_pipeline.jobs",)) == []


def test_nothing_below_the_shells_imports_them():
    shells = ("comms_pipeline.cli", "comms_pipeline.web.app", "comms_pipeline.web.routes")
    below = [p for sub in ("", "jobs", "daemons", "gateways", "rendering", "notifications")
             for p in _modules(sub)]
    assert _violations(below, shells) == []


def test_gateways_know_nothing_of_the_queue():
    """Backends translate library errors into ours; claiming and states are not their job."""
    assert _violations(_modules("gateways"), ("comms_pipeline.queue.claims", "comms_pipeline.jobs",
                                              "comms_pipeline.daemons",
                                              "comms_pipeline.queue.runner")) == []
