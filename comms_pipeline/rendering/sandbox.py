"""What a template may touch: the policy the patched Velocity grammar enforces.

airspeed on its own resolves ``$x.name`` with ``getattr`` and calls whatever it finds, so
``$x.__class__.__mro__`` and ``$x.format(...)`` reach Python internals. The grammar in
:mod:`comms_pipeline.rendering.velocity` routes every name lookup, method call, index, operator
and output write through the functions below instead:

* names beginning with ``_`` are refused (attributes, keys, indexes, ``#set`` targets);
* data is looked up by key in mappings only, never by ``getattr`` (dates expose year/month/day);
* a call is allowed only for a short list of pure Velocity-style methods per data type and for
  the listed methods of :class:`Helper` objects (the ``$fmt`` formatters);
* operators refuse string repetition and ``%`` formatting, and cap numbers and lengths;
* output size, loop sizes, macro depth, render time and the bytes a render produces are
  capped by a per-render :class:`Budget` (breach -> :class:`SandboxError`, reported as a
  ``TemplateError``). Time is charged on every evaluation step (a value, an operator, a call,
  a literal), weighted by the text or list it works on, and the clock is read every
  :data:`STEP_CHECK` units, so no single expression can run past the limit; memory is charged
  for every string, list and map the sandbox makes (call results, ``+``, literals) and given
  back when a value is freed (a variable set anew, a loop iteration's own variables, a value
  made only to be written), so a template cannot keep thousands of large distinct values alive
  while building a list or a text step by step stays within the budget.
"""

from __future__ import annotations

import contextvars
import html
import operator
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any, ClassVar


class SandboxError(Exception):
    """The template tried something the sandbox does not allow."""


class SafeHtml(str):
    """Markup written by the template author or built by our helpers: not escaped again."""

    __slots__ = ()



@dataclass(frozen=True)
class Limits:
    max_output: int = 1_000_000
    timeout: float = 2.0
    max_items: int = 10_000
    max_depth: int = 32
    max_int_bits: int = 256
    #: Bytes of strings, lists and maps a render may produce in all (never freed while it runs).
    max_memory: int = 32 * 1024 * 1024


DEFAULT_LIMITS = Limits()
#: Values whose bytes a render is charged for (exact types: checked on a hot path).
_HELD_TYPES = frozenset({str, SafeHtml, list, dict, tuple})
#: Work units (a step, or about 1 KB of text scanned) between two looks at the clock.
STEP_CHECK = 1024


class Budget:
    """Per-render allowance of output, time, memory and macro depth; ``html`` selects
    escaping.

    ``required`` (the data roots whose values must be there, see
    :func:`comms_pipeline.rendering.context.required_roots`) turns on the missing-data check:
    every reference under such a root that renders nothing is noted in ``missing`` (``tags``
    are the offsets of the translated ``#entity.field`` tags, told apart from an author's own
    quiet ``$!{...}``, which stays optional).
    """

    __slots__ = ("deadline", "depth", "held", "html", "left", "limits", "missing",
                 "release_above", "required", "steps", "tags", "writes")

    def __init__(self, limits: Limits = DEFAULT_LIMITS, html: bool = False,
                 required: frozenset[str] | None = None,
                 tags: frozenset[int] = frozenset()) -> None:
        self.limits = limits
        self.html = html
        self.left = limits.max_output
        self.depth = 0
        self.writes = 0
        self.steps = STEP_CHECK
        self.held = 0
        #: Freed values are looked for only above this (an eighth of the budget): cheap paths.
        self.release_above = limits.max_memory >> 3
        self.deadline = time.monotonic() + limits.timeout
        self.required = required
        self.tags = tags
        self.missing: dict[str, None] = {}

    def note_missing(self, path: tuple[str, ...]) -> None:
        """Remember ``path`` when its root is one whose data must be there."""
        if self.required is not None and path and path[0] in self.required:
            self.missing["#" + ".".join(path)] = None

    def spend(self, chars: int) -> None:
        """Charge ``chars`` of output; look at the clock every 32 writes."""
        self.left -= chars
        if self.left < 0:
            raise SandboxError(f"output exceeds {self.limits.max_output} characters")
        self.writes += 1
        if not self.writes & 31:
            self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise SandboxError(f"rendering took longer than {self.limits.timeout:g} s")

    def step(self, cost: int = 1) -> None:
        """Charge ``cost`` units of work; look at the clock every :data:`STEP_CHECK` units."""
        self.steps -= cost
        if self.steps < 0:
            self.steps = STEP_CHECK
            self.tick()

    def hold(self, value: Any) -> Any:
        """Charge the bytes of a string, list or map the render made; return ``value``."""
        if type(value) in _HELD_TYPES:
            size = sys.getsizeof(value)
            self.held += size
            if self.held > self.limits.max_memory:
                raise SandboxError(f"the template holds more than "
                                   f"{self.limits.max_memory // (1024 * 1024)} MB of values")
            self.steps -= 1 + (size >> 10)
            if self.steps < 0:
                self.step(0)
        return value

    def release(self, value: Any) -> None:
        """A value the render made is no longer held (a variable set anew freed it)."""
        self.held = max(0, self.held - sys.getsizeof(value))


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "comms_render_budget", default=None)


def current() -> Budget:
    """The budget of the render in progress (a fresh default one outside any render)."""
    budget = _current.get()
    return budget if budget is not None else Budget()


def activate(budget: Budget) -> contextvars.Token:
    return _current.set(budget)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def rendering_html() -> bool:
    budget = _current.get()
    return bool(budget and budget.html)


class Helper:
    """Base of objects offered to templates whose ``template_methods`` may be called."""

    template_methods: ClassVar[frozenset[str]] = frozenset()

    def __str__(self) -> str:
        return ""


# --- names, calls, indexes -----------------------------------------------------------------

DATE_ATTRIBUTES = frozenset({"year", "month", "day"})
DATETIME_ATTRIBUTES = DATE_ATTRIBUTES | {"hour", "minute", "second"}


def _refuse_private(name: Any) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise SandboxError(f"names beginning with '_' are not allowed ({name!r})")


def lookup(obj: Any, name: str) -> Any:
    """``$obj.name`` without a call: a key of a mapping, a date part, else nothing."""
    if name[:1] == "_":
        _refuse_private(name)
    if isinstance(obj, dict):  # the common case, before the slower ABC check below
        try:
            return obj[name]
        except KeyError:
            return None
    if isinstance(obj, Mapping):
        try:
            return obj[name]
        except (KeyError, TypeError):
            return None
    if isinstance(obj, datetime):
        return getattr(obj, name) if name in DATETIME_ATTRIBUTES else None
    if isinstance(obj, date):
        return getattr(obj, name) if name in DATE_ATTRIBUTES else None
    return None


def index(obj: Any, key: Any) -> Any:
    """``$obj[key]``: mapping keys and integer positions only."""
    _refuse_private(key)
    if isinstance(obj, Mapping):
        try:
            return obj[key]
        except (KeyError, TypeError):
            return None
    if isinstance(obj, list | tuple | str | range):
        if not isinstance(key, int) or isinstance(key, bool):
            raise SandboxError(f"a list index must be a whole number, not {kind(key)}")
        try:
            return obj[key]
        except IndexError:
            return None
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else display(value)


def _substring(s: str, start: int, end: int | None = None) -> str:
    return s[start:end]


def _replace(s: str, old: Any, new: Any) -> str:
    old, new = _text(old), _text(new)
    if not old:
        return s
    grown = s.count(old) * (len(new) - len(old))
    if len(s) + grown > current().limits.max_output:
        raise SandboxError("replace() result is too long")
    return s.replace(old, new)


STR_METHODS: dict[str, Callable[..., Any]] = {
    "length": len,
    "isEmpty": lambda s: not s,
    "toUpperCase": str.upper,
    "toLowerCase": str.lower,
    "trim": str.strip,
    "startsWith": lambda s, p: s.startswith(_text(p)),
    "endsWith": lambda s, p: s.endswith(_text(p)),
    "contains": lambda s, p: _text(p) in s,
    "indexOf": lambda s, p: s.find(_text(p)),
    "equals": lambda s, o: s == o,
    "equalsIgnoreCase": lambda s, o: isinstance(o, str) and s.casefold() == o.casefold(),
    "substring": _substring,
    "replace": _replace,
}
LIST_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda s: not s,
    "get": index,
    "contains": lambda s, v: v in s,
    "indexOf": lambda s, v: list(s).index(v) if v in s else -1,
}
MAP_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda m: not m,
    "get": index,
    "containsKey": lambda m, k: not (isinstance(k, str) and k.startswith("_")) and k in m,
    "keySet": lambda m: [k for k in m if not (isinstance(k, str) and k.startswith("_"))],
}

#: Every method name a template may call on some value (used by validation at save).
ALL_METHOD_NAMES = frozenset(STR_METHODS) | frozenset(LIST_METHODS) | frozenset(MAP_METHODS)


def kind(value: Any) -> str:
    """What a value is, in the words of the template language (never a Python type name)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a yes/no value"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, list | tuple | range):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, Helper):
        return "a helper"
    return "a value"


def _work(value: Any) -> int:
    """Work units of scanning ``value``: one per 256 characters or items it holds."""
    return len(value) >> 8 if type(value) in _HELD_TYPES else 0


def call(obj: Any, name: str, args: list[Any]) -> Any:
    """``$obj.name(args)``: an allow-listed method of plain data or of a :class:`Helper`."""
    if name[:1] == "_":
        _refuse_private(name)
    budget = _current.get() or Budget()
    cost = 1 + (len(obj) >> 8) if type(obj) in _HELD_TYPES else 1
    for arg in args:
        if type(arg) in _HELD_TYPES:
            cost += len(arg) >> 8
    budget.steps -= cost
    if budget.steps < 0:
        budget.step(0)
    if isinstance(obj, Helper):
        if name in type(obj).template_methods:
            return budget.hold(getattr(obj, name)(*args))
    else:
        table: Mapping[str, Callable[..., Any]] | None = None
        if isinstance(obj, str):
            table = STR_METHODS
        elif isinstance(obj, Mapping):
            table = MAP_METHODS
        elif isinstance(obj, list | tuple | range):
            table = LIST_METHODS
        if table is not None and name in table:
            return budget.hold(table[name](obj, *args))
    if obj is None:
        return None
    raise SandboxError(f"method {name}() is not allowed on {kind(obj)}")


def check_size(value: Any) -> Any:
    """Refuse a list or map a template builds that holds more than ``max_items`` values in
    all, counting every level, shared parts as often as they appear: ``[$a, $a]`` nested
    thirty deep is a few bytes but a billion values to compare or print."""
    limit = current().limits.max_items
    seen: dict[int, int] = {}

    def weight(v: Any) -> int:
        if isinstance(v, range):
            return len(v)
        if isinstance(v, list | tuple):
            items: Iterable[Any] = v
        elif isinstance(v, Mapping):
            items = v.values()
        else:
            return 1
        if id(v) in seen:
            return seen[id(v)]
        total = 1
        for item in items:
            total += weight(item)
            if total > limit:
                raise SandboxError(f"a list or map holding more than {limit} values in all")
        seen[id(v)] = total
        return total

    weight(value)
    return value


# --- operators -----------------------------------------------------------------------------

_NUMBERS = (int, float, Decimal)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBERS)


def _check_number(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > current().limits.max_int_bits:
        raise SandboxError("number too large")
    return value


def _numbers_only(symbol: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (_is_number(a) and _is_number(b)):
            raise SandboxError(f"'{symbol}' needs two numbers, not {kind(a)} and {kind(b)}")
        if symbol == "*" and isinstance(a, int) and isinstance(b, int) \
                and a.bit_length() + b.bit_length() > current().limits.max_int_bits:
            raise SandboxError("number too large")
        try:
            return _check_number(fn(a, b))
        except ZeroDivisionError:
            raise SandboxError("division by zero") from None
        except (ArithmeticError, ValueError):
            raise SandboxError(f"'{symbol}' cannot be computed for these numbers") from None
    return apply


_CONTAINERS = (list, tuple, dict, range)


def stepped(symbol: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """An operator charged to the budget: a step, and a look at the clock before comparing
    lists or maps (whose comparison walks everything they hold)."""
    def apply(a: Any, b: Any) -> Any:
        budget = current()
        if isinstance(a, _CONTAINERS) or isinstance(b, _CONTAINERS):
            budget.tick()
        budget.step(1 + _work(a) + _work(b))
        try:
            return fn(a, b)
        except SandboxError:
            raise
        except (TypeError, ArithmeticError, ValueError):
            raise SandboxError(f"'{symbol}' cannot compare {kind(a)} and {kind(b)}") from None
    return apply


def _escape_part(value: str) -> str:
    return value if isinstance(value, SafeHtml) else html.escape(value)


def add(a: Any, b: Any) -> Any:
    """Velocity's ``+``: numbers add; a string with anything concatenates; lists join."""
    if isinstance(a, str) or isinstance(b, str):
        left, right = _text(a), _text(b)
        if len(left) + len(right) > current().limits.max_output:
            raise SandboxError("string too long")
        if rendering_html() and (isinstance(a, SafeHtml) or isinstance(b, SafeHtml)):
            return current().hold(SafeHtml(_escape_part(left) + _escape_part(right)))
        return current().hold(str.__add__(str(left), str(right)))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) + len(b) > current().limits.max_items:
            raise SandboxError("list too long")
        return current().hold(a + b)
    if _is_number(a) and _is_number(b):
        return _check_number(a + b)
    raise SandboxError(f"'+' cannot combine {kind(a)} and {kind(b)}")


OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": add,
    "-": _numbers_only("-", operator.sub),
    "*": _numbers_only("*", operator.mul),
    "/": _numbers_only("/", operator.floordiv),
    "%": _numbers_only("%", operator.mod),
}


# --- output --------------------------------------------------------------------------------

def display(value: Any) -> str:
    """How a value reads in the output (before HTML escaping)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | range):
        return join_capped(", ", (display(v) for v in value))
    if isinstance(value, Mapping):
        return join_capped(", ", (f"{display(k)}: {display(v)}" for k, v in value.items()))
    if isinstance(value, int | float | Decimal | date | dt_time):
        return str(value)
    return ""  # a helper or anything else that is not plain data never shows as its repr


def join_capped(separator: str, texts: Iterable[str]) -> str:
    """``separator.join(texts)``, refused before it grows past the output limit."""
    limit = current().limits.max_output
    parts, size = [], 0
    for text in texts:
        size += len(text) + len(separator)
        if size > limit + len(separator):
            raise SandboxError(f"value longer than {limit} characters")
        parts.append(text)
    return separator.join(parts)


def output(value: Any, in_html: bool) -> str:
    """The text written for a reference: displayed, and escaped in an HTML body."""
    text = value if type(value) is str else display(value)
    if in_html and type(value) is not SafeHtml:
        return html.escape(text)
    return text
