"""Compiled templates: parsed once, rendered many times in the sandbox."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from comms_pipeline.core.errors import CommsError
from comms_pipeline.rendering import velocity
from comms_pipeline.rendering.sandbox import DEFAULT_LIMITS, Budget, Limits, SandboxError
from comms_pipeline.rendering.tags import Translation, line_column, translate


class TemplateError(CommsError):
    """The template could not be rendered."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}")
        self.reason = message
        self.line = line
        self.column = column


class MissingDataError(TemplateError):
    """Tags whose entity the communication refers to have no value: nothing goes out blank."""

    def __init__(self, tags: list[str]) -> None:
        super().__init__("missing: " + ", ".join(tags))
        self.tags = tags


@dataclass(frozen=True)
class Rendered:
    """A render's text and the tags it found missing (in the order they appear)."""

    text: str
    missing: list[str]


class CompiledTemplate:
    """A parsed template, reusable across renders and threads."""

    def __init__(self, source: str, html: bool = False) -> None:
        self.source = source
        self.html = html
        self.translation: Translation = translate(source)
        self._tag_starts = frozenset(self.translation.starts)
        try:
            self.tree = velocity.parse(self.translation.source)
        except RecursionError:
            raise TemplateError("template is nested too deeply") from None
        except Exception as exc:  # airspeed raises several kinds while parsing
            raise self._error(_parse_message(exc), velocity.syntax_offset(exc)) from None

    @property
    def velocity_source(self) -> str:
        return self.translation.source

    def _error(self, message: str, offset: int | None) -> TemplateError:
        if offset is None:
            return TemplateError(message)
        line, column = line_column(self.source, self.translation.original_offset(offset))
        return TemplateError(message, line, column)

    def render(self, context: Mapping[str, Any], *, html: bool | None = None,
               limits: Limits = DEFAULT_LIMITS,
               required: Collection[str] | None = None) -> str:
        """Merge ``context`` (see :func:`build_context`) into the template.

        With ``required`` (see :func:`required_roots`), a value missing under one of those
        roots raises :class:`MissingDataError` naming every such tag.
        """
        result = self.render_report(context, html=html, limits=limits, required=required)
        if result.missing:
            raise MissingDataError(result.missing)
        return result.text

    def render_report(self, context: Mapping[str, Any], *, html: bool | None = None,
                      limits: Limits = DEFAULT_LIMITS,
                      required: Collection[str] | None = None) -> Rendered:
        """The merged text and the tags missing under ``required`` (a preview shows both)."""
        budget = Budget(limits, self.html if html is None else html,
                        None if required is None else frozenset(required), self._tag_starts)
        try:
            text = velocity.merge(self.tree, dict(context), budget)
        except Exception as exc:  # every failure becomes a TemplateError
            cause, offset = velocity.execution_failure(exc)
            raise self._error(failure_message(cause), offset) from None
        return Rendered(text, list(budget.missing))


def failure_message(cause: BaseException) -> str:
    """What a render failure means, in the product's words: our own refusals as they are,
    anything else by its kind (Python's own messages name its internals, never shown)."""
    if isinstance(cause, SandboxError):
        return str(cause)
    if isinstance(cause, RecursionError):
        return "template recursion is too deep"
    if isinstance(cause, MemoryError):
        return "the template needs more memory than a render may use"
    if isinstance(cause, ZeroDivisionError):
        return "division by zero"
    if isinstance(cause, OverflowError) or (
            isinstance(cause, ValueError) and "digits" in str(cause)):
        return "number too large"
    if isinstance(cause, ArithmeticError):
        return "a calculation with a value that is not a valid number"
    if isinstance(cause, TypeError):
        if "argument" in str(cause):
            return "a method was given the wrong number or kind of values"
        return "a value of the wrong kind for this operation"
    if isinstance(cause, ValueError | LookupError):
        return "a value that cannot be used here"
    return "the template could not be rendered here"


def _parse_message(exc: Exception) -> str:
    if isinstance(exc, velocity.ForbiddenDirective):
        return str(exc)
    if not isinstance(exc, velocity.V.TemplateSyntaxError):  # e.g. int() of a literal
        if isinstance(exc, ValueError) and "digits" in str(exc):
            return "syntax error: a number in the template is too large"
        return "syntax error"
    text = str(exc)
    if text.startswith("line ") and ": " in text:
        text = text.split(": ", 1)[1]  # airspeed's own line/column are of the translation
    return f"syntax error: {text}" if text else "syntax error"


@lru_cache(maxsize=4096)
def compile_template(source: str, html: bool = False) -> CompiledTemplate:
    """Parse ``source`` once; later calls with the same text return the same object."""
    return CompiledTemplate(source, html)
