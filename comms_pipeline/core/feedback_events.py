"""What came back after a send: a bounce or a complaint, however it arrived.

One value for every source (a DSN or an ARF report at the bounce receiver, a provider's
webhook), so that one function (:func:`comms_pipeline.pipeline.feedback.handle_feedback`)
decides what each does to its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

FeedbackKind = Literal["hard_bounce", "soft_bounce", "complaint"]
KINDS: tuple[FeedbackKind, ...] = ("hard_bounce", "soft_bounce", "complaint")


@dataclass(frozen=True)
class FeedbackEvent:
    """One recipient's bounce or complaint.

    ``detail_id`` is known when the report came back to a signed VERP address;
    ``message_id`` is the original's Message-ID from the returned headers (the fallback).
    ``status`` is the RFC 3463 enhanced status code (``5.1.1``), ``diagnostic`` the remote
    MTA's words (``smtp; 550 5.1.1 … User unknown``); a complaint has the feedback type.
    """

    kind: FeedbackKind
    detail_id: int | None
    message_id: str | None
    recipient: str | None
    status: str | None
    diagnostic: str | None
    source: str
    received_at: datetime
