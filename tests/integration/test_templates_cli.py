"""``comms templates``: files in, validation, preview, tags, on SQLite and PostgreSQL."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from comms_pipeline.cli.templates import templates
from comms_pipeline.pipeline import admin_records as admin
from comms_pipeline.pipeline import entity_sources
from comms_pipeline.pipeline.admin_records import AddressSpec
from comms_pipeline.pipeline.links import verify_link
from comms_pipeline.pipeline.template_files import BUILTIN_DIR, load_template_dir


@click.group()
def root() -> None:
    """Stands in for the main ``comms`` group, which sets ``ctx.obj`` the same way."""


root.add_command(templates)


class WithSources:
    """The settings plus an ``entity_sources`` section."""

    def __init__(self, settings, sources) -> None:
        self._settings = settings
        self.entity_sources = sources

    def __getattr__(self, name):
        return getattr(self._settings, name)


@pytest.fixture
def cli(settings, engine):
    with engine.begin() as conn:
        admin.add_contact(conn, "C-1001", "Maria Georgiou", language="el",
                          addresses=[AddressSpec("email", "maria@example.com",
                                                 is_primary=True)])
        admin.add_contact(conn, "C-1004", "John Smith", language="en")
    app = SimpleNamespace(settings=settings, engine=engine)

    def run(*args: str, expect: int = 0):
        result = CliRunner().invoke(root, ["templates", *args], obj=app)
        assert result.exit_code == expect, result.output + repr(result.exception)
        return result.output

    run.app = app
    return run


def test_builtin_templates_list_show_validate_and_preview(cli, tmp_path):
    assert cli("load-builtin").startswith("loaded 12 built-in templates: ACCOUNT_BALANCE")
    listing = cli("list")
    assert "PAYMENT_RECEIPT" in listing and "en,el" in listing
    shown = cli("show", "PAYMENT_RECEIPT", "--export", str(tmp_path / "exported"))
    assert "--- el.subject ---\nΑπόδειξη πληρωμής #payment.number" in shown
    assert load_template_dir(tmp_path / "exported") == load_template_dir(
        BUILTIN_DIR / "payment_receipt")
    assert "0 error(s)" in cli("validate", "PAYMENT_RECEIPT")

    payment = 'payment={"number": "P-5001", "amount": 42.5, "posted_on": "2024-10-02"}'
    greek = cli("preview", "PAYMENT_RECEIPT", "--contact", "C-1001", "--entity", payment)
    assert "language: el" in greek
    assert "subject: Απόδειξη πληρωμής P-5001" in greek
    assert "ύψους <strong>42,50\xa0€</strong>" in greek
    english = cli("preview", "PAYMENT_RECEIPT", "--contact", "C-1001", "--entity", payment,
                  "--language", "en")
    assert "for €42.50, has been successfully processed on 2 Oct 2024." in english

    sms = cli("preview", "PAYMENT_RECEIPT_SMS", "--contact", "C-1004", "--entity", payment)
    assert "Company ZX: payment P-5001 of €42.50 received on 02/10/2024." in sms
    assert "(sms: " in sms and "GSM-7, 1 part(s))" in sms


def test_preview_renders_a_verifiable_dynamic_link(cli):
    cli("load-builtin")
    out = cli("preview", "SERVICE_REQUEST_RESPONSE", "--contact", "C-1004", "--entity",
              'service_request={"number": "SR-7002", "type": "Billing enquiry"}')
    line = next(s for s in out.splitlines() if "/links/service_request_response_acceptance?t="
                in s and not s.startswith("<"))
    token = line.strip().split("?t=", 1)[1]
    payload = verify_link(token, "service_request_response_acceptance", cli.app.settings)
    assert (payload.contact_ref, payload.subject) == ("C-1004", "SR-7002")


def test_preview_reads_entities_from_data_sources(cli, db_url):
    cli("load-builtin")
    entity_sources.load_demo_business(db_url)
    demo = entity_sources.DEMO_SOURCES
    sources = tomllib.loads(demo.read_text())["entity_sources"]
    for section in sources.values():
        section["database_url"] = db_url
    cli.app.settings = WithSources(cli.app.settings, sources)
    try:
        out = cli("preview", "BILL_ISSUED", "--contact", "C-1004", "--entity", 'bill={"id": 2}',
                  "--language", "en")
    finally:
        entity_sources.dispose_engines()
    assert "subject: Your bill B-2024-0902 has been issued" in out
    assert "Dear John Smith," in out
    assert "settled by 21 October 2024" in out
    assert "€64.90" in out


def test_tags_and_missing_params(cli):
    assert cli("tags", "--entity", "payment", "--prefix", "#payment.acc").splitlines()[:2] == [
        "#payment.accounts_receivable.balance", "#payment.accounts_receivable.credit_limit"]
    links = cli("tags", "--prefix", "#dynamic").splitlines()
    assert "#dynamic_link.opt_out_direct_marketing" in links
    assert "#dynamic_link.service_request_final_resolution_acceptance" not in links
    cli("load-builtin")
    assert cli("missing-params", "MONTHLY_OFFER", "--param", "offer_code=AUTUMN").split() == [
        "offer_title", "offer_details"]
    assert cli("missing-params", "PAYMENT_RECEIPT") == ""


def _template_dir(root: Path, sms_text: str) -> Path:
    folder = root / "low_balance"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "template.toml").write_text(
        'code = "LOW_BALANCE"\nname = "Low balance"\nmedia = "sms"\n'
        'referring_entities = ["wallet"]\n', encoding="utf-8")
    (folder / "en.txt").write_text(sms_text + "\n", encoding="utf-8")
    return folder


def test_add_update_and_validation_errors(cli, tmp_path):
    good = _template_dir(tmp_path, "Wallet #wallet.number is low.")
    assert "added template LOW_BALANCE" in cli("add", str(good))
    assert "use update" in cli("add", str(good), expect=1)
    (good / "en.txt").write_text("Wallet #wallet.number: top up soon.\n")
    assert "updated template LOW_BALANCE" in cli("update", str(good))  # a draft: not live yet
    wallet = ("--contact", "C-1004", "--entity", 'wallet={"number": "W-9"}')
    assert "Wallet W-9 is low." in cli("preview", "LOW_BALANCE", *wallet)
    assert "Wallet W-9: top up soon." in cli("preview", "LOW_BALANCE", "--draft", *wallet)
    assert "version 2 is live" in cli("publish", "LOW_BALANCE")
    assert "Wallet W-9: top up soon." in cli("preview", "LOW_BALANCE", *wallet)

    bad = _template_dir(tmp_path / "bad", "#wallet.numbr #dynamic_link.service_request_final_"
                        "resolution_acceptance " + "x" * 170)
    report = cli("validate", str(bad), expect=1)
    assert "en.txt:1:1: error: #wallet.numbr: unknown field 'numbr' of 'wallet'" in report
    assert "is not enabled" in report
    assert "LOW_BALANCE: 2 error(s)" in report
    refused = cli("update", str(bad), expect=1)
    assert "template 'LOW_BALANCE' is not valid" in refused
    still = cli("show", "LOW_BALANCE")
    assert "top up soon" in still
    too_long = _template_dir(tmp_path / "long", "x" * 170)
    assert "sms text is at least 170 characters" in cli("validate", str(too_long), expect=1)
    assert "no template with code 'NOPE'" in cli("show", "NOPE", expect=1)
