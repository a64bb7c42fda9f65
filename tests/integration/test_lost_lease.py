"""A daemon whose batch is taken over mid-batch (it was frozen past its lease, and another
copy claimed the rows) stops sending that batch at the next chunk boundary, touches none of
the rows it lost, and says so once (``claims.lease_lost``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.details_factory import add_details
from tests.integration.documents_factory import add_entries
from tests.servers.smtp import RecordingHandler, SmtpServer

OTHER = "copy@elsewhere:1"


def take_over(engine, ids) -> None:  # type: ignore[no-untyped-def]
    """What the other copy's claim does once the frozen worker's lease has passed."""
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id.in_(ids))
                     .values(claimed_by=OTHER, lease_until=utcnow() + timedelta(hours=1)))


def rows_of(engine, ids):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(details_t.c.state, details_t.c.claimed_by)
                            .where(details_t.c.id.in_(ids))).all()


class TakeOverAt(RecordingHandler):
    """Takes the batch over while the 30th message of it is on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.engine, self.ids = None, []  # set once the server's port made the settings

    async def handle_DATA(self, server, session, envelope):
        if len(self.messages) == 29:
            take_over(self.engine, self.ids)
        return await super().handle_DATA(server, session, envelope)


def test_email_daemon_stops_sending_a_batch_it_no_longer_holds(db_url, make_engine_for):
    handler = TakeOverAt()
    server = SmtpServer(handler).start()
    settings, engine = make_engine_for(db_url, COMMS_DAEMONS_BATCH_SIZE="100", **server.env())
    ids = add_entries(engine, "email", 100)
    handler.engine, handler.ids = engine, ids
    try:
        daemon = EmailDaemon(settings, engine)
        assert daemon.chunk == 20
        runner = Runner(settings, engine, daemon, once=True)
        with capture_logs() as logs:
            runner.run_batch()
            runner.handler.close()
    finally:
        server.stop()

    # The chunk on the wire when the lease was lost is finished; no further chunk goes out.
    assert len(server.messages) == 40
    # Nothing of the lost batch was completed, released or failed by the frozen worker.
    assert set(rows_of(engine, ids)) == {("awaiting_send", OTHER)}
    assert runner.refused == 100  # 40 completions and 60 releases, all refused
    assert [e["event"] for e in logs].count("claims.lease_lost") == 1


@pytest.mark.parametrize("prefetch", ["0", "3"])  # chunk by chunk, and the stream
def test_sms_daemon_stops_at_the_next_chunk_boundary(db_url, make_engine_for, smsc, prefetch):
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE="150", COMMS_GATEWAYS_SMS_BACKEND="smpp",
        COMMS_GATEWAYS_SMS_PORT=str(smsc.port), COMMS_GATEWAYS_SMS_TIMEOUT="5",
        COMMS_GATEWAYS_SMS_WINDOW="1", COMMS_DAEMONS_PREFETCH_BATCHES=prefetch)
    ids = add_details(engine, "sms", [(f"+4477009{i:05d}", f"Message {i}") for i in range(150)])
    daemon = SmsDaemon(settings, engine)
    assert daemon.chunk == 50
    send = daemon.sender.send_many

    def send_then_lose(messages, **stream):  # type: ignore[no-untyped-def]
        if not stream:
            results = send(messages)
            take_over(engine, ids)  # taken over while this chunk was being sent
            return results
        more = stream["more"]

        def lose_then_more():  # taken over while the first chunk was being sent
            take_over(engine, ids)
            return more()

        return send(messages, more=lose_then_more, on_done=stream["on_done"])

    daemon.sender.send_many = send_then_lose
    runner = Runner(settings, engine, daemon, once=True)
    with capture_logs() as logs:
        runner.run_batch()
        runner.handler.close()

    assert smsc.counts["accepted"] == 50
    assert set(rows_of(engine, ids)) == {("awaiting_send", OTHER)}
    assert [e["event"] for e in logs].count("claims.lease_lost") == 1
