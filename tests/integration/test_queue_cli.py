"""``comms queue``: a header row and one line per entry whatever the address holds, table /
JSON / CSV, names rather than ids; bulk retry and cancel by filter, with a dry run."""

from __future__ import annotations

import csv
import io
import json

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import add_contact
from comms_pipeline.store.models import addresses_t, contacts_t, details_t
from tests.integration.web_support import external_entries


@pytest.fixture(autouse=True)
def _default_logging():
    """``comms`` configures structlog onto CliRunner's captured stderr: put the defaults
    back, so later tests' logs are not written into a closed buffer."""
    yield
    structlog.reset_defaults()


def _invoke(settings, *args):
    app = AppContext()
    app._settings = settings
    result = CliRunner().invoke(cli, list(args), obj=app, catch_exceptions=False)
    return result


def _seed(engine):
    letter = external_entries(engine, None, 1, media="letter", state="awaiting_send",
                              address="4 Ledra Street\n1011 Nicosia\nCyprus")
    throttled = external_entries(engine, None, 2, media="sms", state="rejected",
                                 error_code="88", error_description="Throttling\nerror")
    invalid = external_entries(engine, None, 1, media="sms", state="rejected",
                               contact_ref="C-2", error_code="INVALID_ADDRESS",
                               error_description="malformed phone number")
    return letter, throttled, invalid


def test_list_has_a_header_and_one_line_per_entry(engine, settings):
    letter, throttled, invalid = _seed(engine)
    lines = _invoke(settings, "queue", "list").output.splitlines()
    assert lines[0].split()[:4] == ["ID", "CREATED", "MEDIA", "STATE"]
    assert len(lines) == 1 + 4  # the three-line address and the two-line error stay on one
    [row] = [line for line in lines if line.split()[0] == str(letter[0])]
    assert "4 Ledra Street / 1011 Nicosia" in row and "EXT" in row  # the template's code
    assert "88: Throttling error" in "\n".join(lines)
    assert _invoke(settings, "queue", "list", "--state", "Expired").output.strip() \
        == "no queue entries match"
    table = list(csv.DictReader(io.StringIO(_invoke(settings, "queue", "list", "--format",
                                                    "csv").output)))
    assert {r["id"] for r in table} == {str(i) for i in letter + throttled + invalid}
    assert next(r for r in table if r["id"] == str(letter[0]))["address"] \
        == "4 Ledra Street\n1011 Nicosia\nCyprus"  # CSV quotes it whole
    rows = json.loads(_invoke(settings, "queue", "list", "--code", "88", "--format",
                              "json").output)
    assert sorted(r["id"] for r in rows) == sorted(throttled)
    assert {(r["state"], r["contact"]) for r in rows} == {("Rejected", "C-1")}


def test_bulk_retry_and_cancel_by_filter(engine, settings):
    letter, throttled, invalid = _seed(engine)
    with engine.begin() as conn:  # a retry goes to the contact's address as it is now
        contact_id = conn.execute(select(contacts_t.c.id).where(contacts_t.c.ref == "C-1")
                                  ).scalar_one_or_none()
        if contact_id is None:
            contact_id = add_contact(conn, "C-1", "Test Person")
        conn.execute(insert(addresses_t).values(contact_id=contact_id, kind="phone",
                                                value="+35799100001", is_primary=True,
                                                created_at=utcnow()))
        conn.execute(update(details_t).where(details_t.c.id.in_(throttled))
                     .values(contact_id=contact_id))
    out = _invoke(settings, "queue", "retry", "--code", "88", "--dry-run").output
    assert out.strip() == "would queue 2 entries again (dry run)"
    assert _states(engine, throttled) == {"rejected"}
    assert "2 entries queued again" in _invoke(settings, "queue", "retry", "--code", "88",
                                               "--media", "sms").output
    assert _states(engine, throttled) == {"awaiting_send"}
    assert _states(engine, invalid) == {"rejected"}  # another code: left alone
    out = _invoke(settings, "queue", "cancel", "--media", "sms", "--dry-run").output
    assert out.strip() == "would cancel 2 (dry run)"
    assert "2 cancelled" in _invoke(settings, "queue", "cancel", "--media", "sms",
                                    "--contact", "C-1").output
    assert _states(engine, throttled) == {"rejected"}
    assert _states(engine, letter) == {"awaiting_send"}
    refused = CliRunner().invoke(cli, ["queue", "retry"], obj=_app(settings))
    assert refused.exit_code == 2 and "name the entries" in refused.output


def _app(settings):
    app = AppContext()
    app._settings = settings
    return app


def _states(engine, ids):
    with engine.connect() as conn:
        return set(conn.execute(select(details_t.c.state).where(details_t.c.id.in_(ids)))
                   .scalars())


def test_show_names_what_the_entry_points_at(engine, settings):
    from tests.integration.web_support import add_system

    system_id, _ = add_system(engine, "CRM")
    [entry] = external_entries(engine, system_id, 1, contact_ref="C-77")
    with engine.connect() as conn:
        header_id = conn.execute(select(details_t.c.header_id)
                                 .where(details_t.c.id == entry)).scalar_one()
    shown = _invoke(settings, "queue", "show", str(entry))
    assert shown.exit_code == 0, shown.output
    fields = {k.strip(): v.strip() for k, _, v in
              (line.partition(": ") for line in shown.output.split("history:")[0].splitlines())}
    assert fields["id"] == str(entry)
    assert fields["contact"] == "C-77" and fields["template"] == "EXT"
    assert fields["system"] == "CRM"
    assert fields["request"].startswith(f"{header_id} ")
    for raw in ("header_id", "contact_id", "template_id", "external_system_id"):
        assert raw not in fields
    assert fields["body"].endswith("characters>")
    assert _invoke(settings, "queue", "show", "999999").exit_code == 1
