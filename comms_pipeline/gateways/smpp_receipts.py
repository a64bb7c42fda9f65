"""SMPP delivery receipts as the SMSC sends them (a ``deliver_sm``): parsed into a value.

The gateway reads them off the link; matching them to queue entries and recording what they
say is the pipeline's (:mod:`comms_pipeline.pipeline.receipts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from comms_pipeline.core.clock import utcnow

#: SMPP v3.4 message_state TLV values, as the ``stat:`` words of the receipt text.
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
FAILED = frozenset({"EXPIRED", "DELETED", "UNDELIV", "REJECTD"})
_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err|text):(\S*)", re.IGNORECASE)


@dataclass(frozen=True)
class Receipt:
    message_id: str
    stat: str
    err: str | None = None
    done_date: str | None = None
    received_at: datetime = field(default_factory=utcnow, compare=False)
    #: Its row in ``sms_receipts`` once stored.
    row_id: int | None = field(default=None, compare=False)


def parse_receipt(short_message: bytes | str | None,
                  receipted_message_id: bytes | str | None = None,
                  message_state: int | None = None) -> Receipt | None:
    """A receipt from a deliver_sm's text (``id:... stat:... err:...``) and its TLVs.

    The TLVs, when present, win over the text: they are typed, the text is free-form.
    """
    text = _text(short_message)
    fields = {k.lower(): v for k, v in _FIELD.findall(text)}
    message_id = _text(receipted_message_id).strip("\x00 ") or fields.get("id", "")
    stat = MESSAGE_STATES.get(message_state or 0) or fields.get("stat", "").upper()
    if not message_id or not stat:
        return None
    return Receipt(message_id, stat, fields.get("err"), fields.get("done date"))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value
