"""``comms templates``: keep templates as files, validate, preview, list tags.

The group finds the settings and the engine on ``ctx.obj`` (``.settings`` / ``.engine``), as
the main ``comms`` group sets them up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from comms_pipeline.cli.common import parse_pairs
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.sms_text import analyse
from comms_pipeline.core.states import Media
from comms_pipeline.pipeline.contact_admin import contact_merge_data
from comms_pipeline.pipeline.entity_sources import load_sources, needed_entities, resolve_entities
from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.pipeline.request_check import missing_tags
from comms_pipeline.pipeline.template_files import (
    fetch_template,
    limit_for,
    list_templates,
    load_builtin_templates,
    load_template_dir,
    pick_variant,
    save_checked,
    write_template_dir,
)
from comms_pipeline.rendering import (
    TemplateError,
    available_tags,
    build_context,
    compile_template,
    missing_params,
    validate_template,
)


def _app() -> Any:
    app = click.get_current_context().obj
    if app is None or not hasattr(app, "settings"):
        raise click.UsageError("no application context (run through `comms templates`)")
    return app


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group("templates")
def templates() -> None:
    """Communication templates: add/update from files, validate, preview, list tags."""


def _save(path: str, mode: str) -> None:
    app = _app()
    try:
        spec = load_template_dir(path)
        with app.engine.begin() as conn:
            result = save_checked(conn, spec, links=app.settings.links, mode=mode)
    except CommsError as exc:
        raise _fail(exc) from None
    for warning in result.warnings:
        click.echo(str(warning), err=True)
    languages = ", ".join(v.language for v in spec.variants)
    click.echo(f"{'added' if mode == 'add' else 'updated'} template {spec.code} "
               f"(id {result.template_id}; {spec.media}; {languages})")


@templates.command("add")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def add(path: str) -> None:
    """Validate the template directory PATH and add it (its code must be new)."""
    _save(path, "add")


@templates.command("update")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def update(path: str) -> None:
    """Validate the template directory PATH and replace the stored template of its code."""
    _save(path, "update")


@templates.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    """The stored templates."""
    with _app().engine.connect() as conn:
        rows = list_templates(conn)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    click.echo(f"{'CODE':<28} {'MEDIA':<7} {'CLASSIFICATION':<15} {'LANGUAGES':<12} NAME")
    for r in rows:
        click.echo(f"{r['code']:<28} {r['media']:<7} {r['classification']:<15} "
                   f"{','.join(r['languages']):<12} {r['name']}")


def _load(conn: Any, code: str) -> Any:
    spec = fetch_template(conn, code)
    if spec is None:
        raise click.ClickException(f"no template with code {code!r}")
    return spec


@templates.command("show")
@click.argument("code")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Also write the template as a template directory here.")
def show(code: str, export_dir: str | None) -> None:
    """Show template CODE: its settings and every language variant."""
    with _app().engine.connect() as conn:
        spec = _load(conn, code)
    for key in ("code", "name", "media", "direction", "category", "classification",
                "referring_entities", "unrestricted_params", "external_system",
                "default_language"):
        click.echo(f"{key}: {getattr(spec, key)}")
    for variant in spec.variants:
        for label, text in (("subject", variant.subject), ("html", variant.body_html),
                            ("text", variant.body_text)):
            if text:
                click.echo(f"\n--- {variant.language}.{label} ---\n{text}")
    if export_dir:
        click.echo(f"\nwritten to {write_template_dir(spec, export_dir)}")


@templates.command("validate")
@click.argument("target")
@click.option("--strict", is_flag=True,
              help="Exit 1 on warnings too (for a CI gate that keeps templates clean).")
def validate(target: str, strict: bool) -> None:
    """Validate a template directory, or the stored template of that code.

    Exit code 0: no error (and, with --strict, no warning); 1: errors (or, with --strict,
    warnings) were found, or the template could not be read.
    """
    app = _app()
    with app.engine.connect() as conn:
        try:
            spec = load_template_dir(target) if Path(target).is_dir() else _load(conn, target)
        except CommsError as exc:
            raise _fail(exc) from None
        problems = validate_template(spec, links=app.settings.links,
                                     max_chars=limit_for(conn, spec))
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    click.echo(f"{spec.code}: {errors} error(s), {warnings} warning(s)")
    if errors or (strict and warnings):
        click.get_current_context().exit(1)


def _contact_data(conn: Any, ref: str) -> dict[str, Any]:
    data = contact_merge_data(conn, ref)
    if data is None:
        raise click.ClickException(f"no contact with ref {ref!r}")
    return data


@templates.command("preview")
@click.argument("code")
@click.option("--contact", "contact_ref", required=True, help="The contact's ref.")
@click.option("--entity", "entities", multiple=True, metavar="NAME=JSON",
              help='Entity data, e.g. --entity \'payment={"id": 1}\' (repeatable).')
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="An unrestricted parameter's value (repeatable).")
@click.option("--language", help="Language variant (default: the contact's preferred one).")
def preview(code: str, contact_ref: str, entities: tuple[str, ...], params: tuple[str, ...],
            language: str | None) -> None:
    """Render template CODE for a contact, as the pipeline would."""
    app = _app()
    given = parse_pairs(entities, "--entity", as_json=True)
    values = parse_pairs(params, "--param")
    with app.engine.connect() as conn:
        spec = _load(conn, code)
        contact = _contact_data(conn, contact_ref)
    variant = pick_variant(spec, language or contact.get("preferred_language"))
    if variant is None:
        raise click.ClickException(f"template {code} has no variant for {language!r} "
                                   f"nor the default language")
    try:
        sources = load_sources(app.settings)
        resolved = resolve_entities(sources, given, contact=contact,
                                    default_url=app.settings.database_url,
                                    var_dir=app.settings.var_dir,
                                    wanted=needed_entities(spec.referring_entities))
        context = build_context(contact=contact, entities=resolved, params=values,
                                referring_entities=spec.referring_entities,
                                language=variant.language,
                                links=LinkBuilder.from_settings(app.settings))
        _print_variant(spec.media, variant, context)
    except (TemplateError, CommsError) as exc:
        raise _fail(exc) from None
    missing = missing_params(spec, values)
    if missing:
        click.echo(f"(missing unrestricted parameters: {', '.join(missing)})", err=True)
    tags = missing_tags(spec, variant, contact, resolved, values)
    if tags:
        click.echo(f"warning: missing: {', '.join(tags)}; the communication would be "
                   "rejected (MISSING_DATA)", err=True)


def _print_variant(media: str, variant: Any, context: dict[str, Any]) -> None:
    click.echo(f"language: {variant.language}")
    if variant.subject:
        click.echo(f"subject: {compile_template(variant.subject).render(context)}")
    if variant.body_html:
        click.echo("\n--- html ---")
        click.echo(compile_template(variant.body_html, html=True).render(context))
    if variant.body_text:
        text = compile_template(variant.body_text).render(context)
        click.echo("\n--- text ---")
        click.echo(text)
        if media == Media.SMS:
            click.echo(f"\n(sms: {analyse(text)})")


@templates.command("tags")
@click.option("--entity", "entities", multiple=True, help="A referring entity (repeatable).")
@click.option("--prefix", default="", help="Only tags starting with this (e.g. '#pay').")
def tags(entities: tuple[str, ...], prefix: str) -> None:
    """The tags a '#' auto-complete offers for the given entities."""
    enabled = _app().settings.links.enabled
    for tag in available_tags(entities, prefix, enabled_links=enabled):
        click.echo(tag)


@templates.command("missing-params")
@click.argument("code")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter already given (repeatable).")
def missing_params_cmd(code: str, params: tuple[str, ...]) -> None:
    """Unrestricted parameters a communication with template CODE must still supply."""
    with _app().engine.connect() as conn:
        spec = _load(conn, code)
    for name in missing_params(spec, parse_pairs(params, "--param")):
        click.echo(name)


@templates.command("load-builtin")
def load_builtin() -> None:
    """Add (or refresh) the built-in templates: the seeds' business examples in en and el."""
    app = _app()
    try:
        with app.engine.begin() as conn:
            codes = load_builtin_templates(conn, app.settings)
    except CommsError as exc:
        raise _fail(exc) from None
    click.echo(f"loaded {len(codes)} built-in templates: {', '.join(codes)}")
