"""Done-when of the bounce loop, with a real MTA: a message the Email daemon hands to a real
Postfix (on loopback) for an address the next hop refuses comes back as Postfix's own DSN to
the message's VERP address, and the bounce receiver turns its entry Rejected 5.1.1 with the
remote MTA's diagnostic."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import details_t
from tests import factories
from tests.conftest import require_service
from tests.integration.bounce_support import (
    BOUNCE_DOMAIN,
    Receiver,
    bounce_env,
    history,
    reports,
)
from tests.integration.documents_factory import add_entries, details
from tests.integration.test_email_daemon import wait_for
from tests.servers.postfix import PostfixInstance, postfix_usable
from tests.servers.smtp import SmtpServer, free_port

REFUSAL = "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"


@pytest.fixture(scope="module")
def mta():  # type: ignore[no-untyped-def]
    """One Postfix for the module (it costs seconds to start): it relays example.org to a
    recording server that refuses nobody@, and bounces to a port each test's receiver takes."""
    require_service(postfix_usable(), "Postfix (Debian package postfix, run as root)")
    next_hop = SmtpServer().start()
    next_hop.handler.rcpt_replies["nobody@example.org"] = REFUSAL
    bounce_port = free_port()
    instance = PostfixInstance("example.org", next_hop.port, BOUNCE_DOMAIN, bounce_port).start()
    yield instance, next_hop, bounce_port
    instance.stop()
    next_hop.stop()


@pytest.fixture
def postfix_loop(sqlite_url, mta, make_engine_for):  # type: ignore[no-untyped-def]
    instance, next_hop, bounce_port = mta
    next_hop.handler.messages.clear()
    # One database: the receiver's writes are tested on both in test_bounces.py.
    settings, engine = make_engine_for(sqlite_url, **bounce_env(
        COMMS_BOUNCES_LISTEN_PORT=str(bounce_port),
        COMMS_GATEWAYS_EMAIL_BACKEND="smtp", COMMS_GATEWAYS_EMAIL_HOST="127.0.0.1",
        COMMS_GATEWAYS_EMAIL_PORT=str(instance.port), COMMS_GATEWAYS_EMAIL_TIMEOUT="10"))
    receiver = Receiver(settings, engine).start()
    yield settings, engine, instance, next_hop
    receiver.stop()


def test_postfix_dsn_turns_the_entry_rejected_5_1_1_with_the_diagnostic(postfix_loop):
    settings, engine, mta, next_hop = postfix_loop
    ids = add_entries(engine, "email", 2,
                      address=lambda i: ("nobody@example.org", "someone@example.org")[i])
    Runner(settings, engine, EmailDaemon(settings, engine), once=True).run()
    # Postfix took both (the DSN may already be back: the history says the entry was sent).
    assert ("awaiting_send", "completed") in [h[:2] for h in history(engine, ids[0])]

    def rejected() -> bool:
        return details(engine, ids)[ids[0]]["state"] == "rejected"

    try:
        wait_for(rejected, "Postfix's DSN to reach the receiver", timeout=30)
    except BaseException:
        print(mta.log()[-3000:])  # what Postfix did with it
        raise
    bounced, delivered = (details(engine, ids)[i] for i in ids)
    assert bounced["error_code"] == "5.1.1"
    assert "Recipient address rejected: User unknown" in bounced["error_description"]
    assert delivered["state"] == "completed"
    assert history(engine, ids[0])[-1] == ("completed", "rejected", "bounce:smtp", "5.1.1")
    assert [m.rcpt_tos for m in next_hop.messages] == [("someone@example.org",)]
    [report] = reports(engine)
    assert (report["detail_id"], report["kind"], report["outcome"]) == \
        (ids[0], "hard_bounce", "rejected")

    # The address is suppressed for every classification, and the next trigger to it is
    # Rejected SUPPRESSED by the Comms Monitor, with the reason and the date.
    with engine.begin() as conn:
        found = sup.is_suppressed(conn, "nobody@example.org", "email", "service", utcnow())
        assert found is not None and found.reason == "hard_bounce"
        assert found.source_detail_id == ids[0] and "5.1.1" in (found.description or "")
        factories.contact(conn, ref="C-NOBODY", email="nobody@example.org", phone=None)
        factories.email_template(conn, code="AFTER_BOUNCE")
    header = trigger(engine, contact_ref="C-NOBODY", template_code="AFTER_BOUNCE")
    run_job("monitor", settings, engine)  # (add_entries left its own header waiting too)
    with engine.connect() as conn:
        (code, why), = conn.execute(select(details_t.c.error_code, details_t.c.error_description)
                                    .where(details_t.c.header_id == header)).all()
    assert code == "SUPPRESSED"
    assert f"hard bounce on {utcnow():%Y-%m-%d}" in why and "5.1.1" in why
    assert report["diagnostic"].startswith("550 5.1.1 <nobody@example.org>")
