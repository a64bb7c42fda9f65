"""SMS text: encoding detection, part counting, splitting and limits."""

from __future__ import annotations

import pytest

from comms_pipeline.core.sms_text import (
    GSM7,
    UCS2,
    SmsTooLong,
    analyse,
    check_sms,
    encoding_of,
    split_parts,
    units_of,
)


@pytest.mark.parametrize("text, encoding", [
    ("Hello world @£$¥ èéùìò", GSM7),
    ("Price: 10€ [promo] {x} ~ | ^ \\", GSM7),
    ("ΔΦΓΛΩΠΨΣΘΞ", GSM7),  # the Greek capitals of the GSM basic table
    ("Καλημέρα", UCS2),
    ("Hello 😀", UCS2),
    ("ç", UCS2),  # lowercase c-cedilla is not in the GSM table (only Ç is)
])
def test_encoding_detection(text, encoding):
    assert encoding_of(text) == encoding


def test_gsm_single_and_concatenated_parts():
    assert analyse("a" * 160).parts == 1
    encoding, parts = split_parts("a" * 161)
    assert encoding == GSM7
    assert [len(p) for p in parts] == [153, 8]
    assert analyse("a" * 306).parts == 2
    assert analyse("a" * 307).parts == 3


def test_extension_characters_count_two_and_never_split_from_their_escape():
    assert units_of("€" * 80) == 160
    assert analyse("€" * 80).parts == 1
    assert analyse("€" * 81).parts == 2
    _, parts = split_parts("a" + "€" * 80)  # 161 septets
    assert [units_of(p, GSM7) for p in parts] == [153, 8]
    assert "".join(parts) == "a" + "€" * 80
    _, parts = split_parts("ab" + "€" * 80)
    assert [units_of(p, GSM7) for p in parts] == [152, 10]  # the 77th € moves whole


def test_ucs2_single_and_concatenated_parts():
    greek = "α" * 70
    assert analyse(greek).parts == 1
    encoding, parts = split_parts("α" * 71)
    assert encoding == UCS2
    assert [len(p) for p in parts] == [67, 4]
    assert analyse("α" * 135).parts == 3


def test_surrogate_pairs_stay_together():
    text = "a" * 66 + "😀" + "b" * 10
    _, parts = split_parts(text)
    assert parts[0] == "a" * 66
    assert parts[1].startswith("😀")
    assert "".join(parts) == text
    assert analyse(text).units == 78


def test_limits_are_enforced_with_a_clear_rejection():
    info = check_sms("Καλημέρα " * 10, max_chars=160)
    assert (info.encoding, info.chars, info.parts) == (UCS2, 90, 2)
    with pytest.raises(SmsTooLong, match=r"SMS text is 161 characters \(GSM-7, 2 part\(s\)\); "
                                         r"the limit is 160"):
        check_sms("a" * 161, max_chars=160)
    with pytest.raises(SmsTooLong, match="needs 2 UCS-2 parts; the limit is 1"):
        check_sms("α" * 71, max_chars=160, max_parts=1)
    assert SmsTooLong.code == "TOO_LONG"
    assert str(analyse("hi")) == "2 characters, GSM-7, 1 part(s)"
