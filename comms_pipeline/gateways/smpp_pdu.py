"""SMPP v3.4 wire details for :mod:`.smpp`: text encoding, status names, the hot PDUs.

Every PDU goes through smpplib except the two that carry the traffic: ``submit_sm`` is packed
and ``submit_sm_resp`` unpacked here with ``struct``, because smpplib's generic field walker
costs tens of microseconds a PDU, which is the whole budget of a windowed sender. The unit
tests check these bytes against smpplib's own encoding of the same fields.
"""

from __future__ import annotations

import struct
from typing import Any

from comms_pipeline.core.errors import (
    GatewayError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)
from comms_pipeline.core.sms_text import GSM7, split_parts

try:
    from smpplib import consts as _consts
    from smpplib import smpp as _smpp
except ImportError:  # pragma: no cover - exercised only without the extra
    _consts = _smpp = None

THROTTLED = frozenset({0x58, 0x14})  # ESME_RTHROTTLED, ESME_RMSGQFUL
TRANSIENT = frozenset({0x08})  # ESME_RSYSERR: the SMSC's own failure, worth another try
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
ESM_UDHI = 0x40
HEADER = struct.Struct(">IIII")
MAX_PDU = 65536

GSM_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
             "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
           "]": 0x3E, "|": 0x40, "€": 0x65}
_GSM_TABLE = {ord(ch): chr(i) for i, ch in enumerate(GSM_BASIC) if ch != "\x1b"}
_GSM_TABLE.update({ord(ch): "\x1b" + chr(code) for ch, code in GSM_EXT.items()})


def require_smpplib() -> Any:
    if _smpp is None:
        raise MissingExtraError("smpplib", "smpp")
    return _smpp


# -- status --------------------------------------------------------------------------------
def status_name(status: int) -> str:
    require_smpplib()
    for key, value in vars(_consts).items():
        if key.startswith("SMPP_ESME_") and value == status:
            return key[len("SMPP_"):]
    return "UNKNOWN"


def status_error(status: int) -> GatewayError:
    """The command_status as our exception: code ``0x0000000B``, text ``ESME_RINVDSTADR ...``."""
    text = f"{status_name(status)}: {_consts.DESCRIPTIONS.get(status, 'unknown status')}"
    cls = TransientGatewayError if status in THROTTLED | TRANSIENT else PermanentGatewayError
    return cls(f"0x{status:08X}", text)


# -- text ----------------------------------------------------------------------------------
class _NotGsm(Exception):
    pass


class _Strict(dict):
    # str.translate leaves a character alone on LookupError: raise something else.
    def __missing__(self, key: int) -> str:
        raise _NotGsm(key)


_GSM = _Strict(_GSM_TABLE)


def gsm_encode(text: str) -> bytes | None:
    """GSM 03.38 default alphabet, one septet per octet (unpacked); None if not encodable."""
    try:
        return text.translate(_GSM).encode("latin-1")
    except _NotGsm:
        return None


def _ucs2_parts(text: str) -> list[bytes]:
    """UCS-2 parts of 67 units at most, a surrogate pair never split across two."""
    parts, cur = [], b""
    for ch in text:
        unit = ch.encode("utf-16-be")
        if len(cur) + len(unit) > 134:
            parts.append(cur)
            cur = b""
        cur += unit
    return [*parts, cur]


def encode_text(text: str) -> tuple[int, list[bytes]]:
    """(data_coding, part payloads without UDH): GSM-7 (0) when possible, else UCS-2 (8).

    Where to split is :func:`comms_pipeline.core.sms_text.split_parts`'s decision (the same one the
    Comms Monitor counted parts with): 160 GSM septets or 70 UCS-2 units in one message,
    153 / 67 per concatenated part, escapes and surrogate pairs kept whole.
    """
    gsm = gsm_encode(text)
    if gsm is not None and len(gsm) <= 160:
        return 0, [gsm]
    encoding, parts = split_parts(text)
    if encoding == GSM7:
        encoded = [gsm_encode(p) for p in parts]
        if all(e is not None for e in encoded):
            return 0, [e for e in encoded if e is not None]
    elif len(parts) == 1:
        return 8, [text.encode("utf-16-be")]
    return 8, _ucs2_parts(text)


# -- the hot PDUs --------------------------------------------------------------------------
def _cstr(value: str, limit: int) -> bytes:
    return value.encode("latin-1", "replace")[:limit - 1] + b"\x00"


def submit_sm_body(f: dict[str, Any]) -> bytes:
    """The body of a submit_sm (SMPP v3.4 section 4.4.1), without optional parameters."""
    message = f["short_message"]
    return b"".join((
        _cstr(f.get("service_type", ""), 6),
        bytes((f["source_addr_ton"], f["source_addr_npi"])), _cstr(f["source_addr"], 21),
        bytes((f["dest_addr_ton"], f["dest_addr_npi"])), _cstr(f["destination_addr"], 21),
        bytes((f.get("esm_class", 0), 0, 0)), b"\x00\x00",  # protocol_id, priority; times
        bytes((f.get("registered_delivery", 0), 0, f.get("data_coding", 0), 0, len(message))),
        message,
    ))


def submit_sm(sequence: int, body: bytes) -> bytes:
    return HEADER.pack(16 + len(body), SUBMIT_SM, 0, sequence) + body


def submit_sm_resp(raw: bytes) -> tuple[int, int, str]:
    """(status, sequence, message_id) of a submit_sm_resp."""
    _, _, status, sequence = HEADER.unpack_from(raw)
    message_id = raw[16:].split(b"\x00", 1)[0].decode("ascii", "replace")
    return status, sequence, message_id


def command_id(raw: bytes) -> int:
    return int.from_bytes(raw[4:8], "big")


def split_frames(buf: bytearray) -> list[bytes]:
    """Take every complete PDU off the front of ``buf``."""
    frames = []
    while len(buf) >= 16:
        length = int.from_bytes(buf[:4], "big")
        if length < 16 or length > MAX_PDU:
            raise ValueError(f"malformed PDU length {length}")
        if len(buf) < length:
            break
        frames.append(bytes(buf[:length]))
        del buf[:length]
    return frames
