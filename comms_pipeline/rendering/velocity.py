"""A private, sandboxed copy of airspeed's Velocity grammar.

airspeed keeps its grammar as module-level classes that refer to each other by global name.
We load a second copy of the module under our own name and patch that copy where it looks
things up, calls, indexes, computes and writes, routing each through
:mod:`comms_pipeline.rendering.sandbox`. The public ``airspeed`` module stays untouched (the
benchmark merges through it as the bare baseline). Directives that would run text as template
code or read files (``#evaluate``, ``#include``, ``#parse``) are refused when parsing.

This depends on airspeed's internals (checked against airspeed 0.7): ``NameOrCall``,
``SubExpression``, ``FormalReference``, ``SetDirective``, ``ForeachDirective``, ``Range``,
``BinaryOperator``, ``StringLiteral``, ``_FunctionDefinition`` and ``StoppableStream``. A
change there shows up in ``tests/unit/test_sandbox*.py``.
"""

from __future__ import annotations

import contextvars
import importlib.util
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import airspeed

from comms_pipeline.rendering import sandbox
from comms_pipeline.rendering.sandbox import SafeHtml, SandboxError

MAX_SOURCE_CHARS = 500_000
#: What a parse may cost. airspeed's parser backtracks (it tries each kind of element at every
#: position), so some hostile sources are slow to parse although short; such a source is
#: refused rather than parsed for minutes. The cap counts element tries, so it does not depend
#: on how busy the machine is: real templates take one or two tries per character (a dense
#: 500 KB template about 1.1 million); rows of unclosed directives take eight or more.
MAX_PARSE_TRIES = 1_500_000
#: A backstop in seconds, whatever the tries cost.
PARSE_TIMEOUT = 10.0


def _load_private_copy() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "comms_pipeline.rendering._airspeed_grammar", airspeed.__file__)
    if spec is None or spec.loader is None:  # pragma: no cover - airspeed is a plain module
        raise ImportError("cannot load airspeed's grammar")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: A module loaded at run time: its attributes are airspeed's (untyped) grammar classes.
V: Any = _load_private_copy()


class ForbiddenDirective(Exception):
    """A directive that templates may not use; carries the offset it starts at."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


# --- parsing -------------------------------------------------------------------------------

class _Refused(V._Element):
    START = re.compile(r"#(evaluate|include|parse)\b", re.I)

    def parse(self) -> None:
        name, = self.identity_match(self.START)
        raise ForbiddenDirective(
            f"#{name.lower()} is not allowed in templates (values are data, never template "
            "code, and templates cannot read files)", self.start)


V.EvaluateDirective = V.IncludeDirective = V.ParseDirective = _Refused


class _ParseClock:
    __slots__ = ("count", "deadline")

    def __init__(self) -> None:
        self.count = 0
        self.deadline = time.monotonic() + PARSE_TIMEOUT


_parse_clock: contextvars.ContextVar[_ParseClock | None] = contextvars.ContextVar(
    "comms_parse_clock", default=None)
_original_element_init = V._Element.__init__


def _element_init(self: Any, filename: str, text: str, start: int = 0) -> None:
    """Every element tried while parsing: counted, and a look at the clock every 16 tries."""
    clock = _parse_clock.get()
    if clock is not None:
        clock.count += 1
        if clock.count > MAX_PARSE_TRIES or (
                not clock.count & 15 and time.monotonic() > clock.deadline):
            raise ForbiddenDirective(
                "the template is too complex to read; look for directives or brackets that "
                "are never closed", start)
    _original_element_init(self, filename, text, start)


V._Element.__init__ = _element_init


_COMMENT_TOKENS = re.compile(r"##|\\#|#\*|\n")


def unclosed_comment(source: str) -> int | None:
    """The offset of a ``#*`` comment that no ``*#`` closes, found in one linear pass.

    airspeed looks for the end of a block comment from every ``#*``; with no end anywhere
    after it, each try reads to the end of the template, which is quadratic in the number of
    ``#*``. Only a ``#*`` at or after the last ``*#`` (less one: ``#*#`` does not close itself)
    can be unclosed; one inside a ``##`` line comment or escaped (``\\#*``) is text.
    """
    last_close = source.rfind("*#")
    first = max(last_close - 1, 0)
    if source.find("#*", first) < 0:
        return None
    in_line_comment = False
    for token in _COMMENT_TOKENS.finditer(source, first):
        text = token.group()
        if text == "\n":
            in_line_comment = False
        elif text == "##":
            in_line_comment = True
        elif text == "#*" and not in_line_comment:
            return token.start()
    return None


#: A lone ``$`` before a non-reference character is text without eating that character, so
#: ``$#payment.amount`` (a currency sign before a tag) keeps its tag.
V.Text.PLAIN = re.compile(
    r"((?:[^\\\$#]+|\\[\$#])+|\$(?![!\{a-z0-9_])|#$|#[^\{\}a-zA-Z0-9#\*]+|\\.)", re.S | re.I)


# --- evaluation ----------------------------------------------------------------------------

class _BudgetStream:
    """airspeed's StoppableStream, charging every write to the render's budget."""

    __slots__ = ("budget", "parts", "stop")

    def __init__(self, buf: str = "") -> None:
        self.parts = [buf] if buf else []
        self.stop = False
        self.budget = sandbox.current()

    def write(self, s: str) -> int:
        if self.stop:
            return 0
        self.budget.spend(len(s))
        self.parts.append(s)
        return len(s)

    def getvalue(self) -> str:
        return "".join(self.parts)


V.StoppableStream = _BudgetStream


def _run_function(function: Any, params: list[Any], namespace: Any, loader: Any) -> str:
    """A ``#define`` block or macro used as a value: its output was written through the
    sandbox (values escaped in HTML), so in HTML it is markup already, not text to escape."""
    stream = _BudgetStream()
    function.execute_function(stream, namespace, params, loader)
    text = stream.getvalue()
    return stream.budget.hold(SafeHtml(text) if sandbox.rendering_html() else text)


def _name_or_call(self: Any, current_object: Any, loader: Any, top_namespace: Any) -> Any:
    name = self.name
    if self.parameters is None and self.index is None and type(current_object) in _DICTS \
            and name[0] != "_":  # fast path for the common ``$entity.field``
        try:
            value = current_object[name]
        except KeyError:
            return None
        if type(value) in _FUNCTIONS:
            return _run_function(value, [], top_namespace, loader)
        return value
    if self.parameters is not None:
        args = self.parameters.calculate(top_namespace, loader)
        if isinstance(current_object, V.LocalNamespace):
            function = sandbox.lookup(current_object, name)
            if type(function) in _FUNCTIONS:
                return _run_function(function, args, top_namespace, loader)
            raise SandboxError(f"${name}(...) is not a function")
        if isinstance(current_object, sandbox.Helper) and name != "default":
            _note_missing_argument(self.parameters, args)
        return sandbox.call(current_object, name, args)
    value = sandbox.lookup(current_object, name)
    if type(value) in _FUNCTIONS:
        return _run_function(value, [], top_namespace, loader)
    if self.index is not None:
        value = sandbox.index(value, self.index.calculate(top_namespace, loader))
    return value


def _sub_expression(self: Any, current_object: Any, loader: Any, global_namespace: Any) -> Any:
    if type(self.expression) is not V.ArrayIndex:
        return self.expression.calculate(current_object, loader, global_namespace)
    result = sandbox.index(current_object, self.expression.calculate(current_object, loader))
    if self.subexpression:
        result = self.subexpression.calculate(result, loader, global_namespace)
    return result


def _formal_reference(self: Any, stream: Any, namespace: Any, loader: Any) -> None:
    value = None
    if self.expression is not None:
        value = self.expression.calculate(namespace, loader)
    if value is None:
        if self.alternate is not None:  # ``${x|'fallback'}``: optional by the author's word
            value = self.alternate.calculate(namespace, loader)
        elif self.silent and self.expression is not None:
            budget = stream.budget
            if budget.required is not None and self.start in budget.tags:
                budget.note_missing(reference_path(self))
            return
        else:
            if self.expression is not None and stream.budget.required is not None:
                stream.budget.note_missing(reference_path(self))
            value = SafeHtml(self.my_text())  # the author's own text, shown as written
    elif not value and type(value) in _BLANKS and stream.budget.required is not None \
            and (not self.silent or self.start in stream.budget.tags):
        stream.budget.note_missing(reference_path(self))
    budget = stream.budget
    written = sandbox.output(value, budget.html)
    stream.write(written)
    # A value made only to be written (``$fmt.upper($x)``) is held by the output from now on
    # (charged there), no longer as a value; looked at only when the render holds a fair share
    # of its memory budget, to keep this path cheap. Referring to it: ``value``, getrefcount's
    # argument, and ``written`` with the output's part when the text is the value itself.
    if budget.held > budget.release_above and type(value) in _HELD \
            and sys.getrefcount(value) == (4 if written is value else 2):
        budget.release(value)


#: Values that render as nothing when empty (an empty text, list or map is missing data).
_BLANKS = frozenset({str, list, dict})


def reference_path(element: Any) -> tuple[str, ...]:
    """The plain names of a ``$a.b.c`` reference, up to its first call or index."""
    names: list[str] = []
    expression = element.expression
    while expression is not None:
        part = expression.part
        names.append(part.name)
        sub = expression.subexpression
        if part.parameters is not None or part.index is not None or sub is None:
            break
        expression = sub.expression if isinstance(sub.expression,
                                                  V.VariableExpression) else None
    return tuple(names)


def _note_missing_argument(parameters: Any, args: list[Any]) -> None:
    """A formatter's value (its first argument) that is missing, under a required root.

    ``$fmt.money($bill.total, ...)`` of a missing total would print nothing; it is missing data
    as the tag ``#bill.total`` would be. ``$fmt.default(...)`` is how an author says optional.
    """
    budget = sandbox.current()
    if budget.required is None or not args:
        return
    value = args[0]
    if value is None or (not value and type(value) in _BLANKS):
        values = getattr(parameters.values, "values", None)
        expression = getattr(values[0], "expression", None) if values else None
        if isinstance(expression, V.FormalReference) and expression.expression is not None:
            budget.note_missing(reference_path(expression))


def _set_directive(self: Any, stream: Any, namespace: Any, loader: Any) -> None:
    for term in self.terms:
        if term.startswith("_"):
            raise SandboxError(f"names beginning with '_' are not allowed ({term!r})")
    if len(self.terms) != 1:
        raise SandboxError("#set can only assign a variable, not a field of a value")
    name = self.terms[0]
    value = self.value.calculate(namespace, loader)
    home = namespace.find_outermost(name) if isinstance(namespace, V.LocalNamespace) else None
    previous = dict.get(home, name) if home is not None else None
    namespace.set_inherited(name, value)
    # ``#set($l = $l + [$x])``: the value replaced is freed when nothing else holds it (only
    # ``previous`` and getrefcount's argument do), so the render no longer holds its bytes.
    if type(previous) in _HELD and previous is not value and sys.getrefcount(previous) == 2:
        sandbox.current().release(previous)


def _foreach(self: Any, stream: Any, namespace: Any, loader: Any) -> None:
    if self.loop_var_name.startswith("_"):
        raise SandboxError("names beginning with '_' are not allowed")
    iterable = self.value.calculate(namespace, loader)
    if iterable is None:
        return
    if isinstance(iterable, Mapping):
        iterable = [k for k in iterable if not (isinstance(k, str) and k.startswith("_"))]
    elif not isinstance(iterable, list | tuple | range | str):
        raise SandboxError(f"#foreach cannot loop over {sandbox.kind(iterable)}")
    budget = sandbox.current()
    length = len(iterable)
    if length > budget.limits.max_items:
        raise SandboxError(f"#foreach over {length} items (the limit is "
                           f"{budget.limits.max_items})")
    for counter, item in enumerate(iterable, start=1):
        budget.tick()
        local = V.LocalNamespace(namespace)
        local["velocityCount"] = counter
        local["velocityHasNext"] = counter < length
        local["foreach"] = {"count": counter, "index": counter - 1,
                            "hasNext": counter < length, "first": counter == 1,
                            "last": counter == length}
        local[self.loop_var_name] = item
        self.block.evaluate(stream, local, loader)
        if budget.held > budget.release_above:  # cheap while a render holds little
            _release_locals(budget, local, self.loop_var_name)


def _release_locals(budget: sandbox.Budget, local: Any, loop_var: str) -> None:
    """Values an iteration ``#set`` for itself are freed with it, unless still held elsewhere
    (only the namespace, ``value`` and getrefcount's argument refer to a freed one)."""
    for name in list(local):  # keys only: an items() iterator would hold the last value too
        if name == loop_var or name == "foreach":
            continue
        value = dict.__getitem__(local, name)
        if type(value) in _HELD and sys.getrefcount(value) == 3:
            budget.release(value)


def _range(self: Any, namespace: Any, loader: Any) -> range:
    first = self.value1.calculate(namespace, loader)
    last = self.value2.calculate(namespace, loader)
    for bound in (first, last):
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise SandboxError("a range needs whole numbers")
    if abs(last - first) + 1 > sandbox.current().limits.max_items:
        raise SandboxError(f"range of {abs(last - first) + 1} items is too large")
    return range(first, last - 1, -1) if last < first else range(first, last + 1)


_original_execute = V._FunctionDefinition.execute_function


def _execute_function(self: Any, stream: Any, namespace: Any, arg_values: list[Any],
                      loader: Any) -> None:
    budget = sandbox.current()
    budget.tick()
    if budget.depth >= budget.limits.max_depth:
        raise SandboxError(f"macros nested deeper than {budget.limits.max_depth} levels")
    budget.depth += 1
    try:
        _original_execute(self, stream, namespace, arg_values, loader)
    finally:
        budget.depth -= 1


def _string_literal(self: Any, namespace: Any, loader: Any) -> str:
    return SafeHtml(self.value) if sandbox.rendering_html() else self.value


def _interpolated_literal(self: Any, namespace: Any, loader: Any) -> str:
    stream = _BudgetStream()
    self.block.evaluate(stream, namespace, loader)
    text = stream.getvalue()
    return stream.budget.hold(SafeHtml(text) if sandbox.rendering_html() else text)


_array_literal_parse = V.ArrayLiteral.parse


def _checked_array_literal_parse(self: Any) -> None:
    """``[a, b]``: sized before anything compares or prints it (argument lists are not)."""
    _array_literal_parse(self)
    values = self.values

    def calculate(namespace: Any, loader: Any) -> list[Any]:
        value = sandbox.check_size(values.calculate(namespace, loader))
        return sandbox.current().hold(value) if type(value) is list else value

    self.calculate = calculate


def _dictionary_literal(self: Any, namespace: Any, loader: Any) -> dict[Any, Any]:
    try:
        value = {key.calculate(namespace, loader): val.calculate(namespace, loader)
                 for key, val in self.local_data.items()}
    except TypeError:  # a list or a map as a key
        raise SandboxError("a map key must be text, a number or a yes/no value") from None
    return sandbox.current().hold(sandbox.check_size(value))


def _binary_operator_parse(self: Any) -> None:
    op, = self.identity_match(self.BINARY_OP)
    self.apply_to = sandbox.stepped(op, sandbox.OPERATORS.get(op) or self.OPERATORS[op])
    self.precedence = self.PRECEDENCE[op]


_budget_var = sandbox._current


def _value(self: Any, namespace: Any, loader: Any) -> Any:
    """Every operand, argument and literal: one step of the render's budget."""
    budget = _budget_var.get()
    if budget is not None:
        budget.steps -= 1
        if budget.steps < 0:
            budget.step(0)
    return self.expression.calculate(namespace, loader)


#: Exact types checked with ``type(x) in ...``: airspeed's elements are ABCs, and an
#: ``isinstance`` against an ABC costs several times more on this hot path.
_DICTS = frozenset({dict, V.LocalNamespace})
_HELD = frozenset({str, SafeHtml, list, dict})
_FUNCTIONS = frozenset({V.MacroDefinition, V.DefineDefinition})

V.NameOrCall.calculate = _name_or_call
V.SubExpression.calculate = _sub_expression
V.FormalReference.evaluate_raw = _formal_reference
V.SetDirective.evaluate_raw = _set_directive
V.ForeachDirective.evaluate_raw = _foreach
V.Range.calculate = _range
V._FunctionDefinition.execute_function = _execute_function
V.StringLiteral.calculate = _string_literal
V.InterpolatedStringLiteral.calculate = _interpolated_literal
V.BinaryOperator.parse = _binary_operator_parse
V.ArrayLiteral.parse = _checked_array_literal_parse
V.DictionaryLiteral.calculate = _dictionary_literal
V.Value.calculate = _value
V.__additional_methods__.clear()


# --- the parse tree, for validation ---------------------------------------------------------

def parse(source: str) -> Any:
    """Parse Velocity source into airspeed's tree (raises airspeed's errors or ours)."""
    if len(source) > MAX_SOURCE_CHARS:
        raise ForbiddenDirective(f"template longer than {MAX_SOURCE_CHARS} characters", 0)
    unclosed = unclosed_comment(source)
    if unclosed is not None:
        raise ForbiddenDirective("a comment opened with #* is never closed with *# "
                                 "(write \\#* for a literal #*)", unclosed)
    template = V.Template(source, filename="<template>")
    token = _parse_clock.set(_ParseClock())
    try:
        template.ensure_compiled()
    finally:
        _parse_clock.reset(token)
    return template


def merge(template: Any, namespace: dict[str, Any], budget: sandbox.Budget) -> str:
    token = sandbox.activate(budget)
    try:
        return template.merge(namespace)
    finally:
        sandbox.deactivate(token)


def syntax_offset(exc: Exception) -> int | None:
    """Where a parse error was found, as an offset into the Velocity source."""
    if isinstance(exc, ForbiddenDirective):
        return exc.offset
    element = getattr(exc, "element", None)
    return getattr(element, "end", None)


def execution_failure(exc: BaseException) -> tuple[BaseException, int | None]:
    """The root cause of a render failure and the offset of the element that raised it."""
    offset = None
    while isinstance(exc, V.TemplateExecutionError):
        offset = exc.start
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    return exc, offset


def _children(element: Any) -> Iterator[Any]:
    for value in vars(element).values():
        candidates = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else [value])
        for item in candidates:
            owner = getattr(item, "__self__", None)  # bound ``calculate`` of an inner element
            if isinstance(owner, V._Element):
                yield owner
            elif isinstance(item, V._Element):
                yield item
        if isinstance(value, dict):
            yield from (k for k in value if isinstance(k, V._Element))


def walk(template: Any) -> Iterator[Any]:
    seen: set[int] = set()
    stack = [template.root_element]
    while stack:
        element = stack.pop()
        if id(element) in seen:
            continue
        seen.add(id(element))
        yield element
        stack.extend(_children(element))


@dataclass(frozen=True)
class Reference:
    """A ``$a.b.c`` reference: its plain name path (up to a call or index) and offset."""

    path: tuple[str, ...]
    offset: int


def references(template: Any) -> Iterator[Reference]:
    for element in walk(template):
        if isinstance(element, V.FormalReference) and element.expression is not None:
            yield Reference(reference_path(element), element.start)


def local_names(template: Any) -> set[str]:
    """Variables the template defines itself (``#set``, ``#foreach``, macro arguments)."""
    names = {"velocityCount", "velocityHasNext", "foreach"}
    for element in walk(template):
        if isinstance(element, V.SetDirective):
            names.add(element.terms[0])
        elif isinstance(element, V.ForeachDirective):
            names.add(element.loop_var_name)
        elif isinstance(element, V._FunctionDefinition):
            names.update(element.arg_names)
            if isinstance(element, V.DefineDefinition):
                names.add(element.function_name)
    return names


def violations(template: Any, helper_methods: frozenset[str],
               defined: frozenset[str] | set[str] = frozenset()) -> Iterator[tuple[str, int]]:
    """What the sandbox would refuse at render time, found statically: (message, offset)."""
    allowed = sandbox.ALL_METHOD_NAMES | helper_methods | defined
    for element in walk(template):
        if isinstance(element, V.NameOrCall):
            if element.name.startswith("_"):
                yield f"names beginning with '_' are not allowed ({element.name!r})", \
                    element.start
            elif element.parameters is not None and element.name not in allowed:
                yield f"method {element.name}() is not allowed in templates", element.start
        elif isinstance(element, V.SetDirective):
            if len(element.terms) != 1:
                yield "#set can only assign a variable, not a field of a value", element.start
            elif element.terms[0].startswith("_"):
                yield f"names beginning with '_' are not allowed ({element.terms[0]!r})", \
                    element.start
        elif isinstance(element, V.ForeachDirective) and element.loop_var_name.startswith("_"):
            yield f"names beginning with '_' are not allowed ({element.loop_var_name!r})", \
                element.start
