"""In-memory gateway fakes for unit tests and for embedding programs' own tests.

Each instance keeps its own state. A fake can be told to answer particular recipients with a
transient or a permanent failure, the way a real gateway would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from comms_pipeline.core.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.protocols import Outcome, SendResult


@dataclass
class FakeSender:
    """Implements every ``send_many`` Protocol (SMS, email, push, webhook)."""

    sent: list[Any] = field(default_factory=list)
    failures: dict[str, GatewayError] = field(default_factory=dict)
    closed: bool = False

    def fail(self, recipient: str, code: str, description: str, transient: bool = False) -> None:
        cls = TransientGatewayError if transient else PermanentGatewayError
        self.failures[recipient] = cls(code, description)

    def send_many(self, messages: Sequence[Any]) -> list[Outcome]:
        results: list[Outcome] = []
        for m in messages:
            recipient = _recipient(m)
            if recipient in self.failures:
                results.append(self.failures[recipient])
            else:
                self.sent.append(m)
                results.append(SendResult(ref=f"fake-{len(self.sent)}"))
        return results

    def close(self) -> None:
        self.closed = True


def _recipient(message: Any) -> str:
    for attr in ("to", "token", "url"):
        if hasattr(message, attr):
            return getattr(message, attr)
    return ",".join(getattr(message, "rcpt_to", ()))


@dataclass
class FakeDocumentStore:
    backend: str = "memory"
    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes, content_type: str, metadata: dict) -> str:
        self.objects[key] = data
        return f"memory://{key}"

    def get(self, location: str) -> bytes:
        return self.objects[location.removeprefix("memory://")]

    def close(self) -> None:
        """Nothing to release."""
