"""Say it before it happens (issue 10 item 2): ``comms trigger``, ``comms templates preview``
and ``POST /v1/requests`` tell which tags would be missing for the data given, and
``comms trigger`` refuses an unknown template or contact as the Web API does (unless
``--no-check``). SQLite and PostgreSQL."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.requests import trigger
from comms_pipeline.cli.templates import templates
from comms_pipeline.notifications.types import load_builtin_notifications
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.pipeline.template_files import load_builtin_templates
from comms_pipeline.store.models import headers_t
from tests.integration.web_support import add_system, bearer, client

#: The README's event example before it carried the amount and the date.
BARE_PAYMENT = '{"number": "P-5001"}'
MISSING = "missing: #payment.amount, #payment.posted_on"


@click.group()
def root() -> None:
    """Stands in for the main ``comms`` group."""


root.add_command(trigger)
root.add_command(templates)


@pytest.fixture
def cli(settings, engine):
    with engine.begin() as conn:
        load_builtin_templates(conn)
        load_builtin_notifications(conn)
        add_contact(conn, "C-1001", "Maria Georgiou", language="el", addresses=[
            AddressSpec("phone", "+35799100001", "mobile", True)])
    app = AppContext(_settings=settings, _engine=engine)

    def run(*args: str, expect: int = 0):
        result = CliRunner().invoke(root, list(args), obj=app)
        assert result.exit_code == expect, result.output + repr(result.exception)
        return result

    return run


def headers(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(headers_t.c.template_code)).scalars().all()


def test_trigger_refuses_unknown_template_or_contact_unless_no_check(cli, engine):
    refused = cli("trigger", "--contact", "C-1001", "--template", "NO_SUCH", expect=1)
    assert refused.stderr.strip() == "Error: unknown template 'NO_SUCH'"
    refused = cli("trigger", "--contact", "C-404", "--template", "PAYMENT_RECEIPT_SMS",
                  expect=1)
    assert refused.stderr.strip() == "Error: unknown contact 'C-404'"
    assert headers(engine) == []
    cli("trigger", "--contact", "C-404", "--template", "NO_SUCH", "--no-check")
    assert headers(engine) == ["NO_SUCH"]


def test_trigger_and_preview_tell_the_missing_tags_on_stderr(cli, engine):
    result = cli("trigger", "--contact", "C-1001", "--template", "PAYMENT_RECEIPT_SMS",
                 "--entity", f"payment={BARE_PAYMENT}")
    assert result.stdout.startswith("request header ")
    assert f"template 'PAYMENT_RECEIPT_SMS' (el): {MISSING}" in result.stderr
    by_event = cli("trigger", "--contact", "C-1001", "--event", "posted",
                   "--entity", f"payment={BARE_PAYMENT}")
    assert f"template 'PAYMENT_RECEIPT' (el): {MISSING}" in by_event.stderr
    assert f"template 'PAYMENT_RECEIPT_SMS' (el): {MISSING}" in by_event.stderr
    complete = cli("trigger", "--contact", "C-1001", "--template", "PAYMENT_RECEIPT_SMS",
                   "--entity", 'payment={"number": "P-1", "amount": "25.00", '
                   '"posted_on": "2026-12-01"}')
    assert complete.stderr == ""
    preview = cli("templates", "preview", "PAYMENT_RECEIPT_SMS", "--contact", "C-1001",
                  "--entity", f"payment={BARE_PAYMENT}")
    assert MISSING in preview.stderr and "P-5001" in preview.stdout


def test_web_api_warns_of_the_missing_tags(settings, engine):
    with engine.begin() as conn:
        load_builtin_templates(conn)
        add_contact(conn, "C-1001", "Maria Georgiou", language="el", addresses=[
            AddressSpec("phone", "+35799100001", "mobile", True)])
    api = client(settings, engine)
    auth = bearer(add_system(engine, "CRM")[1])
    r = api.post("/v1/requests", headers=auth, json={
        "contact_ref": "C-1001", "template_code": "PAYMENT_RECEIPT_SMS",
        "entities": {"payment": {"number": "P-5001"}}})
    assert r.status_code == 202, r.json()
    assert r.json()["warnings"] == [
        f"template 'PAYMENT_RECEIPT_SMS' (el): {MISSING}; the communication would be "
        "rejected (MISSING_DATA)"]
    ok = api.post("/v1/requests", headers=auth, json={
        "contact_ref": "C-1001", "template_code": "PAYMENT_RECEIPT_SMS",
        "entities": {"payment": {"number": "P-1", "amount": "25.00",
                                 "posted_on": "2026-12-01"}}})
    assert ok.json()["warnings"] == []
