"""Failover between two real loopback gateways (two SMTP servers, two SMSCs): the first is
stopped mid-run and every message goes through the second, none lost and none sent twice
beyond what the protocol cannot settle; the first comes back and, after the half-open probe,
takes the traffic again. Each entry records the gateway that sent it."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from click.testing import CliRunner

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.gateways.breaker import BreakerState
from comms_pipeline.queue.runner import Runner
from tests.integration import details_factory, documents_factory
from tests.servers.smpp import Smsc, wait_for
from tests.servers.smtp import SmtpServer

BREAKER = {"breaker_failures": 2, "breaker_open_seconds": 1.0}


@contextmanager
def running(runner: Runner) -> Iterator[Runner]:
    """The daemon in a thread, polling, until the block ends."""
    thread = threading.Thread(target=runner.run, name="daemon")
    thread.start()
    try:
        yield runner
    finally:
        runner.stop_event.set()
        thread.join(60)


def states(rows: dict) -> set[str]:
    return {r["state"] for r in rows.values()}


def wait_for_probe(daemon) -> None:  # type: ignore[no-untyped-def]
    """Until the first gateway's breaker is no longer open (a probe may go to it)."""
    breaker = daemon.gateways.members[0].breaker
    wait_for(lambda: breaker.state is not BreakerState.OPEN, timeout=30, what="half-open")


def run_failover(make_runner: Callable[[], Runner], add: Callable[[int, int], list[int]],
                 rows: Callable[[list[int]], dict], stop_first: Callable[[], None],
                 start_first: Callable[[], None], first_taken: Callable[[], int]
                 ) -> tuple[list[int], list[int], dict]:
    """Send 60 entries with the first gateway stopped after 15, then 20 after it is back."""
    runner = make_runner()
    early = add(0, 60)
    with running(runner):
        wait_for(lambda: first_taken() >= 15, timeout=60, what="the first gateway at work")
        stop_first()
        wait_for(lambda: states(rows(early)) == {"completed"}, timeout=90,
                 what="every entry sent through the second gateway")
        start_first()
        wait_for_probe(runner.handler)
        late = add(60, 20)
        wait_for(lambda: states(rows(late)) == {"completed"}, timeout=90,
                 what="the entries after the first gateway came back")
    return early, late, rows(early + late)


def test_email_fails_over_to_the_second_relay_and_returns(db_url, make_engine_for):
    first, second = SmtpServer().start(), SmtpServer().start()
    fallback = {"name": "relay-b", "backend": "smtp", "host": "127.0.0.1",
                "port": second.port, **BREAKER}
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE="10", COMMS_DAEMONS_POLL_INTERVAL="0.05",
        COMMS_GATEWAYS_EMAIL_NAME="relay-a", COMMS_GATEWAYS_EMAIL_BREAKER_FAILURES="2",
        COMMS_GATEWAYS_EMAIL_BREAKER_OPEN_SECONDS="1",
        COMMS_GATEWAYS_EMAIL_FALLBACKS=json.dumps([fallback]), **first.env())
    try:
        early, late, rows = run_failover(
            lambda: Runner(settings, engine, EmailDaemon(settings, engine)),
            lambda start, n: documents_factory.add_entries(
                engine, "email", n, address=lambda i: f"user{start + i}@example.com"),
            lambda ids: documents_factory.details(engine, ids),
            first.stop, first.start, lambda: len(first.handler.messages))
    finally:
        first.stop()
        second.stop()
    by_first = Counter(m.rcpt_tos[0] for m in first.messages)
    by_second = Counter(m.rcpt_tos[0] for m in second.messages)
    everyone = Counter({r["address"]: 1 for r in rows.values()})
    assert set(by_first + by_second) == set(everyone)  # none lost
    twice = by_first + by_second - everyone
    assert sum(twice.values()) <= 1  # at most the one message whose DATA reply was lost
    assert by_second and by_first
    for row in rows.values():
        if row["address"] not in twice:
            expected = "relay-a" if row["address"] in by_first else "relay-b"
            assert row["gateway"] == expected
    assert {rows[i]["gateway"] for i in late} == {"relay-a"}  # the traffic came back


def test_sms_fails_over_to_the_second_smsc_and_returns(db_url, make_engine_for):
    first, second = Smsc().start(), Smsc().start()
    # Answers 50 ms late, so that the first SMSC is still at work when the test stops it
    # (without it, a quiet machine sent all 60 before the test saw the 15th).
    first.behaviour.response_delay = 0.05
    port = first.port
    fallback = {"name": "smsc-b", "backend": "smpp", "port": second.port, "receipts": False,
                "timeout": 5, "source_addr": "OtherCo", **BREAKER}
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE="10", COMMS_DAEMONS_POLL_INTERVAL="0.05",
        COMMS_GATEWAYS_SMS_BACKEND="smpp", COMMS_GATEWAYS_SMS_PORT=str(port),
        COMMS_GATEWAYS_SMS_NAME="smsc-a", COMMS_GATEWAYS_SMS_RECEIPTS="false",
        COMMS_GATEWAYS_SMS_TIMEOUT="5", COMMS_GATEWAYS_SMS_RECONNECT_ATTEMPTS="1",
        COMMS_GATEWAYS_SMS_BREAKER_FAILURES="2", COMMS_GATEWAYS_SMS_BREAKER_OPEN_SECONDS="1",
        COMMS_GATEWAYS_SMS_FALLBACKS=json.dumps([fallback]))
    smscs = {"first": first, "again": None}

    def start_again() -> None:
        smscs["again"] = Smsc(port=port).start()

    def add(start: int, n: int) -> list[int]:
        return details_factory.add_details(engine, "sms", [
            (f"+4477009{i:05d}", f"Message {i}") for i in range(start, start + n)])

    try:
        early, late, rows = run_failover(
            lambda: Runner(settings, engine, SmsDaemon(settings, engine)), add,
            lambda ids: details_factory.details(engine, ids), first.stop, start_again,
            lambda: first.counts["accepted"])
    finally:
        for smsc in (first, second, smscs["again"]):
            if smsc is not None:
                smsc.stop()
    again = smscs["again"]
    assert again is not None
    by_first = Counter(s.destination for s in first.accepted + again.accepted)
    by_second = Counter(s.destination for s in second.accepted)
    everyone = Counter({r["address"].lstrip("+"): 1 for r in rows.values()})
    assert set(by_first + by_second) == set(everyone)  # none lost
    twice = by_first + by_second - everyone
    assert sum(twice.values()) <= 10  # at most the window in flight when the link went
    assert by_second
    # each SMSC is sent the sender name configured for it
    assert {s.source for s in second.accepted} == {"OtherCo"}
    assert {s.source for s in first.accepted + again.accepted} == {"Comms"}
    for row in rows.values():
        destination = row["address"].lstrip("+")
        if destination not in twice:
            expected = "smsc-a" if destination in by_first else "smsc-b"
            assert row["gateway"] == expected
    assert {rows[i]["gateway"] for i in late} == {"smsc-a"}
    assert {s.destination for s in again.accepted} == {
        rows[i]["address"].lstrip("+") for i in late}
    # `comms requests show` names the gateway of each entry.
    app = AppContext()
    app._settings = settings
    shown = CliRunner().invoke(cli, ["requests", "show", str(rows[early[0]]["header_id"])],
                               obj=app, catch_exceptions=False).output
    assert f"#{early[0]}" in shown and "via smsc-a" in shown and "via smsc-b" in shown
