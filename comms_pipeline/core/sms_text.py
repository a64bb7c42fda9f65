"""SMS text: GSM-7 or UCS-2, how many parts, and where to split.

A text made only of GSM 03.38 characters travels as GSM-7: 160 septets in one message, 153
per part when concatenated (the user data header takes the rest); the extension-table
characters (``€ [ ] { } \\ ^ ~ |`` and form feed) take two septets and are never split from
their escape. Anything else needs UCS-2: 70 UTF-16 code units in one message, 67 per part, and
a character outside the Basic Multilingual Plane (an emoji) takes two units that stay together.

The media limit (SPEC: e.g. 160 characters) counts characters as the customer sees them;
:func:`check_sms` enforces it (and an optional part limit) with a readable rejection.
"""

from __future__ import annotations

from dataclasses import dataclass

from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import ErrorCode

GSM7 = "GSM-7"
UCS2 = "UCS-2"

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {GSM7: 160, UCS2: 70}
PER_PART = {GSM7: 153, UCS2: 67}


class SmsTooLong(CommsError):
    """The SMS text is longer than the limit allows."""

    code = ErrorCode.TOO_LONG


@dataclass(frozen=True)
class SmsInfo:
    encoding: str
    chars: int  # characters as the customer sees them
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    parts: int

    def __str__(self) -> str:
        return f"{self.chars} characters, {self.encoding}, {self.parts} part(s)"


_GSM_ANY = frozenset(GSM_BASIC) | frozenset(GSM_EXTENSION)
_GSM_EXT = frozenset(GSM_EXTENSION)


def encoding_of(text: str) -> str:
    return GSM7 if _GSM_ANY.issuperset(text) else UCS2


def _cost(ch: str, encoding: str) -> int:
    if encoding == GSM7:
        return 2 if ch in GSM_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def units_of(text: str, encoding: str | None = None) -> int:
    """Septets (GSM-7: extension characters count two) or UTF-16 code units (UCS-2)."""
    enc = encoding or encoding_of(text)
    if enc == GSM7:
        return len(text) + sum(text.count(ch) for ch in _GSM_EXT.intersection(text))
    return len(text.encode("utf-16-le")) // 2


def split_parts(text: str) -> tuple[str, list[str]]:
    """``(encoding, parts)``: one part when it fits, else parts of 153/67 units at most."""
    encoding = encoding_of(text)
    if units_of(text, encoding) <= SINGLE[encoding]:
        return encoding, [text]
    size = PER_PART[encoding]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        cost = _cost(ch, encoding)
        if used + cost > size:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += cost
    if current:
        parts.append("".join(current))
    return encoding, parts


def analyse(text: str) -> SmsInfo:
    encoding, parts = split_parts(text)
    return SmsInfo(encoding, len(text), units_of(text, encoding), len(parts))


def check_sms(text: str, max_chars: int, max_parts: int | None = None) -> SmsInfo:
    """The text's encoding and parts; :class:`SmsTooLong` when it breaks a limit."""
    info = analyse(text)
    if info.chars > max_chars:
        raise SmsTooLong(f"SMS text is {info.chars} characters ({info.encoding}, "
                         f"{info.parts} part(s)); the limit is {max_chars}")
    if max_parts is not None and info.parts > max_parts:
        raise SmsTooLong(f"SMS text needs {info.parts} {info.encoding} parts; the limit is "
                         f"{max_parts}")
    return info
