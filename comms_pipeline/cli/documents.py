"""``comms documents``: what agents read — a contact's stored emails and letters."""

from __future__ import annotations

import sys

import click

from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline.documents import (
    contact_exists,
    fetch_document,
    list_documents,
)


def _app():
    """The root command's context object: it has ``.settings`` and ``.engine``."""
    app = click.get_current_context().obj
    if app is None:
        raise click.UsageError("no application context (run this through `comms`)")
    return app


@click.group("documents")
def documents() -> None:
    """Stored emails (.eml) and letters (.pdf), as sent to a contact."""


@documents.command("list")
@click.option("--contact", "contact_ref", required=True, metavar="REF",
              help="the contact's reference")
def list_cmd(contact_ref: str) -> None:
    """List a contact's documents, newest first."""
    app = _app()
    docs = list_documents(app.engine, contact_ref)
    if not docs and not contact_exists(app.engine, contact_ref):
        raise click.ClickException(f"no contact with reference {contact_ref!r}")
    if not docs:
        click.echo(f"no documents for {contact_ref}")
        return
    click.echo(f"{'ID':>8}  {'KIND':<6}  {'CREATED (UTC)':<19}  {'SIZE':>9}  {'STATE':<17}  "
               f"{'STORED IN':<9}  TO / SUBJECT")
    for d in docs:
        where = d.storage_backend or "-"
        about = " / ".join(x for x in (d.address, d.subject) if x)
        click.echo(f"{d.id:>8}  {d.kind:<6}  {d.created_at:%Y-%m-%d %H:%M:%S}  {d.size:>9}  "
                   f"{d.state:<17}  {where:<9}  {about}")


@documents.command("get")
@click.argument("document_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              required=True, help="file to write (- for standard output)")
def get_cmd(document_id: int, output: str) -> None:
    """Fetch one document from wherever it is kept (S3, SFTP, local folder or database)."""
    app = _app()
    try:
        info, data = fetch_document(app.settings, app.engine, document_id)
    except CommsError as exc:
        raise click.ClickException(str(exc)) from None
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with open(output, "wb") as fh:
        fh.write(data)
    source = info.location or "the database"
    click.echo(f"document {info.id} ({info.kind}, {len(data)} bytes) from {source} -> {output}",
               err=True)
