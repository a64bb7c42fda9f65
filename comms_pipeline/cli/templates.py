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
from comms_pipeline.pipeline import template_versions as versions
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


def _save(path: str, mode: str, publish: bool = False) -> None:
    app = _app()
    try:
        spec = load_template_dir(path)
        with app.engine.begin() as conn:
            result = save_checked(conn, spec, links=app.settings.links, mode=mode,
                                  publish=publish)
    except CommsError as exc:
        raise _fail(exc) from None
    for warning in result.warnings:
        click.echo(str(warning), err=True)
    languages = ", ".join(v.language for v in spec.variants)
    if not result.created:
        what = f"unchanged: version {result.version}"
    elif result.published:
        what = f"version {result.version}, live"
    else:
        what = (f"version {result.version}, a draft: publish it with "
                f"`comms templates publish {spec.code}`")
    click.echo(f"{'added' if mode == 'add' else 'updated'} template {spec.code} "
               f"(id {result.template_id}; {spec.media}; {languages}) {what}")


@templates.command("add")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def add(path: str) -> None:
    """Validate the template directory PATH and add it (its code must be new); its first
    version is live at once."""
    _save(path, "add")


@templates.command("update")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--publish", is_flag=True, help="Make the new version live at once.")
def update(path: str, publish: bool) -> None:
    """Validate the template directory PATH and save it as a new draft version of its code
    (the live version is unchanged until `comms templates publish`)."""
    _save(path, "update", publish)


@templates.command("publish")
@click.argument("code")
@click.option("--version", "version", type=click.IntRange(1),
              help="The version to make live (default: the newest); an earlier one rolls "
                   "back.")
def publish(code: str, version: int | None) -> None:
    """Make a version of template CODE the live one: communications rendered from now on
    use it (and record its number)."""
    try:
        with _app().engine.begin() as conn:
            previous, live = versions.publish_version(conn, code, version)
    except (CommsError, LookupError) as exc:
        raise _fail(exc) from None
    if previous == live:
        click.echo(f"template {code}: version {live} is already live")
    else:
        click.echo(f"template {code}: version {live} is live (was {previous or 'none'})")


@templates.command("history")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history(code: str, as_json: bool) -> None:
    """The versions of template CODE: when, by whom, and which is live."""
    try:
        with _app().engine.connect() as conn:
            rows = versions.history(conn, code)
    except CommsError as exc:
        raise _fail(exc) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    click.echo(f"{'VERSION':<8} {'STATE':<17} {'CREATED':<20} {'PUBLISHED':<20} BY")
    for r in rows:
        published = f"{r['published_at']:%Y-%m-%d %H:%M:%S}" if r["published_at"] else "-"
        click.echo(f"{r['version']:<8} {r['state']:<17} {r['created_at']:%Y-%m-%d %H:%M:%S} "
                   f"{published:<20} {r['created_by'] or '-'}")


@templates.command("diff")
@click.argument("code")
@click.argument("a", type=click.IntRange(1))
@click.argument("b", type=click.IntRange(1))
def diff(code: str, a: int, b: int) -> None:
    """What changed in template CODE from version A to version B (a unified diff)."""
    try:
        with _app().engine.connect() as conn:
            text = versions.diff(conn, code, a, b)
    except CommsError as exc:
        raise _fail(exc) from None
    click.echo(text.rstrip("\n") if text else f"versions {a} and {b} of {code} are the same")


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


def _load(conn: Any, code: str, *, draft: bool = False, version: int | None = None) -> Any:
    """The live template, or its draft, or one of its versions."""
    if draft or version is not None:
        try:
            if version is None:
                version = versions.draft_version(conn, code)
                if version is None:
                    raise click.ClickException(
                        f"template {code} has no draft (its newest version is live)")
            return versions.fetch_version(conn, code, version)
        except CommsError as exc:
            raise _fail(exc) from None
    spec = fetch_template(conn, code)
    if spec is None:
        raise click.ClickException(f"no template with code {code!r}")
    return spec


def _which(command: Any) -> Any:
    command = click.option("--version", "version", type=click.IntRange(1),
                           help="This version instead of the live one.")(command)
    return click.option("--draft", is_flag=True,
                        help="The draft (the newest version, not yet published).")(command)


@templates.command("show")
@click.argument("code")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Also write the template as a template directory here.")
@_which
def show(code: str, export_dir: str | None, draft: bool, version: int | None) -> None:
    """Show template CODE (the live version unless --draft / --version): its settings and
    every language variant."""
    with _app().engine.connect() as conn:
        spec = _load(conn, code, draft=draft, version=version)
        live = versions.live_version(conn, code)
        shown = version or (versions.draft_version(conn, code) if draft else live)
    for key in ("code", "name", "media", "direction", "category", "classification",
                "referring_entities", "unrestricted_params", "external_system",
                "default_language"):
        click.echo(f"{key}: {getattr(spec, key)}")
    click.echo(f"version: {shown} ({'live' if shown == live else f'not live; live: {live}'})")
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
@_which
def preview(code: str, contact_ref: str, entities: tuple[str, ...], params: tuple[str, ...],
            language: str | None, draft: bool, version: int | None) -> None:
    """Render template CODE for a contact, as the pipeline would (the live version; a draft
    with --draft, any version with --version)."""
    app = _app()
    given = parse_pairs(entities, "--entity", as_json=True)
    values = parse_pairs(params, "--param")
    with app.engine.connect() as conn:
        spec = _load(conn, code, draft=draft, version=version)
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
