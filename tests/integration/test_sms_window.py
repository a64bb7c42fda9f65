"""The SMPP window stays full across batches (issue 11, item 18): while one batch is in
flight the SMS daemon claims the next into the same stream (``daemons.prefetch_batches``) and
finishes what was answered, so a distant SMSC (answers held back) never sees the window run
empty at a batch boundary. With ``prefetch_batches = 0`` it drains at every batch."""

from __future__ import annotations

import collections

import pytest
from sqlalchemy import select

from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.details_factory import add_details

N, BATCH, WINDOW = 40, 10, 5


def run(db_url, make_engine_for, smsc, prefetch: int):  # type: ignore[no-untyped-def]
    smsc.behaviour.response_delay = 0.3  # far above what a claim and a commit take here
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE=str(BATCH), COMMS_GATEWAYS_SMS_BACKEND="smpp",
        COMMS_GATEWAYS_SMS_PORT=str(smsc.port), COMMS_GATEWAYS_SMS_TIMEOUT="10",
        COMMS_GATEWAYS_SMS_WINDOW=str(WINDOW), COMMS_DAEMONS_PREFETCH_BATCHES=str(prefetch))
    ids = add_details(engine, "sms", [(f"+4477009{i:05d}", f"Message {i}") for i in range(N)])
    runner = Runner(settings, engine, SmsDaemon(settings, engine), once=True)
    early = []
    finish_part = runner._finish_part

    def counting(rows, outcomes, ctx):  # type: ignore[no-untyped-def]
        early.append(len(outcomes))
        return finish_part(rows, outcomes, ctx)

    runner._finish_part = counting  # type: ignore[method-assign]
    assert runner.run() == N
    with engine.connect() as conn:
        states = collections.Counter(conn.execute(
            select(details_t.c.state).where(details_t.c.id.in_(ids))).scalars())
    return states, early


def test_the_window_stays_full_across_batches(db_url, make_engine_for, smsc):
    states, early = run(db_url, make_engine_for, smsc, prefetch=3)

    assert states == {"completed": N}
    sent = collections.Counter(m.destination for m in smsc.messages())
    assert len(sent) == N and set(sent.values()) == {1}  # each once
    assert smsc.counts["drains"] == 0  # never ran empty: not at a batch, not at a chunk
    # What was answered was committed while the rest was in flight, not all at the end.
    assert early and sum(early) < N


@pytest.mark.parametrize("prefetch", [0])
def test_without_prefetch_the_window_drains_at_every_batch(db_url, make_engine_for, smsc,
                                                           prefetch):
    states, early = run(db_url, make_engine_for, smsc, prefetch=prefetch)

    assert states == {"completed": N}
    assert smsc.counts["drains"] >= N // BATCH - 1


def test_test_entries_claimed_into_the_stream_go_to_the_simulator(db_url, make_engine_for,
                                                                  smsc):
    """A batch claimed into the stream while it is in flight is screened as the first one:
    a test key's entries among it reach the simulator, never the SMSC."""
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE=str(BATCH), COMMS_GATEWAYS_SMS_BACKEND="smpp",
        COMMS_GATEWAYS_SMS_PORT=str(smsc.port), COMMS_GATEWAYS_SMS_WINDOW=str(WINDOW),
        COMMS_DAEMONS_PREFETCH_BATCHES="3")
    live = add_details(engine, "sms", [(f"+4477009{i:05d}", f"Live {i}") for i in range(BATCH)])
    test = add_details(engine, "sms", [(f"+4477008{i:05d}", f"Test {i}") for i in range(5)],
                       is_test=True)
    runner = Runner(settings, engine, SmsDaemon(settings, engine), once=True)
    assert runner.run_batch() == BATCH + 5  # one stream: the test rows came with claim_more
    runner.handler.close()

    assert sorted(m.destination for m in smsc.messages()) == sorted(
        f"4477009{i:05d}" for i in range(BATCH))
    with engine.connect() as conn:
        states = dict(conn.execute(select(details_t.c.id, details_t.c.state)
                                   .where(details_t.c.id.in_(live + test))).all())
    assert {states[i] for i in live + test} == {"completed"}
