"""Values a request may carry: text that is valid Unicode without NUL, numbers that are finite.

A lone surrogate (``"x\\ud800y"``, which JSON's ``\\ud800`` escape makes), a NUL character,
NaN or an infinity pass through Python and JSON but not through the database or a gateway:
accepted, they would fail later, far from the caller, in the Comms Monitor's insert. Every
entry point (Web API, CLI, Python API) refuses them with the same words and the value's path
(``params.amount``); the monitor checks headers written by SQL the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00\ud800-\udfff]")


class InvalidValue(ValueError):
    """A value no communication request may hold; ``path`` says where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character, which text may not hold"
    if _SURROGATE.search(value):
        return "is not valid Unicode text (it holds an unpaired surrogate)"
    return None


def printable(text: str) -> str:
    """``text`` with NULs and lone surrogates written as escapes, safe to print and encode."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def number_problem(value: float) -> str | None:
    if math.isnan(value):
        return "is not a number (NaN); numbers must be finite"
    if math.isinf(value):
        return "is infinite; numbers must be finite"
    return None


def problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``(path, problem)`` in a JSON-like value (names of mappings are checked too)."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        why = text_problem(value)
        if why:
            found.append((path, why))
    elif isinstance(value, float):
        why = number_problem(value)
        if why:
            found.append((path, why))
    elif isinstance(value, Mapping):
        for name, item in value.items():
            where = f"{path}.{printable(str(name))}" if path else printable(str(name))
            if isinstance(name, str) and (why := text_problem(name)):
                found.append((where, f"the name {why}"))
            found.extend(problems(item, where))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found.extend(problems(item, f"{path}.{i}" if path else str(i)))
    return found


def check(value: Any, path: str = "") -> None:
    """Raise :class:`InvalidValue` at the first value no request may hold."""
    found = problems(value, path)
    if found:
        raise InvalidValue(*found[0])


def check_fields(**fields: Any) -> None:
    """:func:`check` each named field (``check_fields(contact_ref=..., params=...)``)."""
    for name, value in fields.items():
        if value is not None:
            check(value, name)
