"""The SMS daemon over SMPP v3.4 against a loopback SMSC that speaks real PDUs."""

from __future__ import annotations

from collections import Counter

import pytest

from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from tests.integration.details_factory import add_details, details, transitions
from tests.servers.smpp import wait_for


@pytest.fixture
def sms_env(db_url, tmp_path, make_engine_for, smsc):
    """``build(**env)`` -> (settings, engine) for the daemon bound to the test SMSC."""
    def build(**env: str):  # type: ignore[no-untyped-def]
        base = {"COMMS_GATEWAYS_SMS_BACKEND": "smpp", "COMMS_GATEWAYS_SMS_PORT": str(smsc.port),
                "COMMS_GATEWAYS_SMS_TIMEOUT": "5", "COMMS_DAEMONS_BATCH_SIZE": "15"}
        return make_engine_for(db_url, **{**base, **env})

    return build


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    return Runner(settings, engine, SmsDaemon(settings, engine), once=True).run()


def numbers(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"+4477009{start + i:05d}", f"Message number {start + i}") for i in range(n)]


def test_window_keeps_submits_outstanding_and_receipts_reach_the_queue(smsc, sms_env):
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_WINDOW="8")
    smsc.behaviour.receipts = "after"
    smsc.behaviour.hold_responses = 8  # a client without a window would stall here
    ids = add_details(engine, "sms", numbers(40))

    assert run_once(settings, engine) == 40

    assert smsc.counts["max_pending"] == 8
    rows = details(engine, ids)
    by_dest = {m.destination: m for m in smsc.messages()}
    assert len(by_dest) == 40
    for row in rows.values():
        message = by_dest[row["address"].lstrip("+")]
        assert message.text == row["body"] and message.data_coding == 0
        assert row["state"] == "completed" and row["gateway_ref"] == message.ids[0]
        assert row["gateway_status"] == "DELIVRD" and row["error_code"] is None
        assert row["claimed_by"] is None
        assert transitions(engine, row["id"]) == [("awaiting_send", "completed")]
    assert smsc.counts["receipt_acks"] == 40 and smsc.counts["unbinds"] == 1


def test_receipts_before_the_response_in_the_other_base(smsc, sms_env):
    """Hex ids in submit_sm_resp, decimal ones in receipts (the other way round is the
    unit tests' id_candidates case), and every receipt ahead of its response."""
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_RECEIPT_ID_FORMAT="dec-to-hex")
    b = smsc.behaviour
    b.receipts, b.id_format, b.receipt_id_format = "before", "hex", "decimal"
    targets = numbers(12)
    b.receipt_stats = {targets[3][0].lstrip("+"): "UNDELIV", targets[7][0].lstrip("+"): "EXPIRED"}
    ids = add_details(engine, "sms", targets)

    assert run_once(settings, engine) == 12

    rows = details(engine, ids)
    by_dest = {m.destination: m for m in smsc.messages()}
    for i, row in rows.items():  # an undelivered message is Rejected, with the receipt
        assert row["state"] == ("rejected" if i in (ids[3], ids[7]) else "completed")
        assert row["gateway_ref"] == by_dest[row["address"].lstrip("+")].ids[0]
    assert rows[ids[3]]["gateway_status"] == "UNDELIV"
    assert rows[ids[3]]["error_code"] == "UNDELIV"
    assert "err:001" in rows[ids[3]]["error_description"]
    assert rows[ids[7]]["gateway_status"] == "EXPIRED"
    others = [r for i, r in rows.items() if i not in (ids[3], ids[7])]
    assert {r["gateway_status"] for r in others} == {"DELIVRD"}
    assert {r["error_code"] for r in others} == {None}


@pytest.mark.parametrize("order", ["before", "after"])
def test_small_sequential_ids_send_each_receipt_to_its_own_entry(smsc, sms_env, order):
    """Ids 1, 2, 3, ...: "17" is a message's id and the hex form of 23's. Every 23rd part
    is undelivered; exactly the entries holding such a part end Rejected."""
    settings, engine = sms_env(COMMS_DAEMONS_BATCH_SIZE="10")
    smsc.number_ids_from(1)
    smsc.behaviour.receipts = order
    smsc.behaviour.undelivered_every = 23
    targets = [(a, body if i % 7 else body + " and more" + "." * 160)
               for i, (a, body) in enumerate(numbers(90))]  # every 7th in two parts
    ids = add_details(engine, "sms", targets)

    assert run_once(settings, engine) == 90

    rows = details(engine, ids)
    by_dest = {m.destination: m for m in smsc.messages()}
    failed = {i for i, row in rows.items()
              if any(int(p) % 23 == 0 for p in by_dest[row["address"].lstrip("+")].ids)}
    assert len(failed) >= 4
    assert {i for i, row in rows.items() if row["state"] == "rejected"} == failed
    for i, row in rows.items():
        assert row["gateway_status"] == ("UNDELIV" if i in failed else "DELIVRD")
        assert row["error_code"] == ("UNDELIV" if i in failed else None)


def test_long_texts_go_as_udh_parts_and_every_part_receipt_finds_its_entry(smsc, sms_env):
    settings, engine = sms_env()
    smsc.behaviour.receipts = "after"
    gsm_long = "Your bill of £42.50 is ready {ref: A-1}. " * 6  # extension chars count twice
    ucs_long = "Ваш счёт готов. Спасибо! 😀 " * 4
    ids = add_details(engine, "sms", [("+447700900001", gsm_long), ("+447700900002", ucs_long),
                                      ("+447700900003", "short one")])

    assert run_once(settings, engine) == 3

    rows = details(engine, ids)
    by_dest = {m.destination: m for m in smsc.messages()}
    gsm, ucs = by_dest["447700900001"], by_dest["447700900002"]
    assert gsm.text == gsm_long and gsm.data_coding == 0 and len(gsm.ids) == 2
    assert ucs.text == ucs_long and ucs.data_coding == 8 and len(ucs.ids) == 2
    parts = [s for s in smsc.accepted if s.destination in ("447700900001", "447700900002")]
    assert all(s.esm_class & 0x40 and s.concat is not None for s in parts)
    assert rows[ids[0]]["gateway_ref"] == ",".join(gsm.ids)
    assert rows[ids[1]]["gateway_ref"] == ",".join(ucs.ids)
    assert {r["gateway_status"] for r in rows.values()} == {"DELIVRD"}


def test_a_failed_part_receipt_marks_the_multipart_entry(smsc, sms_env):
    """Receipts of every part count: one UNDELIV part outweighs the other's DELIVRD."""
    settings, engine = sms_env()
    smsc.behaviour.receipts = "after"
    smsc.behaviour.receipt_stats = {"447700900009": "UNDELIV"}
    ids = add_details(engine, "sms", [("+447700900009", "x" * 300)])

    assert run_once(settings, engine) == 1

    row = details(engine, ids)[ids[0]]
    assert len(row["gateway_ref"].split(",")) == 2
    assert row["gateway_status"] == "UNDELIV" and row["error_code"] == "UNDELIV"
    assert row["state"] == "rejected"
    assert transitions(engine, ids[0])[-1] == ("completed", "rejected")


def test_throttling_slows_down_and_resubmits(smsc, sms_env):
    """ESME_RTHROTTLED here; ESME_RMSGQFUL takes the same path (see the unit tests)."""
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_WINDOW="4",
                               COMMS_GATEWAYS_SMS_THROTTLE_DELAY_SECONDS="0.01")
    smsc.behaviour.throttle_next = 6
    ids = add_details(engine, "sms", numbers(20))

    assert run_once(settings, engine) == 20

    assert smsc.counts["throttled"] == 6
    assert Counter(m.destination for m in smsc.messages()) == Counter(
        a.lstrip("+") for a, _ in numbers(20))
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}


def test_other_statuses_reject_with_the_code_and_its_name(smsc, sms_env):
    settings, engine = sms_env()
    targets = numbers(5)
    smsc.behaviour.reject = {targets[2][0].lstrip("+"): 0x0B}
    ids = add_details(engine, "sms", targets)

    assert run_once(settings, engine) == 5

    rows = details(engine, ids)
    bad = rows[ids[2]]
    assert bad["state"] == "rejected"
    assert bad["error_code"] == "0x0000000B"
    assert bad["error_description"].startswith("ESME_RINVDSTADR")
    assert transitions(engine, ids[2]) == [("awaiting_send", "rejected")]
    assert sorted(r["state"] for r in rows.values()) == ["completed"] * 4 + ["rejected"]


def test_link_dropped_mid_window_loses_nothing_and_sends_nothing_twice(smsc, sms_env):
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_WINDOW="8", COMMS_DAEMONS_BATCH_SIZE="30")
    smsc.behaviour.drop_after = 13  # the 13th submit dies with the link, unanswered
    smsc.behaviour.receipts = "after"
    targets = numbers(30)
    ids = add_details(engine, "sms", targets)

    assert run_once(settings, engine) == 30

    assert smsc.counts["drops"] == 1 and smsc.counts["binds"] == 2
    accepted = Counter(m.text for m in smsc.messages())
    assert accepted == Counter(body for _, body in targets)  # each exactly once
    rows = details(engine, ids)
    by_text = {m.text: m for m in smsc.messages()}
    for row in rows.values():
        assert row["state"] == "completed" and row["claimed_by"] is None
        assert row["gateway_ref"] == by_text[row["body"]].ids[0]
        assert row["gateway_status"] == "DELIVRD"


def test_a_silent_smsc_is_dropped_after_the_timeout_and_the_submit_resent(smsc, sms_env):
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_TIMEOUT="0.5", COMMS_GATEWAYS_SMS_WINDOW="4")
    smsc.behaviour.silent_next = 1
    targets = numbers(6)
    ids = add_details(engine, "sms", targets)

    assert run_once(settings, engine) == 6

    assert smsc.counts["swallowed"] == 1 and smsc.counts["binds"] == 2
    assert Counter(m.text for m in smsc.messages()) == Counter(body for _, body in targets)
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}


def test_an_smsc_that_refuses_the_bind_leaves_entries_for_a_retry(smsc, sms_env):
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_SYSTEM_ID="comms",
                               COMMS_GATEWAYS_SMS_PASSWORD="wrong",
                               COMMS_GATEWAYS_SMS_RECONNECT_ATTEMPTS="2")
    smsc.behaviour.system_id, smsc.behaviour.password = "comms", "secret"
    ids = add_details(engine, "sms", numbers(3))

    assert run_once(settings, engine) == 3

    rows = details(engine, ids)
    for row in rows.values():
        assert row["state"] == "awaiting_send" and row["claimed_by"] is None
        assert row["error_code"] == "SMPP_BIND" and "ESME_RINVPASWD" in row["error_description"]
        assert row["next_attempt_at"] is not None and row["attempts"] == 1
    assert smsc.counts["binds"] == 2 and not smsc.accepted


def test_enquire_link_both_ways(smsc, sms_env):
    settings, engine = sms_env(COMMS_GATEWAYS_SMS_ENQUIRE_LINK_SECONDS="0.2")
    daemon = SmsDaemon(settings, engine)
    add_details(engine, "sms", numbers(1))
    runner = Runner(settings, engine, daemon, once=True)
    try:
        assert runner.run_batch() == 1  # binds, sends, keeps the link open afterwards
        wait_for(lambda: smsc.counts["enquire_links"] >= 2, what="keepalive enquire_links")
        smsc.send_enquire_link()
        wait_for(lambda: smsc.counts["enquire_link_resps"] >= 1, what="enquire_link_resp")
    finally:
        daemon.close()
    assert smsc.counts["unbinds"] == 1


def test_early_receipts_are_kept_stored_until_their_part_is_recorded(engine):
    """Receipts are written to sms_receipts before anything else; one whose part is not
    recorded yet waits there, also for the next process (the first one may be SIGKILLed)."""
    from comms_pipeline.gateways.smpp_receipts import Receipt
    from comms_pipeline.pipeline.receipts import ReceiptApplier, record_parts

    ids = add_details(engine, "sms", numbers(3), state="completed")
    applier = ReceiptApplier(engine, fmt="hex-to-dec", interval=3600, settle_seconds=0)
    applier.store([Receipt("655400", "DELIVRD"),  # before its submit_sm_resp is recorded
                   Receipt("a0071", "UNDELIV", "005"),  # hex of 655473
                   Receipt("655402", "DELIVRD"),  # the second part of a two-part message
                   Receipt("655404", "EXPIRED")])  # a part recorded only after a restart
    assert applier.flush() == 0 and applier.held == 4

    with engine.begin() as conn:
        record_parts(conn, [(ids[0], ["655400"]), (ids[1], ["655473"]),
                            (ids[2], ["655401", "655402"])])
    assert applier.flush(retry=True) == 3 and applier.held == 1
    # The process dies here (nothing closed); the receipt is in the database, not in memory.
    with engine.begin() as conn:
        record_parts(conn, [(ids[0], ["655404"])])  # e.g. sent again after a lost link
    after_restart = ReceiptApplier(engine, interval=3600)
    after_restart.close()
    assert after_restart.applied == 1 and after_restart.held == 0

    rows = details(engine, ids)
    assert rows[ids[0]]["gateway_status"] == "EXPIRED"
    assert (rows[ids[1]]["gateway_status"], rows[ids[1]]["error_code"]) == ("UNDELIV",
                                                                           "UNDELIV")
    assert rows[ids[1]]["error_description"] == "delivery receipt UNDELIV err:005"
    assert rows[ids[2]]["gateway_status"] == "DELIVRD"
    assert part_states(engine, ids[2]) == [(1, "655401", None), (2, "655402", "DELIVRD")]


def part_states(engine, detail_id: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from comms_pipeline.store.models import sms_parts_t as p

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(p.c.part_no, p.c.message_id, p.c.receipt_state)
            .where(p.c.detail_id == detail_id).order_by(p.c.part_no))]


def test_an_early_receipt_waits_for_its_own_id_rather_than_take_a_converted_one(engine):
    """Ids 1..20 are recorded, 23's is not yet: its receipt is not put on 17 (hex "17" = 23)
    nor anywhere else, and finds 23 once that is recorded."""
    from comms_pipeline.gateways.smpp_receipts import Receipt
    from comms_pipeline.pipeline.receipts import ReceiptApplier, record_parts

    ids = add_details(engine, "sms", numbers(23), state="completed")
    with engine.begin() as conn:
        record_parts(conn, [(detail_id, [str(n)]) for n, detail_id in enumerate(ids[:20], 1)])
    applier = ReceiptApplier(engine, interval=3600)
    applier.store([Receipt("23", "UNDELIV", "001")])
    assert applier.flush() == 0 and applier.held == 1
    with engine.begin() as conn:
        record_parts(conn, [(ids[22], ["23"])])
    applier.close()
    assert applier.applied == 1

    rows = details(engine, ids)
    assert [i for i, r in rows.items() if r["state"] == "rejected"] == [ids[22]]
    assert {r["gateway_status"] for i, r in rows.items() if i != ids[22]} == {None}


def test_a_configured_conversion_never_beats_an_exact_id(engine):
    from comms_pipeline.gateways.smpp_receipts import Receipt
    from comms_pipeline.pipeline.receipts import ReceiptApplier, record_parts

    ids = add_details(engine, "sms", numbers(2), state="completed")
    with engine.begin() as conn:
        record_parts(conn, [(ids[0], ["17"]), (ids[1], ["23"])])
    applier = ReceiptApplier(engine, fmt="hex-to-dec", interval=3600, settle_seconds=0)
    applier.store([Receipt("17", "UNDELIV"),  # 17's own id, though "17" is also hex for 23
                   Receipt("a", "DELIVRD")])  # hex for 10: nothing
    applier.close()
    rows = details(engine, ids)
    assert (rows[ids[0]]["state"], rows[ids[1]]["state"]) == ("rejected", "completed")
    assert rows[ids[1]]["gateway_status"] is None and applier.held == 1


def test_receipts_for_nothing_stay_stored_until_the_hold_time_passes(engine):
    from comms_pipeline.gateways.smpp_receipts import Receipt
    from comms_pipeline.pipeline.receipts import ReceiptApplier

    applier = ReceiptApplier(engine, interval=3600)
    applier.store([Receipt("999999", "DELIVRD")])
    applier.close()
    assert applier.applied == 0 and applier.dropped == 0 and applier.held == 1
    later = ReceiptApplier(engine, interval=3600, hold_seconds=0.001)
    later.close()
    assert later.dropped == 1 and later.held == 0


def test_a_long_message_with_uuid_ids_gets_every_part_receipt(smsc, sms_env):
    """Eight parts with 36-character ids: 295 characters joined, more than gateway_ref keeps;
    each part's receipt is matched through sms_parts, the undelivered last one too."""
    settings, engine = sms_env()
    smsc.behaviour.receipts, smsc.behaviour.id_format = "after", "uuid"
    ids = add_details(engine, "sms", [("+447700900021", "Long. " * 200),
                                      ("+447700900022", "short")])
    smsc.behaviour.undelivered_every = 0

    class LastPartFails:  # the receipt of the eighth part of the first message says UNDELIV
        def get(self, destination: str, default: str) -> str:
            parts = [s for s in smsc.accepted if s.destination == "447700900021"]
            return "UNDELIV" if destination == "447700900021" and len(parts) == 7 else default

    smsc.behaviour.receipt_stats = LastPartFails()  # type: ignore[assignment]

    assert run_once(settings, engine) == 2

    rows = details(engine, ids)
    long_msg = {m.destination: m for m in smsc.messages()}["447700900021"]
    assert len(long_msg.ids) == 8 and all(len(i) == 36 for i in long_msg.ids)
    assert len(rows[ids[0]]["gateway_ref"]) <= 128
    states = part_states(engine, ids[0])
    assert [m for _, m, _ in states] == long_msg.ids
    assert [s for _, _, s in states] == ["DELIVRD"] * 7 + ["UNDELIV"]
    assert rows[ids[0]]["state"] == "rejected" and rows[ids[0]]["gateway_status"] == "UNDELIV"
    assert rows[ids[1]]["gateway_status"] == "DELIVRD"
    assert smsc.counts["receipt_acks"] == 9


def test_receipts_that_cannot_be_stored_are_not_acknowledged(smsc, sms_env, monkeypatch):
    """The SMSC sends an unacknowledged receipt again: nothing is lost with the database."""
    import comms_pipeline.pipeline.receipts as receipts

    settings, engine = sms_env()
    smsc.behaviour.receipts = "after"
    add_details(engine, "sms", numbers(3))

    def refuse(conn, batch):  # type: ignore[no-untyped-def]
        raise OSError("database unavailable")

    monkeypatch.setattr(receipts, "store_receipts", refuse)
    assert run_once(settings, engine) == 3
    assert smsc.counts["receipts"] == 3 and smsc.counts["receipt_acks"] == 0
