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
* output size, loop sizes, macro depth and render time are capped by a per-render
  :class:`Budget` (breach -> :class:`SandboxError`, reported as a ``TemplateError``).
"""

from __future__ import annotations

import contextvars
import html
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
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


DEFAULT_LIMITS = Limits()


class Budget:
    """Per-render allowance of output, time and macro depth; ``html`` selects escaping.

    ``required`` (the data roots whose values must be there, see
    :func:`comms_pipeline.rendering.context.required_roots`) turns on the missing-data check:
    every reference under such a root that renders nothing is noted in ``missing`` (``tags``
    are the offsets of the translated ``#entity.field`` tags, told apart from an author's own
    quiet ``$!{...}``, which stays optional).
    """

    __slots__ = ("deadline", "depth", "html", "left", "limits", "missing", "required", "tags",
                 "writes")

    def __init__(self, limits: Limits = DEFAULT_LIMITS, html: bool = False,
                 required: frozenset[str] | None = None,
                 tags: frozenset[int] = frozenset()) -> None:
        self.limits = limits
        self.html = html
        self.left = limits.max_output
        self.depth = 0
        self.writes = 0
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
            raise SandboxError(f"a list index must be an integer, not {type(key).__name__}")
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


def call(obj: Any, name: str, args: list[Any]) -> Any:
    """``$obj.name(args)``: an allow-listed method of plain data or of a :class:`Helper`."""
    _refuse_private(name)
    if isinstance(obj, Helper):
        if name in type(obj).template_methods:
            return getattr(obj, name)(*args)
    else:
        table: Mapping[str, Callable[..., Any]] | None = None
        if isinstance(obj, str):
            table = STR_METHODS
        elif isinstance(obj, Mapping):
            table = MAP_METHODS
        elif isinstance(obj, list | tuple | range):
            table = LIST_METHODS
        if table is not None and name in table:
            return table[name](obj, *args)
    if obj is None:
        return None
    raise SandboxError(f"method {name}() is not allowed on {type(obj).__name__} values")


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
            raise SandboxError(
                f"'{symbol}' needs two numbers, not {type(a).__name__} and {type(b).__name__}")
        if symbol == "*" and isinstance(a, int) and isinstance(b, int) \
                and a.bit_length() + b.bit_length() > current().limits.max_int_bits:
            raise SandboxError("number too large")
        return _check_number(fn(a, b))
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
            return SafeHtml(_escape_part(left) + _escape_part(right))
        return str.__add__(str(left), str(right))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) + len(b) > current().limits.max_items:
            raise SandboxError("list too long")
        return a + b
    if _is_number(a) and _is_number(b):
        return _check_number(a + b)
    raise SandboxError(f"'+' cannot combine {type(a).__name__} and {type(b).__name__}")


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
    if isinstance(value, Helper):
        return ""
    return str(value)


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
