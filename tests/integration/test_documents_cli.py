"""``comms documents list|get``: agents read back what was sent, from where it is kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from comms_pipeline.cli.documents import documents as documents_cli
from comms_pipeline.daemons.storage import StorageDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.db import make_engine
from comms_pipeline.store.models import documents_t
from tests.conftest import make_settings
from tests.integration.documents_factory import add_entries, documents, ensure_contact, make_pdf


@pytest.fixture
def app(tmp_path, request):
    """Settings and engine as the ``comms`` root command hands them to its groups."""
    made = []

    def build(url: str, **env: str) -> SimpleNamespace:
        settings = make_settings(url, tmp_path / "var", **env)
        engine = make_engine(settings.database_url)
        made.append(engine)
        return SimpleNamespace(settings=settings, engine=engine)

    yield build
    for engine in made:
        engine.dispose()


def cli(app: SimpleNamespace, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(documents_cli, list(args), obj=app)


def test_get_returns_a_stored_letter_from_s3(db_url, s3_bucket, app, tmp_path):
    ctx = app(db_url, **s3_bucket.env(prefix="letters"))
    pdf = make_pdf(pages=2)
    (letter,) = add_entries(ctx.engine, "letter", 1, contact_ref="C-42",
                            content=lambda i, to: pdf)
    add_entries(ctx.engine, "email", 1, contact_ref="C-42")
    add_entries(ctx.engine, "email", 1, contact_ref="C-other")
    Runner(ctx.settings, ctx.engine, StorageDaemon(ctx.settings, ctx.engine), once=True).run()
    doc = next(d for d in documents(ctx.engine) if d["detail_id"] == letter)
    # Drop the copy to send: what comes back can only have come from S3.
    with ctx.engine.begin() as conn:
        conn.execute(update(documents_t).where(documents_t.c.id == doc["id"])
                     .values(content=None))

    listed = cli(ctx, "list", "--contact", "C-42")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()[1:]
    assert len(lines) == 2
    assert any(line.split()[:2] == [str(doc["id"]), "letter"] and " s3 " in line
               for line in lines)

    out = tmp_path / "letter.pdf"
    got = cli(ctx, "get", str(doc["id"]), "-o", str(out))
    assert got.exit_code == 0, got.output
    assert out.read_bytes() == pdf
    assert doc["location"] in got.output


def test_get_before_storage_and_to_stdout(sqlite_url, app):
    ctx = app(sqlite_url)
    add_entries(ctx.engine, "email", 1, contact_ref="C-1")
    (doc,) = documents(ctx.engine)
    got = cli(ctx, "get", str(doc["id"]), "-o", "-")
    assert got.exit_code == 0
    assert got.stdout_bytes == doc["content"]


def test_tampered_copy_is_refused(sqlite_url, app, tmp_path):
    ctx = app(sqlite_url)
    add_entries(ctx.engine, "letter", 1, contact_ref="C-1")
    Runner(ctx.settings, ctx.engine, StorageDaemon(ctx.settings, ctx.engine), once=True).run()
    (doc,) = documents(ctx.engine)
    Path(doc["location"]).write_bytes(b"%PDF-1.4 forged")
    got = cli(ctx, "get", str(doc["id"]), "-o", str(tmp_path / "x.pdf"))
    assert got.exit_code == 1
    assert "does not match its recorded SHA-256" in got.output
    assert not (tmp_path / "x.pdf").exists()


def test_unknown_contact_document_and_empty_list(sqlite_url, app, tmp_path):
    ctx = app(sqlite_url)
    ensure_contact(ctx.engine, "C-empty")
    missing = cli(ctx, "list", "--contact", "C-nobody")
    assert missing.exit_code == 1 and "no contact with reference 'C-nobody'" in missing.output
    empty = cli(ctx, "list", "--contact", "C-empty")
    assert empty.exit_code == 0 and "no documents for C-empty" in empty.output
    unknown = cli(ctx, "get", "999", "-o", str(tmp_path / "x"))
    assert unknown.exit_code == 1 and "no document with id 999" in unknown.output
