"""Administration: the schema, media settings, contacts."""

from __future__ import annotations

import click

from comms_pipeline.cli.common import AppContext, pass_app
from comms_pipeline.core.addressing import InvalidAddress, normalise
from comms_pipeline.pipeline import admin_records as admin
from comms_pipeline.store.db import upgrade


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Create or migrate the schema (Alembic migrations under sql/migrations)."""
    upgrade(app.settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@click.group()
def media() -> None:
    """Media settings: enable or disable a media, set its character limit."""


@media.command("set")
@click.argument("name", type=click.Choice(["email", "sms", "push", "letter", "external"]))
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--max-chars", type=click.IntRange(1))
@pass_app
def media_set(app: AppContext, name: str, enabled: bool | None, max_chars: int | None) -> None:
    """Change the settings of media NAME."""
    with app.engine.begin() as conn:
        admin.set_media(conn, name, enabled=enabled, max_chars=max_chars)
    click.echo(f"{name}: updated")


@click.group()
def contacts() -> None:
    """Contacts and their addresses."""


@contacts.command("add")
@click.argument("ref")
@click.option("--name", required=True)
@click.option("--language", help="Preferred language (en, el, ...).")
@click.option("--email", "emails", multiple=True, help="Email address (first is primary).")
@click.option("--phone", "phones", multiple=True, help="Mobile number (first is primary).")
@click.option("--device", "devices", multiple=True, help="Push device token.")
@click.option("--postal", "postals", multiple=True, help="Postal address, lines split by '|'.")
@click.option("--direct-marketing/--no-direct-marketing", default=False)
@pass_app
def contacts_add(app: AppContext, ref: str, name: str, language: str | None,
                 emails: tuple[str, ...], phones: tuple[str, ...], devices: tuple[str, ...],
                 postals: tuple[str, ...], direct_marketing: bool) -> None:
    """Add contact REF with its addresses."""
    specs = []
    for kind, values, kind_type in (("email", emails, "home"), ("phone", phones, "mobile"),
                                    ("device", devices, "mobile"), ("postal", postals, "home")):
        for i, value in enumerate(values):
            if kind == "postal":
                value = "\n".join(part.strip() for part in value.split("|"))
            else:
                try:
                    normalise(kind, value, app.settings.monitor.default_country)
                except InvalidAddress as exc:
                    raise click.BadParameter(str(exc), param_hint=f"--{kind}") from None
            specs.append(admin.AddressSpec(kind, value, kind_type, is_primary=i == 0))
    with app.engine.begin() as conn:
        contact_id = admin.add_contact(conn, ref, name, language=language, addresses=specs,
                                       direct_marketing=direct_marketing)
    click.echo(f"contact {ref} (id {contact_id})")
