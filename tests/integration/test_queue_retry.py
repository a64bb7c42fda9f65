"""``comms queue retry`` cannot make things worse (issue 10 item 7), on SQLite and PostgreSQL:
permanent rejections are refused unless --force, with the reason; a retry after the contact's
address was corrected goes to the new address; history is written by the shared transition
mechanism."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select, update

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import build_daemon
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import addresses_t, details_t, transitions_t
from tests import factories


def _retry(settings, engine, *args):  # type: ignore[no-untyped-def]
    app = AppContext(_settings=settings, _engine=engine)
    return CliRunner().invoke(cli, ["queue", "retry", *args], obj=app, catch_exceptions=False)


def _entry(engine, entry_id):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.id == entry_id)).one()


def test_an_invalid_address_is_refused_until_corrected_then_sent_to_the_new_one(settings,
                                                                                 engine):
    with engine.begin() as conn:
        factories.contact(conn, phone="12")
        factories.sms_template(conn)
    trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    run_job("monitor", settings, engine)
    (entry_id,) = (r.id for r in [_entry(engine, 1)])
    rejected = _entry(engine, entry_id)
    assert (rejected.state, rejected.error_code) == ("rejected", "INVALID_ADDRESS")

    refused = _retry(settings, engine, str(entry_id))
    assert refused.exit_code == 1
    assert ("rejected INVALID_ADDRESS: the contact's address is not valid: not a valid phone "
            "number: '12'; correct the contact's address first") in refused.output
    assert _retry(settings, engine, "--force", str(entry_id)).exit_code == 1  # not even so
    assert _entry(engine, entry_id).state == "rejected"

    with engine.begin() as conn:  # the operator corrects the contact's number
        conn.execute(update(addresses_t).where(addresses_t.c.kind == "phone")
                     .values(value="+35799123456"))
    done = _retry(settings, engine, str(entry_id))
    assert done.exit_code == 0, done.output
    assert "1 entry queued again" in done.output
    assert "to the contact's address now, +35799123456 (was 12)" in done.output
    again = _entry(engine, entry_id)
    assert (again.state, again.address, again.error_code) == ("awaiting_send", "+35799123456",
                                                              None)
    assert again.body == "Hello Maria Georgiou"  # merged now: it was rejected before
    with engine.connect() as conn:
        history = conn.execute(select(transitions_t.c.from_state, transitions_t.c.to_state,
                                      transitions_t.c.actor)
                               .where(transitions_t.c.kind == "detail",
                                      transitions_t.c.row_id == entry_id)
                               .order_by(transitions_t.c.id)).all()
    assert history[-1] == ("rejected", "awaiting_send", "cli:retry")

    Runner(settings, engine, build_daemon("sms", settings, engine), once=True).run()
    (sent,) = [json.loads(line) for f in (settings.var_dir / "out" / "sms").glob("*.jsonl")
               for line in f.read_text().splitlines()]
    assert (sent["to"], sent["text"]) == ("+35799123456", "Hello Maria Georgiou")
    assert _entry(engine, entry_id).state == "completed"


def _sent_entry(settings, engine):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
    trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    run_job("monitor", settings, engine)
    return _entry(engine, 1).id


def test_permanent_rejections_are_refused_unless_forced(settings, engine):
    entry_id = _sent_entry(settings, engine)
    for code in ("MISSING_DATA", "TEMPLATE_ERROR", "SUPPRESSED", "OPTED_OUT", "INVALID_ADDRESS",
                 "0x0000000B"):  # the last two: the gateway refused an unchanged address
        with engine.begin() as conn:
            conn.execute(update(details_t).where(details_t.c.id == entry_id).values(
                state="rejected", error_code=code, error_description="as the test says"))
        refused = _retry(settings, engine, str(entry_id))
        assert refused.exit_code == 1, code
        assert f"rejected {code}, a permanent rejection" in refused.output
        assert _entry(engine, entry_id).state == "rejected"
    forced = _retry(settings, engine, "--force", str(entry_id))
    assert forced.exit_code == 0 and "1 entry queued again" in forced.output
    assert _entry(engine, entry_id).state == "awaiting_send"


def test_expired_and_transient_failures_are_retried_and_unknown_ids_named(settings, engine):
    entry_id = _sent_entry(settings, engine)
    for state, code in (("expired", "EXPIRED"), ("rejected", "MAX_ATTEMPTS")):
        with engine.begin() as conn:
            conn.execute(update(details_t).where(details_t.c.id == entry_id).values(
                state=state, error_code=code))
        ok = _retry(settings, engine, str(entry_id))
        assert ok.exit_code == 0 and "1 entry queued again" in ok.output, ok.output
        entry = _entry(engine, entry_id)
        assert (entry.state, entry.error_code, entry.attempts) == ("awaiting_send", None, 0)
    busy = _retry(settings, engine, str(entry_id), "999")
    assert busy.exit_code == 1
    assert f"not retried {entry_id}: it is awaiting_send, not Rejected or Expired" in busy.output
    assert "not retried 999: no such queue entry" in busy.output


def test_an_email_rejected_for_its_address_is_merged_again_for_the_corrected_one(settings,
                                                                                 engine):
    from comms_pipeline.pipeline.documents import document_contents

    with engine.begin() as conn:
        factories.contact(conn, email="maria.example.com", phone=None)
        factories.email_template(conn)
    trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    run_job("monitor", settings, engine)
    run_job("email-monitor", settings, engine)
    assert _entry(engine, 1).error_code == "INVALID_ADDRESS"
    with engine.begin() as conn:
        conn.execute(update(addresses_t).where(addresses_t.c.kind == "email")
                     .values(value="maria@example.com"))
    done = _retry(settings, engine, "1")
    assert done.exit_code == 0, done.output
    assert _entry(engine, 1).state == "awaiting_merge"  # its document is made for the new one
    run_job("email-monitor", settings, engine)
    entry = _entry(engine, 1)
    assert (entry.state, entry.address) == ("awaiting_send", "maria@example.com")
    with engine.connect() as conn:
        (eml,) = document_contents(conn, [1]).values()
    assert b"maria@example.com" in eml
