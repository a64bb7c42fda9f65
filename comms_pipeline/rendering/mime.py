"""Building the RFC 5322 message of an email detail, and the text alternative of HTML bodies.

Every header value that comes from data (the subject, display names, addresses) goes through
the ``email`` package's header objects, never through string concatenation, and is cleaned
of control characters first: a CR or LF in a value can only ever end up as a space inside
that one header, never as a new header. Addresses are parsed strictly; one that does not
parse is refused with :class:`InvalidMessage`.
"""

from __future__ import annotations

import quopri
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.errors import HeaderParseError, MessageError
from email.header import decode_header, make_header
from email.headerregistry import (
    Address,
    AddressHeader,
    BaseHeader,
    HeaderRegistry,
    UnstructuredHeader,
)
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html import escape
from html.parser import HTMLParser
from typing import cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from comms_pipeline.core.errors import CommsError
from comms_pipeline.rendering.header_words import fold_addresses, fold_unstructured

#: A host name (letters, digits and hyphens in dot-separated labels) or an address literal.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\Z|\[[0-9A-Fa-f:.]+\]\Z")

#: Characters that must never reach a header: C0/C1 controls and Unicode line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class InvalidMessage(CommsError):
    """The message cannot be built from these values."""


#: An RFC 2047 encoded word (``=?utf-8?q?...?=``). Python 3.11's ``email`` decodes encoded
#: words found in a value when it folds the header, and writes what they decode to as is: a
#: ``=0D=0A`` inside one would become a real line break, i.e. a new header (CPython
#: gh-121650). So values are taken as their decoded text, cleaned, before they reach a header.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
#: The start of anything Python's header parser may take for an encoded word: it is more
#: lenient than RFC 2047 (spaces inside a word are accepted), so what is left after decoding
#: is defused by its start, whatever follows.
_WORD_START = re.compile(r"=\?(?=[^?]*\?[bBqQ]\?)")
_DECODE_ROUNDS = 4


class HeaderInjection(InvalidMessage):
    """A value would have written a header line of its own (refused, never sent)."""


def _one_line(value: str) -> str:
    return " ".join(_CONTROL.sub(" ", value).split())


def clean_header_text(value: str | None) -> str:
    """One line of text: control characters and line breaks become single spaces, and
    encoded words are replaced by the cleaned text they stand for (what a reader would see),
    so nothing in the value can turn into a line break when the header is written.

    Words that cannot be decoded (an unknown charset) are defused and kept as text. A value
    that still holds encoded-word syntax after decoding (words that decode to more words,
    deeper than anyone writes by accident, or words only Python's lenient parser reads) is an
    injection attempt: refused with :class:`HeaderInjection`, never sent.
    """
    text = _one_line(value or "")
    for _ in range(_DECODE_ROUNDS):
        if _ENCODED_WORD.search(text) is None:
            break
        try:
            text = _one_line(str(make_header(decode_header(text))))
        except (HeaderParseError, LookupError, UnicodeError, ValueError):
            return _WORD_START.sub("= ?", text)  # undecodable (a charset we lack): as text
    if _WORD_START.search(text) is not None:
        raise HeaderInjection("a header value holds encoded words (=?...?=) that are nested "
                              "or cannot be decoded")
    return text


class _UnfoldedHeader(UnstructuredHeader):
    """A header written on one line as given (URLs in angle brackets must not be folded).

    Python folds a long unstructured value by turning it into RFC 2047 encoded words, which
    would make ``List-Unsubscribe`` unreadable to mailbox providers. The value is plain ASCII
    without line breaks (checked when it is built), so one line of up to 998 octets is valid.
    """

    def fold(self, *, policy):
        return f"{self.name}: {self}{policy.linesep}"  # type: ignore[attr-defined]


class _EncodedTextHeader(UnstructuredHeader):
    """Subject: written by :mod:`.header_words`, not by Python's folder, which
    loses spaces between encoded words (python/cpython#144156)."""

    max_count = 1

    def fold(self, *, policy):
        return fold_unstructured(self.name, str(self), policy.linesep)  # type: ignore[attr-defined]


class _EncodedAddressHeader(AddressHeader):
    """From / To / Reply-To: display names written by :mod:`.header_words`."""

    max_count = 1

    def fold(self, *, policy):
        return fold_addresses(self.name, [(a.display_name, a.addr_spec)  # type: ignore[attr-defined]
                                          for a in self.addresses], policy.linesep)


def _make_policy() -> email_policy.EmailPolicy[EmailMessage]:
    # The header classes are mixins: the registry combines each with BaseHeader.
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", cast("type[BaseHeader]", _UnfoldedHeader))
    registry.map_to_type("subject", cast("type[BaseHeader]", _EncodedTextHeader))
    for name in ("from", "to", "reply-to"):
        registry.map_to_type(name, cast("type[BaseHeader]", _EncodedAddressHeader))
    return email_policy.SMTP.clone(header_factory=registry)


#: CRLF line endings and 78-column folding; the headers whose text comes from data are
#: encoded by :mod:`~comms_pipeline.rendering.header_words` (exact text back in every decoder).
POLICY = _make_policy()
_PARSER = HeaderRegistry()


def parse_mailbox(value: str, display_name: str | None = None) -> Address:
    """One mailbox from ``"Name <addr>"`` or a bare address; the domain is IDNA-encoded.

    ``display_name`` (cleaned of line breaks) replaces the name written in ``value``. A local
    part outside ASCII would need SMTPUTF8, which this pipeline does not send: such an address
    is refused rather than sent mangled.
    """
    if _CONTROL.search(value or ""):
        raise InvalidMessage(f"address contains control characters: {value!r}")
    try:
        header = _PARSER("to", value or "")
        found = header.addresses  # type: ignore[attr-defined]
    except (ValueError, IndexError, MessageError) as exc:
        raise InvalidMessage(f"not an email address: {value!r} ({exc})") from None
    if len(found) != 1 or header.defects or not found[0].username or not found[0].domain:
        raise InvalidMessage(f"not one valid email address: {value!r}")
    mailbox = found[0]
    if not mailbox.username.isascii():
        raise InvalidMessage(f"{value!r} has a non-ASCII local part (needs SMTPUTF8)")
    try:
        domain = mailbox.domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidMessage(f"{value!r} has an invalid domain: {exc}") from None
    if _DOMAIN.match(domain) is None:
        raise InvalidMessage(f"{value!r} has an invalid domain: {domain!r}")
    shown = clean_header_text(mailbox.display_name if display_name is None else display_name)
    try:
        return Address(display_name=shown, username=mailbox.username, domain=domain)
    except (ValueError, IndexError, MessageError) as exc:
        raise InvalidMessage(f"not an email address: {value!r} ({exc})") from None


def unsubscribe_link(base_url: str, token: str) -> str:
    """``base_url`` with ``t=<token>`` added to its query, as plain ASCII (a header value)."""
    if _CONTROL.search(base_url) or " " in base_url:
        raise InvalidMessage("the unsubscribe URL contains spaces or control characters")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidMessage(f"the unsubscribe URL must be http(s): {base_url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True) + [("t", token)]
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    netloc = parts.netloc.encode("idna").decode("ascii") if not parts.netloc.isascii() \
        else parts.netloc
    return urlunsplit((parts.scheme, netloc, path, urlencode(query), ""))


@dataclass(frozen=True)
class MessageSpec:
    """Everything one message is built from; all of it may come from data."""

    sender: Address
    to: Address
    subject: str
    text: str
    html: str | None = None
    reply_to: Address | None = None
    message_id_domain: str = "localhost"
    unsubscribe_url: str | None = None
    date: datetime | None = None
    #: Carried in the Message-ID (``make_msgid``'s idstring): how a bounce names its message.
    message_id_tag: str | None = None


def build_message(spec: MessageSpec) -> tuple[bytes, str]:
    """The message as bytes (CRLF, ready for SMTP) and its Message-ID."""
    msg = EmailMessage(policy=POLICY)
    message_id = make_msgid(idstring=spec.message_id_tag,
                            domain=clean_header_text(spec.message_id_domain) or "localhost")
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(spec.date or datetime.now(UTC))
    msg["From"] = spec.sender
    if spec.reply_to is not None:
        msg["Reply-To"] = spec.reply_to
    msg["To"] = spec.to
    msg["Subject"] = clean_header_text(spec.subject)
    if spec.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{spec.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = _lf_lines(spec.text)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_transfer_encoding(text))
    if spec.html is not None:
        html = _lf_lines(spec.html)
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=_transfer_encoding(html))
        for part in msg.iter_parts():
            del part["MIME-Version"]  # belongs to the top level only
    data = msg.as_bytes()
    _check_header_lines(data, {name.lower() for name in msg})
    return data, message_id


def _check_header_lines(data: bytes, names: set[str]) -> None:
    """The last line of defence: every line of the written header block continues a header
    or starts one of the headers that were set, whatever a value held."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        name = line.split(b":", 1)[0].decode("ascii", "replace").lower()
        if ":" not in line.decode("ascii", "replace") or name not in names:
            raise HeaderInjection("a header value would have added a line of its own")


def _lf_lines(body: str) -> str:
    """Line endings normalised to LF (the policy writes CRLF); a trailing newline."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def _transfer_encoding(body: str) -> str:
    """7bit when it can be, else the shorter of quoted-printable and base64.

    Never 8bit: a relay without 8BITMIME would have to re-encode (or refuse) the message.
    """
    if body.isascii() and max(map(len, body.split("\n"))) <= 998:
        return "7bit"
    raw = body.encode("utf-8")
    qp_size = len(quopri.encodestring(raw))
    base64_size = (len(raw) + 2) // 3 * 4 * 77 // 76
    return "quoted-printable" if qp_size <= base64_size else "base64"


# -- the text alternative ---------------------------------------------------------------------

_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "thead", "tfoot",
    "tr", "ul",
})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul",
                        "ol", "pre"})
_HIDDEN = frozenset({"head", "script", "style", "title", "template", "noscript"})


class _TextConverter(HTMLParser):
    """HTML to readable plain text: paragraphs, list bullets, links as ``text (url)``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.links: list[tuple[str, int]] = []

    def _newline(self, count: int = 1) -> None:
        self.out.append("\n" * count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self._newline()
        elif tag == "li":
            self._newline()
            self.out.append("- ")
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", len(self.out)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(f"[{alt}]")
        elif tag in ("td", "th"):
            self.out.append("  ")
        elif tag in _BLOCK:
            self._newline(2 if tag in _PARAGRAPH else 1)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(self.hidden - 1, 0)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            shown = "".join(self.out[start:]).strip()
            if href and not href.startswith("#") and href != shown:
                target = href.removeprefix("mailto:")
                self.out.append(f" ({target})" if shown else target)
        elif tag in _BLOCK and tag != "li":
            self._newline(2 if tag in _PARAGRAPH else 1)
        if tag == "pre":
            self.pre = max(self.pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            self.out.append(data)
        else:
            self.out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self.out).split("\n")]
        text = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML body (used when a template has no text body)."""
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    return converter.text()


def text_to_html(text: str) -> str:
    """Plain text as escaped HTML paragraphs (for a letter whose template has only text)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "".join("<p>" + escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs if p)
