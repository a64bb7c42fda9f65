"""A gateway's maximum rate holds for the sum of all daemon copies (a token bucket row in
PostgreSQL), and an SMSC's ESME_RTHROTTLED lowers that shared rate, against the loopback
SMSC, which records when each submit_sm arrives."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter

from sqlalchemy import create_engine, func, select

from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.shared_rate import SharedBucket
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.gateways.rate import default_burst, lease_size
from comms_pipeline.queue.heartbeat import Heartbeat
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store import gateway_rates
from comms_pipeline.store.models import details_t, gateway_rates_t, transitions_t
from tests import factories
from tests.integration import documents_factory
from tests.integration.details_factory import add_details, details
from tests.servers.smpp import wait_for


def busiest_second(arrivals: list[float]) -> int:
    """The most submits that arrived within any one second (a window starting at each)."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def bound(rate: float, copies: int) -> int:
    """What a second may see: the rate, the bucket's burst, the tokens each copy may hold
    at the second's start (less than a lease), and a twentieth of the rate for the jitter of
    arrival times (the test server's thread shares two loaded cores with the daemons)."""
    return int(rate) + default_burst(rate) + copies * lease_size(rate) + int(rate) // 20


def copy_of_daemon(make_engine_for, url: str, n: int, **env: str) -> Runner:  # type: ignore[no-untyped-def]
    """Copy ``n`` of the SMS daemon (its own engine, SMPP bind and rate gate; a worker id of
    its own, as a process would have), to run in a thread."""
    settings, engine = make_engine_for(url, **env)
    heartbeat = Heartbeat(engine, "sms", settings.daemons.heartbeat_seconds)
    heartbeat.instance = f"sms-{n}@test"
    return Runner(settings, engine, SmsDaemon(settings, engine), heartbeat=heartbeat)


def test_three_copies_together_keep_the_rate(pg_url, make_engine_for, smsc, capsys):
    rate, copies, n = 200, 3, 1000
    env = {"COMMS_GATEWAYS_SMS_BACKEND": "smpp", "COMMS_GATEWAYS_SMS_PORT": str(smsc.port),
           "COMMS_GATEWAYS_SMS_RECEIPTS": "false",
           "COMMS_GATEWAYS_SMS_MAX_RATE_PER_SECOND": str(rate),
           "COMMS_DAEMONS_BATCH_SIZE": "25", "COMMS_DAEMONS_POLL_INTERVAL": "0.1"}
    runners = [copy_of_daemon(make_engine_for, pg_url, i, **env) for i in range(1, copies + 1)]
    engine = runners[0].engine
    with engine.begin() as conn:
        factories.bulk_sms_details(conn, n, factories.contact(conn))
    threads = [threading.Thread(target=r.run, name=f"sms-{i}") for i, r in enumerate(runners)]
    leases = Counter()
    for i, r in enumerate(runners):  # count the round trips to the bucket row
        source = r.handler.gateways.members[0].sender.rate.source
        source.lease = _counting(source.lease, leases, i)

    def completed() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(
                details_t.c.state == "completed")).scalar_one()

    for t in threads:
        t.start()
    try:
        wait_for(lambda: completed() == n, timeout=120, what="every entry sent")
    finally:
        for r in runners:
            r.stop_event.set()
        for t in threads:
            t.join(60)
    with engine.connect() as conn:
        senders = conn.execute(select(func.count(func.distinct(transitions_t.c.actor))).where(
            transitions_t.c.to_state == "completed")).scalar_one()
        via = set(conn.execute(select(details_t.c.gateway).distinct()).scalars())
    arrivals = smsc.arrivals
    busiest = busiest_second(arrivals)
    with capsys.disabled():
        print(f"\nshared rate: {copies} copies, {len(arrivals)} submits in "
              f"{max(arrivals) - min(arrivals):.2f} s, busiest second {busiest} "
              f"(limit {rate}, bound {bound(rate, copies)}); {sum(leases.values())} leases "
              f"({len(arrivals) / max(1, sum(leases.values())):.1f} submits a lease)")
    assert len(arrivals) == n and smsc.counts["accepted"] == n
    assert senders == copies  # every copy sent: the limit held for their sum
    assert via == {"smpp"}
    assert busiest <= bound(rate, copies)


def _counting(lease, counter, key):  # type: ignore[no-untyped-def]
    def counted(want):  # type: ignore[no-untyped-def]
        counter[key] += 1
        return lease(want)
    return counted


def test_one_copy_keeps_the_rate_on_either_database(db_url, make_engine_for, smsc):
    """SQLite: the process's own bucket; PostgreSQL: the shared row, with one taker."""
    rate = 100
    settings, engine = make_engine_for(
        db_url, COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
        COMMS_GATEWAYS_SMS_MAX_RATE_PER_SECOND=str(rate), COMMS_DAEMONS_BATCH_SIZE="50")
    ids = add_details(engine, "sms", [(f"+4477009{i:05d}", f"Message {i}") for i in range(120)])

    assert Runner(settings, engine, SmsDaemon(settings, engine), once=True).run() == 120

    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    assert busiest_second(smsc.arrivals) <= bound(rate, 1)


def test_email_lanes_share_the_rate(pg_url, make_engine_for, smtp_server):
    """Three SMTP connections side by side take their tokens from one bucket (the shared
    row; SQLite's own bucket is the one-copy test's)."""
    rate = 40
    settings, engine = make_engine_for(
        pg_url, COMMS_GATEWAYS_EMAIL_CONNECTIONS="3",
        COMMS_GATEWAYS_EMAIL_MAX_RATE_PER_SECOND=str(rate), COMMS_DAEMONS_BATCH_SIZE="30",
        **smtp_server.env())
    ids = documents_factory.add_entries(engine, "email", 60)

    assert Runner(settings, engine, EmailDaemon(settings, engine), once=True).run() == 60

    rows = documents_factory.details(engine, ids)
    assert {(r["state"], r["gateway"]) for r in rows.values()} == {("completed", "smtp")}
    assert busiest_second([m.at for m in smtp_server.messages]) <= bound(rate, 1)


def test_throttling_lowers_the_shared_rate_of_every_copy(pg_url, make_engine_for, smsc):
    settings, engine = make_engine_for(
        pg_url, COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
        COMMS_GATEWAYS_SMS_MAX_RATE_PER_SECOND="400",
        COMMS_GATEWAYS_SMS_THROTTLE_DELAY_SECONDS="0.01",
        COMMS_GATEWAYS_SMS_THROTTLE_SLOW_SECONDS="60")
    smsc.behaviour.throttle_next = 3
    ids = add_details(engine, "sms", [(f"+4477009{i:05d}", f"Message {i}") for i in range(20)])

    assert Runner(settings, engine, SmsDaemon(settings, engine), once=True).run() == 20

    assert smsc.counts["throttled"] == 3
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    with engine.connect() as conn:
        row = conn.execute(select(gateway_rates_t).where(
            gateway_rates_t.c.gateway == "sms:smpp")).one()
        # Three throttles in a row are one episode: halved once, for the period.
        assert row.slow_rate == 200
        # Another copy's lease now comes at the lowered rate.
        _, _, rate_now = gateway_rates.lease_tokens(conn, "sms:smpp", 1, 400, 20)
    assert rate_now == 200


def test_two_takers_never_get_the_same_tokens(pg_url):
    """Two copies' buckets on one row, each in its own thread leasing as fast as it can for
    half a second: together they got what the row's rate and burst allow, not twice that."""
    engine = create_engine(pg_url, pool_size=4)
    rate, burst = 400.0, 10
    takers = [SharedBucket(engine, "email:relay", rate, burst=burst) for _ in range(2)]
    got = [0, 0]
    started = time.monotonic()  # before the row exists: it fills from its creation on
    takers[0].lease(1)  # creates the row (empty)

    def take(n: int) -> None:
        while time.monotonic() - started < 0.5:
            got[n] += takers[n].lease(8).granted

    threads = [threading.Thread(target=take, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    engine.dispose()
    assert sum(got) <= rate * elapsed + burst
    assert all(got)  # both took a share
