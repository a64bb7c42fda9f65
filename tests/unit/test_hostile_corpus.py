"""The hostile corpus (:mod:`tests.unit.hostile_corpus`), run in a child process.

Every payload must end within its budgets: rendered, or refused with a message in the
product's words (a budget's own words where the payload attacks a budget), with the child's
peak RSS growing by no more than :data:`~tests.unit.hostile_corpus.PAYLOAD_RSS_MB` and no
payload running into the child's per-payload alarm or its address-space cap. The seconds the
child reports are for reading, not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.unit.hostile_corpus import (
    BUDGET_WORDS,
    LEAKS,
    PAYLOAD_RSS_MB,
    PAYLOADS,
    Payload,
)

ROOT = Path(__file__).resolve().parents[2]


def _problems(payload: Payload, result: dict) -> list[str]:
    outcome, message = result["outcome"], result["message"]
    found = []
    if outcome not in ("ok", "refused"):
        found.append(f"{outcome} {message}")
    elif payload.expect == "error" and outcome != "refused":
        found.append("should have been refused")
    elif payload.expect == "ok" and outcome != "ok":
        found.append(f"should have rendered: {message}")
    elif outcome == "refused" and payload.expect == "error" and not any(
            word in message for word in (payload.words or BUDGET_WORDS)):
        found.append(f"refused, but not for the expected reason: {message}")
    found += [f"shows {leak!r}: {message[:200]}" for leak in LEAKS if leak in message]
    if payload.kind == "html_template" and outcome == "ok" and "<script" in message:
        found.append("a value's markup reached an HTML body unescaped")
    if result["rss_growth_mb"] > PAYLOAD_RSS_MB:
        found.append(f"peak RSS grew by {result['rss_growth_mb']} MB")
    return found


def test_the_corpus_is_large_and_named_uniquely() -> None:
    names = [p.name for p in PAYLOADS]
    assert len(names) >= 60 and len(set(names)) == len(names)


def test_every_hostile_payload_ends_within_its_budgets() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    child = subprocess.run([sys.executable, "-m", "tests.unit.hostile_corpus"], cwd=ROOT,
                           env=env, capture_output=True, text=True,
                           timeout=600)  # a hang guard for the whole corpus
    assert child.returncode == 0, child.stderr[-3000:]
    results = {r["name"]: r for r in map(json.loads, child.stdout.splitlines())}
    assert set(results) == {p.name for p in PAYLOADS}
    failures = [f"{p.name}: {problem}" for p in PAYLOADS
                for problem in _problems(p, results[p.name])]
    assert not failures, "\n".join(failures)
