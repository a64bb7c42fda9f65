"""Fair queueing and priority lanes at every stage, on SQLite and PostgreSQL.

System A has a backlog (3,000 headers; 600 entries at the later stages, where the Comms
Monitor expands them first); system B asks for a few of the same priority afterwards, and a
priority-1 request comes last. At each stage — the Comms Monitor's expansion, the Email
Monitor's merge, the SMS daemon's send (to the loopback SMSC) — B's entries and the
priority-1 one are in the first batch, not behind A's backlog.
"""

from __future__ import annotations

import itertools
import random

from sqlalchemy import insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.jobs.email_monitor import EmailMonitorJob
from comms_pipeline.jobs.monitor import MonitorJob
from comms_pipeline.pipeline.admin_records import add_external_system
from comms_pipeline.queue.claims import Claimer
from comms_pipeline.queue.runner import Runner
from comms_pipeline.queue.work_queues import detail_queue, header_queue
from comms_pipeline.store.models import details_t, headers_t
from tests import factories
from tests.integration.details_factory import add_details, details

BACKLOG = 600
FEW = 5


def _seed(engine, template: str, backlog: int = BACKLOG) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Systems A and B; A's backlog, then B's few, then one priority-1 request (no system)."""
    now = utcnow()
    with engine.begin() as conn:
        factories.contact(conn)
        factories.sms_template(conn)
        factories.email_template(conn)
        a = add_external_system(conn, "A", "System A")
        b = add_external_system(conn, "B", "System B")

        def header(system: int | None, priority: int = 2) -> dict:
            return {"contact_ref": "C-1", "template_code": template, "priority": priority,
                    "requested_by_system_id": system, "status": "awaiting_processing",
                    "created_at": now}

        conn.execute(insert(headers_t), [header(a) for _ in range(backlog)])
        conn.execute(insert(headers_t), [header(b) for _ in range(FEW)])
        conn.execute(insert(headers_t), [header(None, priority=1)])
    return a, b


def _lanes(engine, table, done) -> dict[object, int]:  # type: ignore[no-untyped-def]
    """How many rows of each lane (system, or "p1" for the priority-1 row) ``done`` holds."""
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.requested_by_system_id, table.c.priority)
                            .where(done)).all()
    counts: dict[object, int] = {}
    for system, priority in rows:
        key = "p1" if priority == 1 else system
        counts[key] = counts.get(key, 0) + 1
    return counts


def _expand_all(settings, engine) -> None:  # type: ignore[no-untyped-def]
    Runner(settings, engine, MonitorJob(settings, engine), once=True, batch_size=2000).run()


def test_monitor_expands_the_other_system_and_priority_1_in_the_first_batch(
        settings, engine):
    a, b = _seed(engine, "SMS_HELLO", backlog=3000)
    runner = Runner(settings, engine, MonitorJob(settings, engine), batch_size=100)

    assert runner.run_batch() == 100

    done = _lanes(engine, headers_t, headers_t.c.status != "awaiting_processing")
    assert done == {"p1": 1, b: FEW, a: 100 - FEW - 1}
    # Each entry carries its request's system, so the later stages can share fairly too.
    assert _lanes(engine, details_t, details_t.c.id.isnot(None)) == done


def test_merge_takes_the_other_system_and_priority_1_in_the_first_batch(settings, engine):
    a, b = _seed(engine, "EMAIL_HELLO")
    _expand_all(settings, engine)
    runner = Runner(settings, engine, EmailMonitorJob(settings, engine), batch_size=50)

    assert runner.run_batch() == 50

    merged = _lanes(engine, details_t, details_t.c.state != "awaiting_merge")
    assert merged == {"p1": 1, b: FEW, a: 50 - FEW - 1}
    with engine.connect() as conn:
        states = set(conn.execute(select(details_t.c.state)
                                  .where(details_t.c.state != "awaiting_merge")).scalars())
    assert states == {"awaiting_send"}


def test_sms_daemon_sends_the_other_system_and_priority_1_in_the_first_batch(
        db_url, make_engine_for, smsc):
    # One batch, not the batches the window prefetches behind it (each of those is claimed
    # the same fair way; tests/integration/test_sms_window.py covers the prefetch).
    settings, engine = make_engine_for(db_url, COMMS_GATEWAYS_SMS_BACKEND="smpp",
                                       COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
                                       COMMS_GATEWAYS_SMS_TIMEOUT="5",
                                       COMMS_DAEMONS_PREFETCH_BATCHES="0")
    a, b = _seed(engine, "SMS_HELLO")
    _expand_all(settings, engine)
    runner = Runner(settings, engine, SmsDaemon(settings, engine), batch_size=50)
    try:
        assert runner.run_batch() == 50
    finally:
        runner.handler.close()

    sent = _lanes(engine, details_t, details_t.c.state == "completed")
    assert sent == {"p1": 1, b: FEW, a: 50 - FEW - 1}
    assert len(smsc.messages()) == 50


def test_lanes_take_turns_within_a_priority_and_concurrent_claims_stay_disjoint(
        settings, engine):
    a, b = _seed(engine, "SMS_HELLO")
    _expand_all(settings, engine)
    queue = detail_queue("sms")
    first = Claimer(engine, "w1", settings.claims).claim(queue, 7)
    second = Claimer(engine, "w2", settings.claims).claim(queue, 7)

    assert not {r.id for r in first} & {r.id for r in second}
    # w1: the priority-1 entry, then A and B in turn; w2: B's last two beside A's next.
    assert sorted(r.requested_by_system_id or 0 for r in first) == sorted(
        [0, a, b, a, b, a, b])
    assert sorted(r.requested_by_system_id for r in second) == sorted([a, b, a, b, a, a, a])


def test_one_lane_is_claimed_in_priority_then_id_order(settings, engine):
    """Without external systems nothing changes: priority, then age."""
    now = utcnow()
    with engine.begin() as conn:
        rows = [{"contact_ref": "C-1", "template_code": "X", "priority": p,
                 "status": "awaiting_processing", "created_at": now} for p in (2, 3, 1, 2, 1)]
        ids = list(conn.execute(insert(headers_t).returning(
            headers_t.c.id, sort_by_parameter_order=True), rows).scalars())
    claimed = Claimer(engine, "w", settings.claims).claim(header_queue(), 4)
    assert sorted(r.id for r in claimed) == sorted([ids[2], ids[4], ids[0], ids[3]])


def _expected(rows: dict[int, tuple[object, int]], limit: int) -> set[int]:
    """Round-robin by brute force: rank within (system, priority) by id; (priority, rank, id)."""
    seen: dict[tuple, int] = {}
    keyed = []
    for rid in sorted(rows):
        lane, priority = rows[rid]
        rank = seen[(lane, priority)] = seen.get((lane, priority), 0) + 1
        keyed.append((priority, rank, rid))
    return {rid for _, _, rid in sorted(keyed)[:limit]}


def test_every_claim_is_the_exact_round_robin_across_priorities(settings, engine):
    """Uneven systems over three priorities: each successive claim takes exactly the rows
    the round robin says, until the queue is empty (on SQLite through the shares read
    first and the lanes read again, on PostgreSQL through the one statement)."""
    rng = random.Random(15)
    now = utcnow()
    with engine.begin() as conn:
        systems = [None] + [add_external_system(conn, f"S{i}", f"S{i}") for i in range(4)]
        weights = [5, 40, 1, 10, 0]  # the last system is registered but idle
        header = conn.execute(insert(headers_t).values(
            contact_ref="C-1", template_code="X", status="processed", created_at=now,
        ).returning(headers_t.c.id)).scalar_one()
        lanes = rng.choices(systems, weights, k=400)
        rows = [{"header_id": header, "media": "sms", "direction": "outgoing",
                 "address": "+35799000000", "body": "x", "state": "awaiting_send",
                 "priority": rng.choice((1, 2, 2, 3, 3, 3)), "requested_by_system_id": lane,
                 "created_at": now} for lane in lanes]
        ids = list(conn.execute(insert(details_t).returning(
            details_t.c.id, sort_by_parameter_order=True), rows).scalars())
    left = {rid: (row["requested_by_system_id"], row["priority"])
            for rid, row in zip(ids, rows, strict=True)}
    claimer = Claimer(engine, "w", settings.claims)
    queue = detail_queue("sms")
    limits = itertools.cycle((1, 7, 50, 13))
    while left:
        limit = next(limits)
        claimed = {r.id for r in claimer.claim(queue, limit)}
        assert claimed == _expected(left, limit)
        for rid in claimed:
            del left[rid]
    assert claimer.claim(queue, 10) == []


def test_a_priority_1_sms_arriving_mid_batch_goes_out_before_the_rest_of_the_bulk_batch(
        db_url, make_engine_for, smsc):
    """The daemon checks between chunks: the bulk batch stops after the chunk being sent,
    its rest goes back unharmed, and the next claim sends the priority-1 entry first."""
    settings, engine = make_engine_for(db_url, COMMS_GATEWAYS_SMS_BACKEND="smpp",
                                       COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
                                       COMMS_GATEWAYS_SMS_TIMEOUT="5")
    bulk = add_details(engine, "sms", [(f"+44770090{i:04d}", f"bulk {i}") for i in range(200)])
    daemon = SmsDaemon(settings, engine)
    runner = Runner(settings, engine, daemon, batch_size=150)
    urgent: list[int] = []
    send_many = daemon.sender.send_many

    def send_and_trigger(messages, **stream):  # type: ignore[no-untyped-def]
        if not urgent:  # while the first chunk is on the wire, a one-time password comes
            urgent.extend(add_details(engine, "sms", [("+447700999999", "code 1234")],
                                      priority=1))
        return send_many(messages, **stream)

    daemon.sender.send_many = send_and_trigger  # type: ignore[method-assign]
    try:
        assert runner.run_batch() == 150
        after = details(engine, bulk)
        assert runner.run_batch() > 0
    finally:
        daemon.close()

    sent_first = [i for i, r in after.items() if r["state"] == "completed"]
    assert sent_first == bulk[:daemon.chunk]
    # The rest of the batch went back as it was: unclaimed, its attempt not spent.
    assert {(r["state"], r["claimed_by"], r["attempts"]) for i, r in after.items()
            if i not in sent_first} == {("awaiting_send", None, 0)}
    assert details(engine, urgent)[urgent[0]]["state"] == "completed"
    assert [m.destination for m in smsc.messages()][daemon.chunk] == "447700999999"
