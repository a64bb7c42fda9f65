"""One Protocol per delivery capability; each backend module implements one of them.

Every sender takes a batch and answers, in order, one :class:`SendResult` or one
:class:`~comms_pipeline.core.errors.GatewayError` per message, so that windowed protocols (SMPP)
and pooled connections (SMTP) can overlap work while simple backends loop. Backends raise
only the project's own exceptions: library errors are translated at this boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from comms_pipeline.core.errors import GatewayError


@dataclass(frozen=True)
class SendResult:
    """The gateway accepted the message: its reference (queue id, message_id) and reply."""

    ref: str | None = None
    reply: str | None = None
    #: Every part's id in full, in part order (SMPP: receipts are matched through them).
    parts: tuple[str, ...] = ()


Outcome = SendResult | GatewayError


@dataclass(frozen=True)
class SmsMessage:
    detail_id: int
    to: str
    text: str
    sender: str | None = None


@dataclass(frozen=True)
class EmailMessage:
    detail_id: int
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class PushMessage:
    detail_id: int
    token: str
    title: str | None
    body: str
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookMessage:
    detail_id: int
    url: str
    secret: str
    event_id: str
    payload: bytes


@dataclass(frozen=True)
class Letter:
    detail_id: int
    name: str
    pdf: bytes


@runtime_checkable
class SmsSender(Protocol):
    """Sends SMS through an SMSC or an SMS gateway."""

    def send_many(self, messages: Sequence[SmsMessage]) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class EmailSender(Protocol):
    """Sends prebuilt RFC 5322 messages."""

    def send_many(self, messages: Sequence[EmailMessage]) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class PushSender(Protocol):
    """Sends push notifications to device tokens."""

    def send_many(self, messages: Sequence[PushMessage]) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class WebhookSender(Protocol):
    """Delivers signed webhooks to external systems."""

    def send_many(self, messages: Sequence[WebhookMessage]) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class LetterDrop(Protocol):
    """Delivers letter PDFs to a print house, with a manifest per batch."""

    def deliver(self, letters: Sequence[Letter]) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class DocumentStore(Protocol):
    """Keeps documents for the long term and gives them back to agents."""

    backend: str

    def put(self, key: str, data: bytes, content_type: str,
            metadata: Mapping[str, str]) -> str: ...

    def get(self, location: str) -> bytes: ...

    def delete(self, location: str) -> None:
        """Remove the copy at ``location``; one already gone is not an error."""
        ...

    def close(self) -> None: ...
