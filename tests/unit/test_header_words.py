"""Subjects and display names decode to exactly the text they were built from.

CPython 3.11's own folder loses the space between two encoded words (python/cpython#144156):
about one random mixed Greek/Latin subject in ten came back with two words run together. The
builder now writes these headers itself (``rendering.header_words``); these property
tests decode what it writes with Python's parser (``policy.default``) and with the RFC 2047
decoder of the legacy API, and want the input back, character for character.
"""

from __future__ import annotations

import email
from email import policy
from email.header import decode_header

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from comms_pipeline.rendering.header_words import fold_unstructured
from comms_pipeline.rendering.mime import MessageSpec, build_message, parse_mailbox

GREEK = "αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώϊϋΐΰΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΆΈΉΊΌΎΏ"
LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éèêàçüößñÉÅøœ"
MARKS = ",.;:!?-_'\"()<>[]@#%&*+/=\\€—–…«»"

greek_latin_word = st.text(GREEK + LATIN + MARKS, min_size=1, max_size=14)
any_word = st.text(st.characters(categories=("L", "M", "N", "P", "S"),
                                 exclude_characters="\u2028\u2029"), min_size=1, max_size=10)


def words_text(word, max_words: int):  # type: ignore[no-untyped-def]
    """Words of ``word`` joined by single spaces: the shape every cleaned header value has."""
    return st.lists(word, min_size=1, max_size=max_words).map(" ".join).filter(
        lambda s: "=?" not in s)  # an encoded word in data is decoded on purpose (see mime)


def built(subject: str, name: str) -> email.message.EmailMessage:
    to = parse_mailbox("customer@example.com", name)
    sender = parse_mailbox("no-reply@example.com", name)
    data, _ = build_message(MessageSpec(sender=sender, to=to, reply_to=to, subject=subject,
                                        text="Hello"))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and max(map(len, head.split(b"\r\n"))) <= 998
    return email.message_from_bytes(data, policy=policy.default)


SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(subject=words_text(greek_latin_word, 16), name=words_text(greek_latin_word, 5))
@example(subject="Σας ευχαριστούμε για την επιλογή της εξυπηρέτησής σας, κυρία Smith",
         name="Γιώργος Παπαδόπουλος")
def test_greek_latin_subjects_and_names_decode_exactly(subject: str, name: str) -> None:
    msg = built(subject, name)
    assert msg["Subject"] == subject
    for header in ("From", "To", "Reply-To"):
        (address,) = msg[header].addresses
        assert address.display_name == name
    assert msg["To"].addresses[0].addr_spec == "customer@example.com"


@SLOW
@given(subject=words_text(any_word, 12), name=words_text(any_word, 4))
def test_any_unicode_subjects_and_names_decode_exactly(subject: str, name: str) -> None:
    msg = built(subject, name)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == name


@SLOW
@given(subject=words_text(greek_latin_word, 16))
def test_rfc2047_decoder_reads_the_same_subject(subject: str) -> None:
    """The legacy API follows RFC 2047 to the letter (white space between two encoded words
    is dropped, any other is kept): the same text comes back."""
    raw = fold_unstructured("Subject", subject).split(":", 1)[1].strip()
    unfolded = raw.replace("\r\n", "")
    text = "".join(part.decode(charset) if charset else part.decode("ascii")
                   if isinstance(part, bytes) else part
                   for part, charset in decode_header(unfolded))
    assert text == subject


def test_subject_lines_fold_within_78_columns() -> None:
    subject = " ".join(["εξυπηρέτησής σας Smith"] * 12)
    folded = fold_unstructured("Subject", subject)
    assert all(len(line) <= 78 for line in folded.split("\r\n"))
    assert folded.count("\r\n") > 3


def test_plain_ascii_stays_readable() -> None:
    assert fold_unstructured("Subject", "Your bill B-12 is ready") == (
        "Subject: Your bill B-12 is ready\r\n")
