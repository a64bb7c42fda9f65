"""The email message builder: structure, encoded headers, and header injection."""

from __future__ import annotations

import email
from email import policy
from email.utils import parsedate_to_datetime

import pytest

from comms_pipeline.rendering.mime import (
    InvalidMessage,
    MessageSpec,
    build_message,
    clean_header_text,
    html_to_text,
    parse_mailbox,
    unsubscribe_link,
)

SENDER = parse_mailbox("Comms Demo <no-reply@example.com>")
HTML = ('<html><head><style>p {color: red}</style><title>hidden</title></head><body>'
        '<h1>Hello&nbsp;there</h1><p>Your <b>bill</b>   is due.<br>Pay '
        '<a href="https://pay.example/b?x=1&amp;y=2">here</a>.</p>'
        '<ul><li>one</li><li>two</li></ul><script>alert(1)</script></body></html>')

#: Line breaks of every kind a value might carry, each trying to add a Bcc header.
INJECTIONS = ["\r\nBcc: evil@attacker.example", "\nBcc: evil@attacker.example",
              "\rBcc: evil@attacker.example", "\u2028Bcc: evil@attacker.example",
              "\x85Bcc: evil@attacker.example", "\r\n\r\nBcc: evil@attacker.example",
              "\r\n Bcc: evil@attacker.example"]
#: RFC 2047 encoded words standing for a line break (Python 3.11 decodes them
#: when it folds a header: gh-121650), nested, split in two, and undecodable.
ENCODED_INJECTIONS = ["=?utf-8?q?x=0D=0ABcc:_evil@attacker.example?=",
              "=?utf-8?b?eA0KQmNjOiBldmlsQGF0dGFja2VyLmV4YW1wbGU=?=",
              "=?utf-8?b?PT91dGYtOD9xP3g9MEQ9MEFCY2M6X2V2aWxAYXR0YWNrZXIuZXhhbXBsZT89?=",
              "=?utf-8?q?x=0D=0A?= =?utf-8?q?Bcc:_evil@attacker.example?=",
              "=?no-such-charset?q?x=0D=0ABcc:_evil@attacker.example?="]


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


def spec(**overrides) -> MessageSpec:
    values = dict(sender=SENDER, to=parse_mailbox("george@example.com", "George"),
                  subject="Your bill", text="Plain text", html="<p>HTML</p>",
                  message_id_domain="mail.example.org")
    values.update(overrides)
    return MessageSpec(**values)


def header_names(data: bytes) -> list[str]:
    """Names of the top-level headers, read straight from the bytes."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in (" ", "\t")]


def test_multipart_alternative_with_utf8_headers() -> None:
    data, message_id = build_message(spec(
        subject="Καλώς ήρθατε — λογαριασμός Β-12", to=parse_mailbox("g@example.gr",
                                                                   "Γιώργος Παπαδόπουλος"),
        text="Γεια σας", html="<p>Γεια σας</p>", reply_to=parse_mailbox("care@example.com")))
    assert data.isascii(), "headers and bodies are 7-bit clean (encoded words, base64 / QP)"
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Καλώς ήρθατε — λογαριασμός Β-12"
    assert msg["To"].addresses[0].display_name == "Γιώργος Παπαδόπουλος"
    assert msg["To"].addresses[0].addr_spec == "g@example.gr"
    assert str(msg["From"]) == "Comms Demo <no-reply@example.com>"
    assert str(msg["Reply-To"]) == "care@example.com"
    assert msg["Message-ID"] == message_id and message_id.endswith("@mail.example.org>")
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    plain, html = msg.get_payload()
    assert plain.get_content_type() == "text/plain" and plain.get_content().strip() == "Γεια σας"
    assert html.get_content_type() == "text/html" and "<p>Γεια σας</p>" in html.get_content()
    assert "MIME-Version" not in plain and msg["MIME-Version"] == "1.0"
    assert "List-Unsubscribe" not in msg


def test_text_only_message_is_single_part() -> None:
    msg = parse(build_message(spec(html=None))[0])
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Plain text"


def test_list_unsubscribe_is_one_unfolded_line() -> None:
    token = "eyJjIjoiQy0xIiwiYSI6Im9wdF9vdXQiLCJzIjoiMTIzIn0.ZzZzZw.abcdefghijklmnopqrstuvwxyz012"
    url = unsubscribe_link("https://example.com/links/unsubscribe?list=news", token)
    assert url == f"https://example.com/links/unsubscribe?list=news&t={token}"
    data, _ = build_message(spec(unsubscribe_url=url))
    assert f"List-Unsubscribe: <{url}>\r\n".encode() in data
    msg = parse(data)
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("payload", INJECTIONS + ENCODED_INJECTIONS)
def test_line_breaks_in_values_never_add_a_header(payload: str) -> None:
    data, _ = build_message(spec(
        subject=f"Your bill{payload}",
        to=parse_mailbox("george@example.com", f"George{payload}"),
        reply_to=parse_mailbox("care@example.com", f"Care{payload}"),
        message_id_domain=f"mail.example.org{payload}",
        text=f"text{payload}", html=f"<p>html{payload}</p>",
    ))
    names = header_names(data)
    assert sorted(names) == sorted(["Message-ID", "Date", "From", "Reply-To", "To", "Subject",
                                    "MIME-Version", "Content-Type"])
    msg = parse(data)
    assert msg["Bcc"] is None
    assert msg["Subject"].startswith("Your bill")  # kept as text of the one header
    assert "Bcc: evil@attacker.example" in msg["Subject"].replace("= ?", "=?") or \
        "Bcc:_evil" in msg["Subject"]
    assert [a.addr_spec for a in msg["To"].addresses] == ["george@example.com"]
    assert msg["To"].addresses[0].display_name.startswith("George")


@pytest.mark.parametrize("payload", INJECTIONS)
def test_line_breaks_in_addresses_and_urls_are_refused(payload: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_mailbox(f"george@example.com{payload}")
    with pytest.raises(InvalidMessage):
        parse_mailbox(f"Comms{payload} <no-reply@example.com>")
    with pytest.raises(InvalidMessage):
        unsubscribe_link(f"https://example.com/u{payload}", "token")


@pytest.mark.parametrize("payload", ENCODED_INJECTIONS)
def test_encoded_words_in_addresses_are_refused_or_stay_in_their_header(payload: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_mailbox(f"george@example.com{payload}")
    try:
        sender = parse_mailbox(f"Comms{payload} <no-reply@example.com>")
    except InvalidMessage:
        return  # refused: nothing to write
    data, _ = build_message(spec(sender=sender))
    assert sorted(header_names(data)) == sorted(["Message-ID", "Date", "From", "To", "Subject",
                                                 "MIME-Version", "Content-Type"])
    assert parse(data)["From"].addresses[0].addr_spec == "no-reply@example.com"


@pytest.mark.parametrize("value", ["", "not-an-address", "a@", "@example.com",
                                   "a@example.com, b@example.com", "jö@example.com",
                                   "<a@example.com> trailing", "a b@example.com"])
def test_unusable_addresses_are_refused(value: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_mailbox(value)


def test_international_domain_is_idna_encoded() -> None:
    mailbox = parse_mailbox("jo@bücher.example", 'Jo "the reader", Esq.')
    assert mailbox.addr_spec == "jo@xn--bcher-kva.example"
    msg = parse(build_message(spec(to=mailbox))[0])
    assert msg["To"].addresses[0].display_name == 'Jo "the reader", Esq.'


def test_unsubscribe_url_must_be_http() -> None:
    with pytest.raises(InvalidMessage):
        unsubscribe_link("javascript:alert(1)", "t")
    with pytest.raises(InvalidMessage):
        unsubscribe_link("mailto:unsubscribe@example.com", "t")


def test_clean_header_text() -> None:
    assert clean_header_text("  a\r\n\tb\x00c\u2029d  ") == "a b c d"
    assert clean_header_text(None) == ""


def test_html_to_text_keeps_structure_and_links() -> None:
    text = html_to_text(HTML)
    assert text == ("Hello there\n\nYour bill is due.\nPay here (https://pay.example/b?x=1&y=2)."
                    "\n\n- one\n- two")
    assert "alert" not in text and "color" not in text and "hidden" not in text


def test_html_to_text_link_shown_once_when_text_is_the_url() -> None:
    assert html_to_text('<a href="https://x.example/">https://x.example/</a>') == \
        "https://x.example/"
    assert html_to_text('<a href="mailto:care@x.example">write to us</a>') == \
        "write to us (care@x.example)"
    assert html_to_text('<a href="#top">top</a>') == "top"
