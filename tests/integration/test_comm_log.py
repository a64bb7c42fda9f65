"""The communications log on SQLite and PostgreSQL: interactions logged by agents, drafts,
follow-ups that refer to earlier communications, and the pipeline's sends in the same log."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.notifications import communications, notifications, rules
from comms_pipeline.core.clock import utcnow
from comms_pipeline.notifications import log as comm_log
from comms_pipeline.notifications.log import CommunicationError
from comms_pipeline.store.models import comms_t, details_t, headers_t
from tests import factories


def test_follow_ups_refer_to_the_earlier_communication(engine):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1")
        call = comm_log.log_interaction(conn, contact_ref="C-1", media="phone",
                                        direction="incoming", category="complaint",
                                        subject="No signal", created_by="agent.anna")
        visit = comm_log.follow_up(conn, call, media="face_to_face", direction="outgoing",
                                   content="Technician replaced the amplifier")
        letter = comm_log.follow_up(conn, visit, media="letter", direction="outgoing",
                                    category="resolution", draft=True)
    with engine.connect() as conn:
        second = comm_log.get(conn, visit)
        earlier, later = comm_log.chain(conn, letter)
        _, after_call = comm_log.chain(conn, call)
    assert (second.follow_up_of_id, second.category, second.subject, second.contact_ref) == (
        call, "complaint", "No signal", "C-1")
    assert [e.id for e in earlier] == [call, visit] and later == []
    assert [e.id for e in after_call] == [visit]
    with engine.begin() as conn, pytest.raises(CommunicationError, match="is a draft"):
        comm_log.follow_up(conn, letter, media="phone", direction="outgoing")
    with engine.begin() as conn:
        comm_log.complete(conn, letter, content="Apology letter sent")
    with engine.connect() as conn:
        done = comm_log.get(conn, letter)
    assert (done.status, done.content) == ("completed", "Apology letter sent")
    assert done.completed_at is not None


def test_bad_input_is_refused_clearly(engine):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1")
    cases = [
        ({"contact_ref": "C-404", "media": "phone", "direction": "incoming"}, "no contact"),
        ({"contact_ref": "C-1", "media": "fax", "direction": "incoming"}, "unknown media"),
        ({"contact_ref": "C-1", "media": "sms", "direction": "sideways"}, "direction"),
    ]
    for kwargs, message in cases:
        with engine.begin() as conn, pytest.raises(CommunicationError, match=message):
            comm_log.log_interaction(conn, **kwargs)
    with engine.begin() as conn, pytest.raises(CommunicationError, match="no communication 99"):
        comm_log.follow_up(conn, 99, media="phone", direction="outgoing")


def sent_detail(conn, contact_id: int, state: str) -> int:
    now = utcnow()
    header = conn.execute(insert(headers_t).values(
        contact_ref="C-1", template_code="SMS_HELLO", status="processed", created_at=now,
    ).returning(headers_t.c.id)).scalar_one()
    return conn.execute(insert(details_t).values(
        header_id=header, contact_id=contact_id, media="sms", direction="outgoing",
        address="+35799123456", body="Hello Maria", state=state, created_at=now,
        completed_at=now if state == "completed" else None,
    ).returning(details_t.c.id)).scalar_one()


def test_pipeline_sends_appear_in_the_same_log_once(engine):
    with engine.begin() as conn:
        contact_id = factories.contact(conn, ref="C-1")
        factories.sms_template(conn, category="payments")
        sent = sent_detail(conn, contact_id, "completed")
        pending = sent_detail(conn, contact_id, "awaiting_send")
        comm_log.log_interaction(conn, contact_ref="C-1", media="email", direction="incoming",
                                 category="inquiry")
        assert comm_log.log_sent(conn, [sent, pending]) == 1
        assert comm_log.log_sent(conn, [sent]) == 0
    with engine.begin() as conn:
        conn.execute(details_t.update().where(details_t.c.id == pending)
                     .values(state="completed", completed_at=utcnow()))
    with engine.begin() as conn:  # listing catches up with sends no hook logged
        entries = comm_log.list_for_contact(conn, "C-1")
        again = comm_log.list_for_contact(conn, "C-1")
    by_detail = {e.detail_id: e for e in entries}
    assert set(by_detail) == {None, sent, pending}
    assert (by_detail[sent].media, by_detail[sent].content, by_detail[sent].created_by,
            by_detail[sent].status) == ("sms", "Hello Maria", "pipeline", "completed")
    assert len(again) == 3
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(comms_t)).scalar_one() == 3


def test_the_cli_logs_follows_up_lists_and_shows(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-1")
    app = AppContext(None, settings, engine)
    cli = CliRunner()

    def run(group, *args):
        result = cli.invoke(group, list(args), obj=app, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = run(communications, "log", "--contact", "C-1", "--media", "phone", "--direction",
              "incoming", "--category", "inquiry", "--subject", "Roaming prices", "--by", "anna")
    first = int(re.search(r"communication (\d+) logged", out).group(1))
    out = run(communications, "follow-up", str(first), "--media", "email", "--direction",
              "outgoing", "--content", "Price list attached", "--draft")
    second = int(re.search(r"communication (\d+) logged", out).group(1))
    run(communications, "complete", str(second))
    listing = run(communications, "list", "--contact", "C-1")
    assert "Roaming prices" in listing and listing.count("completed") == 2
    shown = run(communications, "show", str(second))
    assert f"follow_up_of_id  {first}" in shown and "Price list attached" in shown
    assert "follows up:" in shown
    assert "no notification types" in run(notifications, "list")
    assert "RULE" in run(rules, "list")


def test_a_daemon_completing_an_entry_logs_it_in_the_same_transaction(engine, settings):
    """No listing needed: the SMS daemon's finish writes the log entry with the Completed
    state, and an external system's acknowledgement does the same for its entries."""
    from comms_pipeline.daemons.sms import SmsDaemon
    from comms_pipeline.pipeline.admin_records import add_external_system
    from comms_pipeline.queue.actions import apply_action
    from comms_pipeline.queue.runner import Runner

    with engine.begin() as conn:
        contact_id = factories.contact(conn, ref="C-1")
        factories.sms_template(conn, category="payments")
        sent = sent_detail(conn, contact_id, "awaiting_send")
        system = add_external_system(conn, "PORTAL", "Customer portal")
        portal = sent_detail(conn, contact_id, "awaiting_external")
        conn.execute(details_t.update().where(details_t.c.id == portal)
                     .values(external_system_id=system))
    assert Runner(settings, engine, SmsDaemon(settings, engine), once=True).run() == 1
    with engine.begin() as conn:
        apply_action(conn, portal, "complete", actor="test", external_system_id=system)
    with engine.connect() as conn:
        logged = conn.execute(select(comms_t.c.detail_id, comms_t.c.created_by,
                                     comms_t.c.status)).all()
    assert sorted(logged) == [(sent, "pipeline", "completed"), (portal, "pipeline", "completed")]


def test_log_sent_from_a_finishing_hook_skips_the_state_check(engine):
    with engine.begin() as conn:
        contact_id = factories.contact(conn, ref="C-1")
        detail = sent_detail(conn, contact_id, "awaiting_send")
        assert comm_log.log_sent(conn, [detail]) == 0
        assert comm_log.log_sent(conn, [detail], being_completed=True) == 1
        assert comm_log.log_sent(conn, [detail], being_completed=True) == 0
