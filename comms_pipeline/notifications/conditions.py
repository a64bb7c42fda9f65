"""Conditions of notification types and event rules, evaluated on a recipient's data.

A condition names a field by its dotted path in the recipient's data
(``accounts_receivable.outstanding_amount``, ``payment.amount``), an operator and a value::

    {field = "accounts_receivable.outstanding_amount", op = "more_than", value = 0}
    {field = "due_date", op = "due_days_ago", value = 1}

Operators: ``more_than`` (inclusive, as the seeds require for balances: "more than 0" holds for
0), ``less_than`` (strict), ``at_most`` (inclusive), ``equals``, ``not_equals``, ``in``,
``not_in``, ``is_set``, ``is_not_set`` and ``due_days_ago`` (the date lies at least N days in
the past). Amounts compare as decimals, dates as dates.

A list of conditions means *all* must hold for a notification type and *at least one* for an
event rule (the seeds' wording for each); ``{any = [...]}`` or ``{all = [...]}`` says it
explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from comms_pipeline.core.errors import CommsError

OPS = ("more_than", "less_than", "at_most", "equals", "not_equals", "in", "not_in", "is_set",
       "is_not_set", "due_days_ago")
ALIASES = {"at_least": "more_than", "equal_or_more_than": "more_than", ">=": "more_than",
           "<": "less_than", "<=": "at_most", "==": "equals", "=": "equals", "!=": "not_equals"}
NO_VALUE = ("is_set", "is_not_set")
WORDS = {"more_than": "more than (or equal to)", "less_than": "less than",
         "at_most": "at most", "equals": "equal to", "not_equals": "different from",
         "in": "one of", "not_in": "none of", "due_days_ago": "due at least N days ago"}


class ConditionError(CommsError):
    """A condition is malformed."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any = None

    @cached_property
    def expected(self) -> tuple[Decimal | None, date | None]:
        """The value as a decimal and as a date, parsed once (conditions run per recipient)."""
        return _decimal(self.value), _date(self.value)

    def describe(self) -> str:
        if self.op in NO_VALUE:
            return f"{self.field} {'is set' if self.op == 'is_set' else 'is not set'}"
        if self.op == "due_days_ago":
            return f"{self.field} due at least {self.value} day(s) ago"
        return f"{self.field} {WORDS[self.op]} {self.value}"


@dataclass(frozen=True)
class ConditionSet:
    mode: str  # "all" or "any"
    items: tuple[Condition, ...]

    def __bool__(self) -> bool:
        return bool(self.items)


def parse(raw: Any, default_mode: str = "all") -> ConditionSet:
    """Validate conditions as stored (a list, or ``{"any"|"all": [...]}``)."""
    if raw is None:
        return ConditionSet(default_mode, ())
    mode = default_mode
    if isinstance(raw, Mapping):
        keys = set(raw) & {"any", "all"}
        if len(keys) != 1 or len(raw) != 1:
            raise ConditionError("conditions: a list, or a table with exactly one of any / all")
        mode = keys.pop()
        raw = raw[mode]
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConditionError("conditions must be a list of {field, op, value}")
    return ConditionSet(mode, tuple(_one(item) for item in raw))


def _one(item: Any) -> Condition:
    if not isinstance(item, Mapping) or not item.get("field") or not item.get("op"):
        raise ConditionError(f"condition {item!r}: needs field and op")
    extra = set(item) - {"field", "op", "value"}
    if extra:
        raise ConditionError(f"condition {item!r}: unknown key(s) {', '.join(sorted(extra))}")
    op = ALIASES.get(str(item["op"]), str(item["op"]))
    if op not in OPS:
        raise ConditionError(f"condition on {item['field']!r}: unknown operator {item['op']!r}"
                             f" (known: {', '.join(OPS)})")
    value = item.get("value")
    if op not in NO_VALUE and value is None:
        raise ConditionError(f"condition on {item['field']!r}: {op} needs a value")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ConditionError(f"condition on {item['field']!r}: {op} needs a list")
    if op == "due_days_ago" and (not isinstance(value, int) or value < 0):
        raise ConditionError(f"condition on {item['field']!r}: due_days_ago needs a whole "
                             f"number of days")
    return Condition(str(item["field"]), op, value)


def dump(conditions: ConditionSet) -> list[dict[str, Any]] | dict[str, Any]:
    items = [{"field": c.field, "op": c.op, **({} if c.op in NO_VALUE else {"value": c.value})}
             for c in conditions.items]
    return items if conditions.mode == "all" else {"any": items}


def lookup(data: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted path, or ``None`` when any step is missing."""
    current: Any = data
    for step in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(step)
    return current


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).date()
        except ValueError:
            return None
    return None


def _compare(actual: Any, expected: Any,
             parsed: tuple[Decimal | None, date | None] | None = None) -> int | None:
    """-1 / 0 / 1 comparing as decimals, else as dates; ``None`` when not comparable."""
    as_decimal, as_date = parsed or (_decimal(expected), _date(expected))
    a: Any = _decimal(actual)
    b: Any = as_decimal
    if a is None or b is None:
        a, b = _date(actual), as_date
    if a is None or b is None:
        return None
    return (a > b) - (a < b)


def _equal(actual: Any, expected: Any) -> bool:
    order = _compare(actual, expected)
    if order is not None:
        return order == 0
    return str(actual) == str(expected) if actual is not None else expected is None


def holds(condition: Condition, data: Mapping[str, Any] | None, today: date) -> bool:
    actual = lookup(data, condition.field)
    op, value = condition.op, condition.value
    if op == "is_set":
        return actual not in (None, "")
    if op == "is_not_set":
        return actual in (None, "")
    if actual is None:
        return False
    if op == "equals":
        return _equal(actual, value)
    if op == "not_equals":
        return not _equal(actual, value)
    if op == "in":
        return any(_equal(actual, v) for v in value)
    if op == "not_in":
        return not any(_equal(actual, v) for v in value)
    if op == "due_days_ago":
        due = _date(actual)
        return due is not None and due <= today - timedelta(days=int(value))
    order = _compare(actual, value, condition.expected)
    if order is None:
        return False
    return {"more_than": order >= 0, "less_than": order < 0, "at_most": order <= 0}[op]


def evaluate(conditions: ConditionSet, data: Mapping[str, Any] | None,
             today: date | None = None) -> str | None:
    """``None`` when the conditions are met, else the reason they are not (for the record)."""
    if not conditions:
        return None
    today = today or date.today()
    failed = [c for c in conditions.items if not holds(c, data, today)]
    if conditions.mode == "any":
        if len(failed) < len(conditions.items):
            return None
        return "none of the conditions holds: " + "; ".join(
            _why(c, data) for c in conditions.items)
    return "; ".join(_why(c, data) for c in failed) or None


def _why(c: Condition, data: Mapping[str, Any] | None) -> str:
    actual = lookup(data, c.field)
    shown = "missing" if actual is None else repr(actual)
    return f"{c.field} is {shown}, not {c.describe().removeprefix(c.field + ' ')}"
