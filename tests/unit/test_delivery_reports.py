"""DSN (RFC 3464) and ARF (RFC 5965) parsing over a corpus in several MTAs' formats, the
signed VERP addresses, and the parser's promise never to raise anything but MalformedReport."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from comms_pipeline.gateways.delivery_reports import MalformedReport, parse_report
from comms_pipeline.pipeline.verp import VerpAddresses

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "feedback"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
#: The id signed in each sample's VERP address and Message-ID (the samples' own signatures
#: are made up: they must NOT verify under a real secret).
VERP_IN_SAMPLE = re.compile(r"bounces\+(\d+)\.")


def test_every_sample_in_the_corpus_is_listed():
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample_parses_to_its_status_and_diagnostic(name):
    data = (CORPUS / name).read_bytes()
    want = EXPECTED[name]
    if "malformed" in want:
        with pytest.raises(MalformedReport, match=want["malformed"]):
            parse_report(data)
        return
    report = parse_report(data)
    assert report.report_type == want["type"]
    got = [(r.kind, r.recipient, r.status, r.diagnostic) for r in report.recipients]
    assert [g[:3] for g in got] == [tuple(w[:3]) for w in want["recipients"]]
    for g, w in zip(got, want["recipients"], strict=True):
        assert g[3] is not None and g[3].startswith(w[3])
    if want["recipients"]:  # the original is named by its headers
        assert report.message_id and ".cp" in report.message_id
        assert report.original_sender and VERP_IN_SAMPLE.match(report.original_sender)


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        cut = rng.randrange(len(data))
        choice = rng.randrange(3)
        if choice == 0:
            out.append(data[:cut])
        elif choice == 1:
            flipped = bytearray(data)
            for _ in range(20):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            out.append(bytes(flipped))
        else:
            out.append(data[:cut] + data[cut + rng.randrange(1, 200):])
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_damaged_sample_is_a_report_or_malformed_never_a_crash(name):
    rng = random.Random(name)
    for data in _mutations((CORPUS / name).read_bytes(), rng, 60):
        try:
            report = parse_report(data)
        except MalformedReport:
            continue
        for r in report.recipients:
            assert r.kind in ("hard_bounce", "soft_bounce", "complaint")


def test_empty_and_non_mime_input_is_malformed():
    for data in (b"", b"\x00\xff" * 50, b"Subject: hi\r\n\r\nhello"):
        with pytest.raises(MalformedReport):
            parse_report(data)


def test_verp_address_round_trips_and_rejects_forgeries():
    verp = VerpAddresses("secret-1", "Bounces.Example.COM")
    address = verp.address(1234)
    assert re.fullmatch(r"bounces\+1234\.[0-9a-f]{12}@bounces\.example\.com", address)
    assert verp.detail_id(address) == 1234
    assert verp.detail_id(address.upper()) == 1234  # an MTA that folded the case
    assert verp.detail_id(f"<{address}>") == 1234
    assert verp.detail_id(address.replace("1234", "1235")) is None  # someone else's id
    assert VerpAddresses("secret-2", "bounces.example.com").detail_id(address) is None
    assert verp.detail_id(address.replace("example.com", "example.net")) is None
    assert verp.detail_id("postmaster@bounces.example.com") is None
    assert verp.accepts_domain("postmaster@bounces.example.com.")
    assert not verp.accepts_domain("someone@example.com")
    # The samples' made-up signatures do not verify.
    for name in EXPECTED:
        found = VERP_IN_SAMPLE.search((CORPUS / name).read_text("latin-1"))
        if found:
            assert verp.detail_id(f"bounces+{found.group(1)}.000000000000@x") is None


def test_message_id_tag_names_its_detail_only_when_signed():
    from email.utils import make_msgid

    verp = VerpAddresses("secret-1", "bounces.example.com")
    message_id = make_msgid(idstring=verp.message_id_tag(77), domain="comms.example.com")
    assert verp.detail_id_from_message_id(message_id) == 77
    assert verp.detail_id_from_message_id(message_id.replace("cp77.", "cp78.")) is None
    assert verp.detail_id_from_message_id(make_msgid(domain="comms.example.com")) is None


def test_a_taken_port_is_a_one_line_configuration_error():
    import socket

    from comms_pipeline.core.errors import GatewayConfigError
    from comms_pipeline.gateways.bounce_smtp import BounceSmtpServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = BounceSmtpServer("127.0.0.1", taken.getsockname()[1], lambda a: True,
                                  lambda *a: "250 OK")
        with pytest.raises(GatewayConfigError, match="cannot listen on 127.0.0.1:"):
            server.start()
