"""Templates kept as reviewable files, and the template store around them.

One directory per template::

    payment_receipt/
        template.toml    code, name, media, direction, category, classification,
                         referring_entities, unrestricted_params, external_system,
                         default_language
        en.subject       one line
        en.html          the HTML body (email, letter)
        en.txt           the text body (email text alternative, SMS, push)
        el.subject ...   one set of files per language

Files diff and review like code; ``comms templates add|update PATH`` validates a directory and
saves it as a new version (:mod:`comms_pipeline.pipeline.template_versions`). The built-in templates
under ``comms_pipeline/templates/builtin/`` reproduce the seeds' business examples.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline import template_versions
from comms_pipeline.pipeline.media import effective_limit, load_media_rules
from comms_pipeline.rendering import Problem, validate_template
from comms_pipeline.settings.links import LinkSettings
from comms_pipeline.store.models import (
    systems_t,
    templates_t,
    variants_t,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.settings.config import Settings

TEMPLATE_TOML = "template.toml"
PART_FILES = {"subject": "subject", "html": "body_html", "txt": "body_text"}
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "templates" / "builtin"
META_KEYS = ("code", "name", "media", "direction", "category", "classification",
             "referring_entities", "unrestricted_params", "external_system", "default_language")
REQUIRED_KEYS = ("code", "name", "media")



class TemplateFileError(CommsError):
    """The template directory cannot be read."""


class TemplateInvalidError(CommsError):
    """The template has validation errors."""

    def __init__(self, code: str, problems: list[Problem]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"template {code!r} is not valid:\n{lines}")
        self.problems = problems


def load_template_dir(path: str | Path) -> TemplateSpec:
    """Read a template directory into a :class:`TemplateSpec` (not validated yet)."""
    folder = Path(path)
    meta_file = folder / TEMPLATE_TOML
    if not meta_file.is_file():
        raise TemplateFileError(f"{folder}: no {TEMPLATE_TOML} (is this a template directory?)")
    try:
        meta = tomllib.loads(meta_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateFileError(f"{meta_file}: {exc}") from None
    unknown = sorted(set(meta) - set(META_KEYS))
    missing = [k for k in REQUIRED_KEYS if not meta.get(k)]
    if unknown or missing:
        raise TemplateFileError(f"{meta_file}: " + "; ".join(
            ([f"unknown key(s): {', '.join(unknown)}"] if unknown else [])
            + ([f"missing key(s): {', '.join(missing)}"] if missing else [])))
    variants: dict[str, dict[str, str]] = {}
    for file in sorted(folder.iterdir()):
        language, dot, kind = file.name.partition(".")
        if not dot or kind not in PART_FILES or not file.is_file():
            continue
        text = file.read_text(encoding="utf-8")
        text = text.strip() if kind == "subject" else text.rstrip("\n") if kind == "txt" else text
        variants.setdefault(language, {})[PART_FILES[kind]] = text
    default = str(meta.get("default_language") or "en")
    order = sorted(variants, key=lambda lang: (lang != default, lang))  # default first
    spec = TemplateSpec(
        code=str(meta["code"]), name=str(meta["name"]), media=str(meta["media"]),
        variants=[VariantSpec(language=lang, **variants[lang]) for lang in order],
        referring_entities=[str(e) for e in meta.get("referring_entities", [])],
        unrestricted_params=[str(p) for p in meta.get("unrestricted_params", [])],
    )
    for key in ("direction", "category", "classification", "external_system",
                "default_language"):
        if meta.get(key) is not None:
            setattr(spec, key, str(meta[key]))
    return spec


def write_template_dir(spec: TemplateSpec, path: str | Path) -> Path:
    """Write ``spec`` as a template directory (the inverse of :func:`load_template_dir`)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key in META_KEYS:
        value = getattr(spec, key)
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    (folder / TEMPLATE_TOML).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for variant in spec.variants:
        for suffix, attr in PART_FILES.items():
            text = getattr(variant, attr)
            if text:
                end = "" if text.endswith("\n") else "\n"
                (folder / f"{variant.language}.{suffix}").write_text(text + end,
                                                                     encoding="utf-8")
    return folder


def fetch_template(conn: Connection, code: str) -> TemplateSpec | None:
    """The stored template ``code`` as a spec, or None."""
    row = conn.execute(select(templates_t).where(templates_t.c.code == code)).mappings().first()
    if row is None:
        return None
    external = None
    if row["external_system_id"] is not None:
        t = systems_t
        external = conn.execute(select(t.c.code).where(
            t.c.id == row["external_system_id"])).scalar_one_or_none()
    variants = sorted((VariantSpec(v.language, v.subject, v.body_html, v.body_text)
                       for v in conn.execute(select(variants_t).where(
                           variants_t.c.template_id == row["id"]))),
                      key=lambda v: (v.language != row["default_language"], v.language))
    return TemplateSpec(
        code=row["code"], name=row["name"], media=row["media"], variants=variants,
        direction=row["direction"], category=row["category"],
        classification=row["classification"],
        referring_entities=list(row["referring_entities"] or []),
        unrestricted_params=list(row["unrestricted_params"] or []),
        external_system=external, default_language=row["default_language"])


def list_templates(conn: Connection) -> list[dict[str, Any]]:
    languages: dict[int, list[str]] = {}
    for v in conn.execute(select(variants_t.c.template_id, variants_t.c.language)
                          .order_by(variants_t.c.language)):
        languages.setdefault(v.template_id, []).append(v.language)
    rows = conn.execute(select(templates_t).order_by(templates_t.c.code)).mappings()
    return [{"code": r["code"], "name": r["name"], "media": r["media"],
             "classification": r["classification"], "active": r["active"],
             "languages": sorted(languages.get(r["id"], []),
                                 key=lambda lang, d=r["default_language"]: (lang != d, lang))}  # type: ignore[misc]
            for r in rows]


def pick_variant(spec: TemplateSpec, language: str | None) -> VariantSpec | None:
    """The variant in ``language`` when there is one, else the default language's (SPEC)."""
    by_language = {v.language: v for v in spec.variants}
    if language:
        found = by_language.get(language) or by_language.get(language.split("-")[0])
        if found is not None:
            return found
    return by_language.get(spec.default_language)


def limit_for(conn: Connection, spec: TemplateSpec) -> int:
    """The lowest of the media's and the external system's character limits (SPEC)."""
    rule = load_media_rules(conn).get(spec.media)
    if rule is None:
        return 100_000
    external = None
    if spec.external_system:
        t = systems_t
        external = conn.execute(select(t.c.max_chars).where(
            t.c.code == spec.external_system)).scalar_one_or_none()
    return effective_limit(rule, external)


@dataclass
class SaveResult:
    template_id: int
    warnings: list[Problem]
    #: The version saved (or the newest, when nothing changed), and whether it is live.
    version: int = 1
    published: bool = True
    created: bool = True


def save_checked(conn: Connection, spec: TemplateSpec, *, links: LinkSettings | None = None,
                 mode: str = "upsert", publish: bool = True) -> SaveResult:
    """Validate ``spec`` and save it as the template's next version; ``mode`` is ``add``
    (must be new), ``update`` (must exist) or ``upsert``. A new template's first version is
    live at once; a later one is a draft unless ``publish``
    (:mod:`comms_pipeline.pipeline.template_versions`). Raises
    :class:`TemplateInvalidError` on any validation error."""
    problems = validate_template(spec, links=links, max_chars=limit_for(conn, spec))
    errors = [p for p in problems if p.is_error]
    exists = conn.execute(select(templates_t.c.id).where(
        templates_t.c.code == spec.code)).scalar_one_or_none() is not None
    if mode == "add" and exists:
        errors.append(Problem(f"a template with code {spec.code!r} exists; use update"))
    if mode == "update" and not exists:
        errors.append(Problem(f"no template with code {spec.code!r}; use add"))
    if spec.external_system:
        t = systems_t
        if conn.execute(select(t.c.id).where(
                t.c.code == spec.external_system)).scalar_one_or_none() is None:
            errors.append(Problem(f"no external system with code {spec.external_system!r}"))
    if errors:
        raise TemplateInvalidError(spec.code, errors)
    saved = template_versions.save_version(conn, spec, publish=publish)
    return SaveResult(saved.template_id, [p for p in problems if not p.is_error],
                      saved.version, saved.published, saved.created)


def builtin_dirs() -> list[Path]:
    return sorted(p for p in BUILTIN_DIR.iterdir() if (p / TEMPLATE_TOML).is_file())


def load_builtin_templates(conn: Connection, settings: Settings | None = None) -> list[str]:
    """Validate and save (insert or replace) every built-in template; return their codes."""
    links = settings.links if settings is not None else LinkSettings()
    codes = []
    for folder in builtin_dirs():
        spec = load_template_dir(folder)
        save_checked(conn, spec, links=links)
        codes.append(spec.code)
    return codes
