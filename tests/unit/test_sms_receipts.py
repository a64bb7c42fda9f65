"""SMPP pieces without a server: receipt parsing, id forms, text parts, status names."""

from __future__ import annotations

import pytest

from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.smpp_pdu import (
    THROTTLED,
    encode_text,
    gsm_encode,
    status_error,
    submit_sm,
    submit_sm_body,
    submit_sm_resp,
)
from comms_pipeline.gateways.smpp_receipts import Receipt, parse_receipt
from comms_pipeline.pipeline.receipts import _status_values, id_candidates

TEXT = (b"id:1A2B3C sub:001 dlvrd:001 submit date:2611230750 done date:2611230751 "
        b"stat:DELIVRD err:000 text:Hello")


def test_receipt_text_is_parsed():
    r = parse_receipt(TEXT)
    assert (r.message_id, r.stat, r.err, r.done_date) == ("1A2B3C", "DELIVRD", "000",
                                                          "2611230751")


def test_tlvs_win_over_the_text():
    r = parse_receipt(TEXT, receipted_message_id=b"1715004\x00", message_state=5)
    assert (r.message_id, r.stat) == ("1715004", "UNDELIV")


def test_unreadable_receipts_are_none():
    assert parse_receipt(b"hello there") is None


def test_id_candidates_convert_only_as_configured():
    assert id_candidates("1715004") == ["1715004"]  # exact: no guessing
    assert id_candidates("1715004", "exact") == ["1715004"]
    dec_to_hex = id_candidates("1715004", "dec-to-hex")
    assert dec_to_hex[0] == "1715004"
    assert {"1a2b3c", "1A2B3C", "001a2b3c"} <= set(dec_to_hex)
    assert id_candidates("1a2b3c", "hex-to-dec") == ["1a2b3c", "1715004"]
    assert id_candidates("1a2b3c", "dec-to-hex") == ["1a2b3c"]
    assert id_candidates("92", "hex-to-dec") == ["92", "146"]  # the id as written first


@pytest.mark.parametrize("current,new,applies", [
    (None, "DELIVRD", True), ("ENROUTE", "DELIVRD", True), ("DELIVRD", "ENROUTE", False),
    ("DELIVRD", "UNDELIV", True), ("UNDELIV", "DELIVRD", False), ("UNDELIV", "EXPIRED", True),
])
def test_a_weaker_status_does_not_overwrite_a_stronger_one(current, new, applies):
    values = _status_values(Receipt("1", new, "001"), current)
    assert (values is not None) == applies
    if values and new == "UNDELIV":
        assert values["error_code"] == "UNDELIV" and "err:001" in values["error_description"]


def test_gsm_text_fits_160_septets_then_splits_at_153():
    coding, parts = encode_text("a" * 160)
    assert coding == 0 and parts == [b"a" * 160]
    coding, parts = encode_text("a" * 161)
    assert coding == 0 and [len(p) for p in parts] == [153, 8]


def test_escape_sequences_count_twice_and_are_never_split():
    coding, parts = encode_text("€" * 80)  # 160 septets: one part
    assert coding == 0 and len(parts) == 1
    coding, parts = encode_text("ab" + "€" * 80)  # 162: 2 + 75*2, then the rest
    assert [len(p) for p in parts] == [152, 10]
    assert all(not p.endswith(b"\x1b") for p in parts)


def test_ucs2_fits_70_units_then_splits_at_67_without_breaking_surrogates():
    coding, parts = encode_text("ж" * 70)
    assert coding == 8 and len(parts) == 1
    coding, parts = encode_text("ж" * 71)
    assert [len(p) // 2 for p in parts] == [67, 4]
    text = "ж" * 66 + "😀" + "ж" * 3  # 71 units; the emoji's pair would straddle unit 67
    coding, parts = encode_text(text)
    assert [len(p) // 2 for p in parts] == [66, 5]
    assert "".join(p.decode("utf-16-be") for p in parts) == text


def test_gsm_encoding_uses_the_gsm_table():
    assert gsm_encode("@£$") == b"\x00\x01\x02"
    assert gsm_encode("[€]") == b"\x1b\x3c\x1b\x65\x1b\x3e"
    assert gsm_encode("Привет") is None


def test_status_errors_carry_the_code_and_its_name():
    err = status_error(0x0B)
    assert isinstance(err, PermanentGatewayError)
    assert err.code == "0x0000000B" and err.description.startswith("ESME_RINVDSTADR")
    assert isinstance(status_error(0x58), TransientGatewayError)
    assert {0x58, 0x14} <= THROTTLED  # both mean: slow down and resubmit
    assert status_error(0x400).description.startswith("UNKNOWN")


@pytest.mark.parametrize("fields", [
    {"service_type": "", "source_addr_ton": 5, "source_addr_npi": 0, "source_addr": "Comms",
     "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "447700900123",
     "esm_class": 0, "registered_delivery": 1, "data_coding": 0, "short_message": b"Hi there"},
    {"service_type": "CMT", "source_addr_ton": 1, "source_addr_npi": 1,
     "source_addr": "447700900000", "dest_addr_ton": 1, "dest_addr_npi": 1,
     "destination_addr": "12345678901234567890123", "esm_class": 0x40,
     "registered_delivery": 0, "data_coding": 8,
     "short_message": b"\x05\x00\x03\x07\x02\x01" + "ж".encode("utf-16-be") * 67},
])
def test_submit_sm_is_packed_as_smpplib_packs_it(fields):
    from smpplib import smpp

    class Client:
        sequence = 41

        def next_sequence(self) -> int:
            return 42

    reference = smpp.make_pdu("submit_sm", client=Client(), **fields).generate()
    assert submit_sm(42, submit_sm_body(fields)) == reference


def test_submit_sm_resp_is_unpacked_as_smpplib_reads_it():
    from smpplib import smpp

    class Client:
        sequence = 7

        def next_sequence(self) -> int:
            return 7

    resp = smpp.make_pdu("submit_sm_resp", client=Client(), message_id="a0f3")
    resp.sequence, resp.status = 7, 0
    assert submit_sm_resp(resp.generate()) == (0, 7, "a0f3")
