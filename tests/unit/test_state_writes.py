"""Every change of a header's or a detail's state goes through the queue package (its state
machine, with its history row): no module outside ``comms_pipeline/queue/`` inserts or
updates those tables itself. Read from the source with ast; nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "comms_pipeline"
TABLES = {"headers_t", "details_t"}
#: store.dialect's writers, which take the connection first and the table second.
TABLE_SECOND = ("bulk_insert", "insert_for", "insert_ignore", "upsert")
RAW_SQL = re.compile(r"\b(INSERT\s+INTO|UPDATE)\s+request_(headers|details)\b", re.I)
#: The two writes outside the queue package, by ``path: call``, and why they may be there.
NO_STATE = {
    # the receipt's status words (gateway_status, delivered_at); the state moves through
    # transition_rows
    "pipeline/receipts.py: update(details_t)",
    # a run's headers are born by one INSERT … SELECT per batch; their births are recorded by
    # queue.births.record_births_where in the same transaction (notifications/runs.py)
    "notifications/batch.py: SQL INSERT INTO request_headers",
}


def _writes(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("insert", "update", *TABLE_SECOND) and node.args:
                target = node.args[1] if name in TABLE_SECOND and len(node.args) > 1 \
                    else node.args[0]
                if isinstance(target, ast.Name) and target.id in TABLES:
                    found.append(f"{name}({target.id})")
            if isinstance(func, ast.Attribute) and func.attr in ("insert", "update") \
                    and isinstance(func.value, ast.Name) and func.value.id in TABLES:
                found.append(f"{func.value.id}.{func.attr}()")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and RAW_SQL.search(node.value):
            found.append("SQL " + RAW_SQL.search(node.value).group(0))
    return found


def test_no_module_outside_the_queue_package_writes_a_state():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("queue/"):
            continue
        offenders += [f"{rel}: {w}" for w in _writes(path) if f"{rel}: {w}" not in NO_STATE]
    assert offenders == []
