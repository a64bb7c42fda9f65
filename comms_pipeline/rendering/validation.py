"""Validation of a template when it is saved (SPEC: syntax, unknown tags, disabled links).

:func:`validate_template` returns a list of :class:`Problem` (empty when the template is
good). Errors block saving; warnings (a catalogue entity that is not among the template's
referring entities, so its tags will render empty; a parameter used but not declared) are
shown but do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comms_pipeline.core.dynamic_links import DYNAMIC_LINK_NAMES
from comms_pipeline.core.states import DEFAULT_MAX_CHARS, Classification, Direction, Media
from comms_pipeline.rendering import velocity
from comms_pipeline.rendering.compiled import CompiledTemplate, TemplateError, compile_template
from comms_pipeline.rendering.context import build_context
from comms_pipeline.rendering.formatters import Formatters
from comms_pipeline.rendering.tags import (
    CATALOGUE,
    CONTACT,
    DYNAMIC_LINK,
    FORMATTERS,
    PARAM,
    check_path,
    line_column,
)

if TYPE_CHECKING:
    from comms_pipeline.core.template_spec import TemplateSpec
    from comms_pipeline.settings.links import LinkSettings

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LIMITED_MEDIA = (Media.SMS, Media.PUSH)


@dataclass(frozen=True)
class Problem:
    message: str
    part: str | None = None
    line: int | None = None
    column: int | None = None
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.part or "template"
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class _Scope:
    """What a template may name: its referring entities, enabled links, extra fields."""

    referring: set[str] | None
    enabled_links: set[str]
    extra_fields: Mapping[str, Iterable[str]]


def _enabled_links(links: LinkSettings | None) -> set[str]:
    if links is None:
        from comms_pipeline.settings.links import LinkSettings

        links = LinkSettings()
    return set(links.enabled)


def validate_template(spec_or_source: TemplateSpec | str, *, media: str | None = None,
                      html: bool = False, referring_entities: Sequence[str] | None = None,
                      links: LinkSettings | None = None, max_chars: int | None = None,
                      extra_fields: Mapping[str, Iterable[str]] | None = None) -> list[Problem]:
    """Every problem of a template spec (all variants and parts) or of one source text.

    ``max_chars`` is the effective limit for SMS/push texts (default: SPEC's per media);
    ``extra_fields`` names fields that entity data carries beyond the catalogue.
    """
    if isinstance(spec_or_source, str):
        scope = _Scope(None if referring_entities is None else set(referring_entities),
                       _enabled_links(links), extra_fields or {})
        problems = _validate_source(spec_or_source, "source", html, scope)
        if media in LIMITED_MEDIA and not problems:
            problems += _check_length(spec_or_source, "source", media, max_chars)
        return problems
    spec = spec_or_source
    scope = _Scope(set(spec.referring_entities), _enabled_links(links), extra_fields or {})
    problems = _validate_header(spec)
    declared = set(spec.unrestricted_params)
    for variant in spec.variants:
        for kind, source in (("subject", variant.subject), ("html", variant.body_html),
                             ("txt", variant.body_text)):
            if not source:
                continue
            part = f"{variant.language}.{kind}"
            found = _validate_source(source, part, kind == "html", scope, declared)
            if kind == "txt" and spec.media in LIMITED_MEDIA and not found:
                found += _check_length(source, part, spec.media, max_chars)
            problems += found
    return problems


def _validate_header(spec: TemplateSpec) -> list[Problem]:
    problems: list[str] = []
    if not CODE_RE.match(spec.code or ""):
        problems.append(f"code {spec.code!r} must be 1-64 letters, digits, '_', '.' or '-'")
    if not (spec.name or "").strip():
        problems.append("name is required")
    for value, enum, label in ((spec.media, Media, "media"),
                               (spec.direction, Direction, "direction"),
                               (spec.classification, Classification, "classification")):
        if value not in {e.value for e in enum}:
            problems.append(f"{label} {value!r} is not one of "
                            f"{', '.join(e.value for e in enum)}")
    for name in [*spec.referring_entities, *spec.unrestricted_params]:
        if not NAME_RE.match(name):
            problems.append(f"{name!r} is not a valid entity or parameter name")
    languages = [v.language for v in spec.variants]
    if not languages:
        problems.append("a template needs at least one language variant")
    elif spec.default_language not in languages:
        problems.append(f"no variant in the default language {spec.default_language!r}")
    if len(set(languages)) != len(languages):
        problems.append("a language appears more than once")
    for variant in spec.variants:
        problems += [f"{variant.language}: {p}" for p in _missing_parts(spec.media, variant)]
    return [Problem(p) for p in problems]


def _missing_parts(media: str, variant: Any) -> list[str]:
    if variant.subject and ("\n" in variant.subject or "\r" in variant.subject):
        return ["a subject must be a single line"]
    if media == Media.EMAIL and not variant.subject:
        return ["an email needs a subject"]
    if media == Media.EMAIL and not (variant.body_html or variant.body_text):
        return ["an email needs an HTML or a text body"]
    if media in LIMITED_MEDIA and not variant.body_text:
        return [f"an {media} template needs a text body (<lang>.txt)"]
    if media == Media.LETTER and not variant.body_html:
        return ["a letter needs an HTML body"]
    return []


def _validate_source(source: str, part: str, html: bool, scope: _Scope,
                     declared: set[str] | None = None) -> list[Problem]:
    try:
        compiled = compile_template(source, html)
    except TemplateError as exc:
        return [Problem(exc.reason, part, exc.line, exc.column)]
    problems = []

    def at(message: str, offset: int, severity: str = "error") -> Problem:
        line, column = line_column(source, compiled.translation.original_offset(offset))
        return Problem(message, part, line, column, severity)

    defined = velocity.local_names(compiled.tree)
    for message, offset in velocity.violations(compiled.tree, Formatters.template_methods,
                                               defined):
        problems.append(at(message, offset))
    tag_starts = set(compiled.translation.starts)
    for ref in velocity.references(compiled.tree):
        is_tag = ref.offset in tag_starts
        if not is_tag and ref.path[0] in defined:
            continue
        for severity, message in _check_reference(ref.path, is_tag, scope, declared):
            problems.append(at(message, ref.offset, severity))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _check_reference(path: tuple[str, ...], is_tag: bool, scope: _Scope,
                     declared: set[str] | None) -> list[tuple[str, str]]:
    entity, shown = path[0], "#" + ".".join(path)
    if any(name.startswith("_") for name in path):
        return []  # reported once, as a sandbox refusal
    if entity == FORMATTERS or len(path) < 2 and not is_tag:
        return []
    if entity == PARAM:
        if declared is not None and len(path) > 1 and path[1] not in declared:
            return [("warning", f"parameter {path[1]!r} is not declared in "
                                "unrestricted_params")]
        return []
    if entity == DYNAMIC_LINK:
        name = path[1] if len(path) > 1 else ""
        if name not in DYNAMIC_LINK_NAMES:
            return [("error", f"{shown}: unknown dynamic link")]
        if name not in scope.enabled_links:
            return [("error", f"dynamic link tag {shown} is not enabled")]
        return []
    found: list[tuple[str, str]] = []
    known = entity == CONTACT or entity in CATALOGUE
    if not known and (scope.referring is None or entity not in scope.referring):
        return [("error", f"{shown}: unknown entity {entity!r}")] if is_tag else []
    if known and entity != CONTACT and scope.referring is not None \
            and entity not in scope.referring:
        found.append(("warning", f"{shown}: {entity!r} is not among the referring entities, "
                                 "so this renders empty"))
    reason = check_path(path, scope.extra_fields)
    if reason:
        found.append(("error", f"{shown}: {reason}"))
    return found


def _check_length(source: str, part: str, media: str, max_chars: int | None) -> list[Problem]:
    """The text with every tag empty must already fit the media's limit."""
    from comms_pipeline.core.sms_text import analyse

    limit = max_chars or DEFAULT_MAX_CHARS[Media(media)]
    try:
        text = compile_template(source).render(
            build_context(contact={}, entities={}, params={}))
    except TemplateError as exc:
        return [Problem(exc.reason, part, exc.line, exc.column)]
    if len(text) <= limit:
        return []
    info = analyse(text)
    return [Problem(f"{media} text is at least {len(text)} characters before any tag is "
                    f"filled in ({info.encoding}, {info.parts} part(s)); the limit is {limit}",
                    part)]


def params_used(sources: Iterable[str | None]) -> list[str]:
    """Unrestricted parameters a set of template texts refers to, in order of appearance."""
    found: dict[str, None] = {}
    for source in sources:
        if not source:
            continue
        try:
            compiled: CompiledTemplate = compile_template(source)
        except TemplateError:
            continue
        for ref in sorted(velocity.references(compiled.tree), key=lambda r: r.offset):
            if ref.path[0] == PARAM and len(ref.path) > 1:
                found.setdefault(ref.path[1])
    return list(found)


def missing_params(template_spec: TemplateSpec | str,
                   given: Mapping[str, Any] | Iterable[str] | None = None) -> list[str]:
    """Unrestricted parameters (declared or used) that ``given`` does not supply yet."""
    if isinstance(template_spec, str):
        declared: list[str] = []
        sources: list[str | None] = [template_spec]
    else:
        declared = list(template_spec.unrestricted_params)
        sources = [s for v in template_spec.variants
                   for s in (v.subject, v.body_html, v.body_text)]
    have = set(given or ())
    return [p for p in dict.fromkeys([*declared, *params_used(sources)]) if p not in have]
