"""Header values written so that every decoder gets the exact text back.

CPython 3.11's folder loses the space between two words when it folds a header through
RFC 2047 encoded words (python/cpython#144156): about one random Greek/Latin subject in ten
came out with two words run together. So the headers whose text comes from data (Subject, and
the display names of From / To / Reply-To) are encoded here instead, by rules every decoder
applies the same way (RFC 2047 sections 2, 5 and 6.2):

- a word of plain ASCII (no ``=?``) is written as it is; the single space between two words
  is folding white space, which unfolding gives back;
- a run of words that need encoding is written as encoded words *together with the spaces
  inside the run*: white space between two adjacent encoded words is ignored by decoders, so
  a space only survives inside an encoded word. Encoded words are split between characters,
  never inside one (each decodes on its own), and are at most 75 characters long;
- each run uses Q or B, whichever is shorter; Q uses only the characters RFC 2047 section
  5(3) allows in a phrase, so the same words serve display names;
- lines are folded at 78 columns where a space allows it.

A display name is the exception: it is written as *one* encoded word, even past 75
characters. Python's ``email`` parser (``policy.default``) keeps the white space between two
encoded words of a phrase (a display name) as a space, which RFC 2047 decoders drop, so a name
split over two words would decode differently in the two; every widespread decoder reads a
long encoded word. Only a name too long for one line (never a real one: contact names are at
most 200 characters) is split.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Sequence

MAX_LINE = 78
EW_MAX = 75
_OVERHEAD = len("=?utf-8?q??=")
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
#: A word longer than this is encoded (and so split) rather than written on a line of its own.
_PLAIN_MAX = MAX_LINE - 2
#: Display names written as a quoted string (or atoms) when ASCII and at most this long.
_NAME_PLAIN_MAX = 200
#: The longest display name written as one encoded word (well within a 998-octet line).
_NAME_WORD_MAX = 800
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*\Z")


def _q_char(ch: str) -> str:
    if ch in _Q_SAFE:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={b:02X}" for b in ch.encode("utf-8"))


def _q_length(text: str) -> int:
    return sum(1 if ch in _Q_SAFE or ch == " " else 3 * len(ch.encode("utf-8"))
               for ch in text)


def _b_length(n_bytes: int) -> int:
    return (n_bytes + 2) // 3 * 4


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word or len(word) > _PLAIN_MAX or not word


class _Lines:
    """Header lines being written: tokens separated by one space, folded at MAX_LINE."""

    def __init__(self, name: str) -> None:
        self.lines = [f"{name}:"]
        self.started = False  # the first token always goes on the header's first line

    @property
    def room(self) -> int:
        """Characters left on the current line after the separating space."""
        return MAX_LINE - len(self.lines[-1]) - 1

    def add(self, token: str) -> None:
        if self.started and len(token) > self.room:
            self.lines.append("")
        self.lines[-1] += " " + token
        self.started = True

    def text(self, linesep: str) -> str:
        return linesep.join(self.lines) + linesep

    def encoded(self, run: str) -> None:
        """``run`` as encoded words filling the lines; the spaces in it are encoded too."""
        use_q = _q_length(run) <= _b_length(len(run.encode("utf-8")))
        chars = iter(run)
        pending: str | None = next(chars, None)
        while pending is not None:
            first = (len(_q_char(pending)) if use_q
                     else _b_length(len(pending.encode("utf-8"))))
            if self.started and self.room < max(_OVERHEAD + first, 24):
                self.lines.append("")
            limit = max(min(EW_MAX, self.room), _OVERHEAD + first, 24) - _OVERHEAD
            taken: list[str] = []
            size = 0  # Q: encoded characters so far; B: bytes so far
            while pending is not None:
                if use_q:
                    grown = size + len(_q_char(pending))
                    fits = grown <= limit
                else:
                    grown = size + len(pending.encode("utf-8"))
                    fits = _b_length(grown) <= limit
                if taken and not fits:
                    break
                taken.append(pending)
                size = grown
                pending = next(chars, None)
            self.add(_encoded_word("".join(taken), use_q))


def _whole_word(text: str) -> str:
    """``text`` as one encoded word, in the shorter of Q and B."""
    use_q = _q_length(text) <= _b_length(len(text.encode("utf-8")))
    return _encoded_word(text, use_q)


def _encoded_word(text: str, use_q: bool) -> str:
    if use_q:
        return "=?utf-8?q?" + "".join(map(_q_char, text)) + "?="
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _runs(words: Sequence[str]) -> Iterator[tuple[bool, str]]:
    """(encode?, text) pieces: plain words one by one, encoded runs with their spaces."""
    run: list[str] = []
    for word in words:
        if _needs_encoding(word):
            run.append(word)
            continue
        if run:
            yield True, " ".join(run)
            run = []
        yield False, word
    if run:
        yield True, " ".join(run)


def _write_text(lines: _Lines, text: str) -> None:
    words = text.split(" ")
    if any(not w for w in words):  # not single-spaced: keep every space, encoded
        pieces: Iterable[tuple[bool, str]] = [(True, text)]
    else:
        pieces = _runs(words)
    for encode, piece in pieces:
        if encode:
            lines.encoded(piece)
        else:
            lines.add(piece)


def fold_unstructured(name: str, text: str, linesep: str = "\r\n") -> str:
    """``Name: text`` (folded, with its line separator) for an unstructured header."""
    lines = _Lines(name)
    if text:
        _write_text(lines, text)
    return lines.text(linesep)


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fold_addresses(name: str, mailboxes: Sequence[tuple[str, str]],
                   linesep: str = "\r\n") -> str:
    """``Name: display <addr>, ...`` for ``(display_name, addr_spec)`` pairs."""
    lines = _Lines(name)
    for i, (display, addr_spec) in enumerate(mailboxes):
        last = i == len(mailboxes) - 1
        tail = "" if last else ","
        if not display:
            lines.add(addr_spec + tail)
            continue
        plain = (display.isascii() and "=?" not in display and len(display) <= _NAME_PLAIN_MAX)
        if plain and _ATOM_PHRASE.match(display) and display == " ".join(display.split()):
            for word in display.split(" "):  # atoms: foldable between them
                lines.add(word)
        elif plain:
            lines.add(_quoted(display))
        else:
            word = _whole_word(display)
            if len(word) <= _NAME_WORD_MAX:
                lines.add(word)
            else:  # far beyond any real name: folded encoded words, as for a subject
                lines.encoded(display)
        lines.add(f"<{addr_spec}>{tail}")
    return lines.text(linesep)
