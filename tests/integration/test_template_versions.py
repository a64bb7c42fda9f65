"""Template versions on SQLite and PostgreSQL: a draft is not used until it is published; the
published version is the one rendered and recorded on the communication; rollback; history,
diff and previews of drafts; the migration's version 1 of templates that existed before."""

from __future__ import annotations

from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from comms_pipeline.cli.templates import templates
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline import template_versions as versions
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store import db as dbmod
from comms_pipeline.store.models import details_t, documents_t, template_versions_t
from tests import factories


def _sms(text: str) -> TemplateSpec:
    return TemplateSpec("BAL_SMS", "Balance", "sms", [VariantSpec("en", body_text=text)])


def _detail(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.header_id == header_id)).one()


def _send(engine, settings, code="BAL_SMS"):
    header = trigger(engine, contact_ref="C-1", template_code=code)
    run_job("monitor", settings, engine)
    return _detail(engine, header)


def test_a_draft_is_not_used_until_published_and_rollback(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, name="Maria")
        first = versions.save_version(conn, _sms("v1 for #contact_information.name"))
    assert (first.version, first.published) == (1, True)  # a new template is live at once
    d = _send(engine, settings)
    assert (d.body, d.template_version) == ("v1 for Maria", 1)

    with engine.begin() as conn:
        draft = versions.save_version(conn, _sms("v2 for #contact_information.name"))
        again = versions.save_version(conn, _sms("v2 for #contact_information.name"))
    assert (draft.version, draft.published, draft.created) == (2, False, True)
    assert (again.version, again.created) == (2, False)  # same content: no version 3
    d = _send(engine, settings)
    assert (d.body, d.template_version) == ("v1 for Maria", 1)  # the draft is not used

    with engine.begin() as conn:
        assert versions.publish_version(conn, "BAL_SMS") == (1, 2)
    d = _send(engine, settings)
    assert (d.body, d.template_version) == ("v2 for Maria", 2)

    with engine.begin() as conn:  # rollback: publish the earlier version again
        assert versions.publish_version(conn, "BAL_SMS", 1) == (2, 1)
        states = [(h["version"], h["state"]) for h in versions.history(conn, "BAL_SMS")]
    assert states == [(1, "live"), (2, "published before")]
    d = _send(engine, settings)
    assert (d.body, d.template_version) == ("v1 for Maria", 1)


def test_an_email_records_the_version_live_at_its_merge(engine, settings):
    def spec(word: str) -> TemplateSpec:
        return TemplateSpec("BAL_EMAIL", "Balance", "email", [VariantSpec(
            "en", subject=f"{word} subject", body_html=f"<p>{word} body</p>")])

    with engine.begin() as conn:
        factories.contact(conn)
        versions.save_version(conn, spec("Old"))
        versions.save_version(conn, spec("New"))  # a draft
    header = trigger(engine, contact_ref="C-1", template_code="BAL_EMAIL")
    run_job("monitor", settings, engine)  # the entry waits for its merge
    with engine.begin() as conn:
        versions.publish_version(conn, "BAL_EMAIL", 2)  # published before the merge
    run_job("email-monitor", settings, engine)
    d = _detail(engine, header)
    assert (d.subject, d.template_version) == ("New subject", 2)
    with engine.connect() as conn:
        eml = conn.execute(select(documents_t.c.content)
                           .where(documents_t.c.detail_id == d.id)).scalar_one()
    assert b"New body" in eml and b"Old body" not in eml


def test_an_event_rule_sends_the_live_version(engine, settings):
    from comms_pipeline.notifications.types import Definitions, RuleDef, save_definitions

    with engine.begin() as conn:
        factories.contact(conn, name="Maria")
        versions.save_version(conn, _sms("live #contact_information.name"))
        versions.save_version(conn, _sms("draft #contact_information.name"))
        save_definitions(conn, Definitions({}, {}, {"BAL_RULE": RuleDef(
            name="Balance", entity="wallet", event="low", sms_template="BAL_SMS")}))
    trigger(engine, contact_ref="C-1", event="wallet.low", entities={"wallet": {"number": "W-1"}})
    run_job("monitor", settings, engine)
    run_job("monitor", settings, engine)  # the rule's child request
    with engine.connect() as conn:
        sent = conn.execute(select(details_t.c.body, details_t.c.template_version)).all()
    assert [tuple(r) for r in sent] == [("live Maria", 1)]


@click.group()
def root() -> None:
    """Stands in for the main ``comms`` group."""


root.add_command(templates)


@pytest.fixture
def cli(settings, engine):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1004", name="John Smith")
    app = SimpleNamespace(settings=settings, engine=engine)

    def run(*args: str, expect: int = 0) -> str:
        result = CliRunner().invoke(root, ["templates", *args], obj=app)
        assert result.exit_code == expect, result.output + repr(result.exception)
        return result.output

    return run


def _dir(root_dir, text: str, name: str = "Low balance"):
    folder = root_dir / "low"
    folder.mkdir(exist_ok=True)
    (folder / "template.toml").write_text(
        f'code = "LOW"\nname = "{name}"\nmedia = "sms"\n', encoding="utf-8")
    (folder / "en.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def test_cli_history_diff_preview_draft_and_publish(cli, tmp_path):
    folder = _dir(tmp_path, "Your balance is low.")
    assert "version 1, live" in cli("add", str(folder))
    _dir(tmp_path, "Your balance is very low.", name="Low balance (2)")
    assert "version 2, a draft" in cli("update", str(folder))
    assert "unchanged: version 2" in cli("update", str(folder))

    assert "Your balance is low." in cli("preview", "LOW", "--contact", "C-1004")
    assert "very low" in cli("preview", "LOW", "--contact", "C-1004", "--draft")
    assert "very low" in cli("show", "LOW", "--version", "2")
    assert "version: 2 (not live; live: 1)" in cli("show", "LOW", "--draft")
    shown = cli("show", "LOW")
    assert "very low" not in shown and "version: 1 (live)" in shown

    lines = cli("history", "LOW").splitlines()
    assert lines[0].split() == ["VERSION", "STATE", "CREATED", "PUBLISHED", "BY"]
    assert [line.split()[:2] for line in lines[1:]] == [["1", "live"], ["2", "draft"]]

    assert cli("diff", "LOW", "1", "2").splitlines() == [
        "--- LOW@v1/template.toml", "+++ LOW@v2/template.toml", "@@ -1,5 +1,5 @@",
        ' code = "LOW"', '-name = "Low balance"', '+name = "Low balance (2)"',
        ' media = "sms"', ' direction = "outgoing"', ' classification = "customer_care"',
        "--- LOW@v1/en.txt", "+++ LOW@v2/en.txt", "@@ -1 +1 @@",
        "-Your balance is low.", "+Your balance is very low."]
    assert "are the same" in cli("diff", "LOW", "2", "2")
    assert "has no version 7" in cli("diff", "LOW", "1", "7", expect=1)

    assert "version 2 is live (was 1)" in cli("publish", "LOW")
    assert "has no draft" in cli("preview", "LOW", "--contact", "C-1004", "--draft",
                                 expect=1)
    assert "very low" in cli("preview", "LOW", "--contact", "C-1004")
    assert "version 1 is live (was 2)" in cli("publish", "LOW", "--version", "1")
    assert "already live" in cli("publish", "LOW", "--version", "1")
    assert "no template with code 'NOPE'" in cli("publish", "NOPE", expect=1)
    _dir(tmp_path, "Published at once.")
    assert "version 3, live" in cli("update", "--publish", str(folder))


def test_migration_makes_existing_templates_version_one(db_url):
    """A database at the revision before 0016 with a template: after the upgrade it is its
    own version 1, live, and sends as before."""
    _downgrade(db_url)  # the fixture's database is at head: go back first
    engine = create_engine(db_url)
    with engine.begin() as conn:
        tid = conn.execute(text(
            "INSERT INTO templates (code, name, media, direction, classification, "
            "referring_entities, unrestricted_params, default_language, active, created_at, "
            "updated_at) VALUES ('OLD', 'Old one', 'sms', 'outgoing', 'customer_care', '[]', "
            "'[]', 'en', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id")).scalar_one()
        conn.execute(text("INSERT INTO template_variants (template_id, language, body_text) "
                          "VALUES (:t, 'en', 'Hello from before')"), {"t": tid})
    engine.dispose()
    dbmod.upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(select(template_versions_t)).one()
        assert (row.template_code, row.version, row.created_by) == ("OLD", 1, "migration 0016")
        assert row.published_at is not None
        assert row.content["variants"] == [{"language": "en", "subject": None,
                                            "body_html": None,
                                            "body_text": "Hello from before"}]
        assert versions.live_version(conn, "OLD") == 1
        assert versions.fetch_version(conn, "OLD", 1).name == "Old one"
    with engine.begin() as conn:
        saved = versions.save_version(conn, TemplateSpec(
            "OLD", "Old one", "sms", [VariantSpec("en", body_text="Hello, edited")]))
    assert (saved.version, saved.published) == (2, False)
    engine.dispose()


def _downgrade(url: str) -> None:
    from alembic import command

    command.downgrade(dbmod.alembic_config(url), "0008")
