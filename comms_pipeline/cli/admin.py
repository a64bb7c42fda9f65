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


@contacts.command("list")
@click.option("--search", help="Part of the reference or the name.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@pass_app
def contacts_list(app: AppContext, search: str | None, limit: int) -> None:
    """List contacts (reference, name, language, consent, number of addresses)."""
    from comms_pipeline.pipeline.contact_admin import list_contacts

    with app.engine.connect() as conn:
        rows = list_contacts(conn, search=search, limit=limit)
    if not rows:
        click.echo("no contacts match")
        return
    click.echo(f"{'REF':<12} {'NAME':<30} {'LANG':<5} {'MARKETING':<10} {'AFFILIATE':<10} "
               f"ADDRESSES")
    for r in rows:
        click.echo(f"{r['ref']:<12} {r['name'][:30]:<30} {r['preferred_language'] or '-':<5} "
                   f"{'in' if r['opt_in_direct_marketing'] else 'out':<10} "
                   f"{'in' if r['opt_in_affiliate_marketing'] else 'out':<10} "
                   f"{r['addresses']}")


@contacts.command("show")
@click.argument("ref")
@pass_app
def contacts_show(app: AppContext, ref: str) -> None:
    """Show contact REF: its details, addresses and the history of its consent changes."""
    from comms_pipeline.pipeline.contact_admin import show_contact

    with app.engine.connect() as conn:
        found = show_contact(conn, ref)
    c = found["contact"]
    click.echo(f"contact {c['ref']}: {c['name']}")
    click.echo(f"  language          {c['preferred_language'] or '-'}")
    click.echo(f"  direct marketing  {'opted in' if c['opt_in_direct_marketing'] else 'out'}")
    click.echo(f"  affiliates        {'opted in' if c['opt_in_affiliate_marketing'] else 'out'}")
    click.echo("addresses:")
    for a in found["addresses"]:
        value = " / ".join(line.strip() for line in a["value"].splitlines())
        flags = " (primary)" if a["is_primary"] else ""
        invalid = f"  INVALID: {a['invalid_reason']}" if a["invalid_reason"] else ""
        click.echo(f"  {a['kind']:<7} {a['address_type']:<8} {value}{flags}{invalid}")
    if found["changes"]:
        click.echo("changes:")
    for h in found["changes"]:
        was = f"{h['from_state']} -> " if h["from_state"] else ""
        click.echo(f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['code']:<20} {was}{h['to_state']}  "
                   f"by {h['actor']}")


@contacts.command("update")
@click.argument("ref")
@click.option("--name")
@click.option("--language", help="Preferred language (en, el, ...).")
@click.option("--direct-marketing/--no-direct-marketing", default=None,
              help="Opt in to (or out of) direct marketing.")
@click.option("--affiliate-marketing/--no-affiliate-marketing", default=None)
@click.option("--by", "actor", default=None,
              help="Who asked for the change (recorded; default: the login user).")
@pass_app
def contacts_update(app: AppContext, ref: str, name: str | None, language: str | None,
                    direct_marketing: bool | None, affiliate_marketing: bool | None,
                    actor: str | None) -> None:
    """Change contact REF's name, language or consent (consent changes are recorded with
    who and when: see `contacts show`)."""
    import getpass

    from comms_pipeline.pipeline.contact_admin import update_contact

    with app.engine.begin() as conn:
        changed = update_contact(conn, ref, actor=f"cli:{actor or getpass.getuser()}",
                                 name=name, preferred_language=language,
                                 opt_in_direct_marketing=direct_marketing,
                                 opt_in_affiliate_marketing=affiliate_marketing)
    click.echo(f"contact {ref}: " + (f"updated {', '.join(changed)}" if changed
                                     else "nothing to change"))


@contacts.command("remove")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def contacts_remove(app: AppContext, ref: str, yes: bool) -> None:
    """Remove contact REF and its addresses (refused while queue entries refer to it)."""
    from comms_pipeline.pipeline.contact_admin import remove_contact

    if not yes:
        click.confirm(f"Remove contact {ref} and its addresses?", abort=True)
    with app.engine.begin() as conn:
        remove_contact(conn, ref)
    click.echo(f"contact {ref} removed")


@contacts.command("erase")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--by", "actor", default=None,
              help="Who asked for the erasure (recorded; default: the login user).")
@pass_app
def contacts_erase(app: AppContext, ref: str, yes: bool, actor: str | None) -> None:
    """Erase person REF's personal data everywhere (addresses, bodies, documents in the
    store, tracking, notifications, the communications log), leaving anonymised counts under
    a pseudonym; recorded in the erasures table. Running it again is harmless."""
    import getpass

    from comms_pipeline.pipeline.erasure import erase

    if not yes:
        click.confirm(f"Erase every piece of personal data of {ref}? This cannot be undone",
                      abort=True)
    result = erase(app.engine, app.settings, ref, actor=f"cli:{actor or getpass.getuser()}")
    if result.already:
        click.echo(f"{ref}: already erased on {result.erased_at:%Y-%m-%d %H:%M} UTC by "
                   f"{result.erased_by} (as {result.pseudonym}); nothing more to erase")
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "nothing"
    click.echo(f"{ref}: erased, now {result.pseudonym} ({counts})")
