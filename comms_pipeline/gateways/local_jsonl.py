"""Local-folder backends: the embedded default, which needs no server at all.

Each process appends to its own file (``<media>-<pid>.jsonl``) so that any number of daemon
copies can write side by side without interleaving lines. A batch's lines are written and
fsynced whole, or not at all: a write that fails part way (a full disk) is cut back to where
the file ended before it, so no torn line is left and nothing of the batch counts as sent.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from comms_pipeline.core.clock import utcnow
from comms_pipeline.gateways.local_files import storage_error
from comms_pipeline.gateways.protocols import (
    Outcome,
    PushMessage,
    SendResult,
    SmsMessage,
    WebhookMessage,
)


class JsonLinesOutbox:
    """Appends one JSON object per message to ``<folder>/<media>-<pid>.jsonl``."""

    def __init__(self, folder: Path, media: str) -> None:
        self.folder = folder
        self.media = media
        folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.media}-{os.getpid()}.jsonl"

    def write(self, records: Sequence[dict]) -> None:
        """Append the records' lines durably; raises OSError with the file as it was."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                  for r in records).encode("utf-8"))
        start = os.fstat(self._fd).st_size
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def send(self, records: Sequence[dict], results: list[Outcome]) -> list[Outcome]:
        """``results`` when the records are written; the storage error for each otherwise."""
        try:
            self.write(records)
        except OSError as exc:
            return [storage_error(exc, self.folder)] * len(results)
        return results

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalSmsSender:
    """SMS written as JSON lines under ``var/out/sms``."""

    def __init__(self, folder: Path, source: str | None = None) -> None:
        self.outbox = JsonLinesOutbox(folder, "sms")
        #: The sender of messages that name none (the gateway's ``source_addr``).
        self.source = source

    def send_many(self, messages: Sequence[SmsMessage]) -> list[Outcome]:
        at = utcnow().isoformat()
        return self.outbox.send([{"detail_id": m.detail_id, "to": m.to,
                                  "from": m.sender or self.source,
                                  "text": m.text, "at": at} for m in messages],
                                [SendResult(ref=f"local-{m.detail_id}") for m in messages])

    def close(self) -> None:
        self.outbox.close()


class LocalPushSender:
    """Pushes written as JSON lines under ``var/out/push``."""

    def __init__(self, folder: Path) -> None:
        self.outbox = JsonLinesOutbox(folder, "push")

    def send_many(self, messages: Sequence[PushMessage]) -> list[Outcome]:
        at = utcnow().isoformat()
        return self.outbox.send([{"detail_id": m.detail_id, "token": m.token,
                                  "title": m.title, "body": m.body, "data": dict(m.data),
                                  "at": at} for m in messages],
                                [SendResult(ref=f"local-{m.detail_id}") for m in messages])

    def close(self) -> None:
        self.outbox.close()


class LocalWebhookSender:
    """Webhooks written as JSON lines under ``var/out/webhooks`` instead of being POSTed."""

    def __init__(self, folder: Path) -> None:
        self.outbox = JsonLinesOutbox(folder, "webhooks")

    def send_many(self, messages: Sequence[WebhookMessage]) -> list[Outcome]:
        return self.outbox.send([{"detail_id": m.detail_id, "url": m.url,
                                  "webhook_id": m.event_id, "payload": json.loads(m.payload)}
                                 for m in messages],
                                [SendResult(ref=m.event_id) for m in messages])

    def close(self) -> None:
        self.outbox.close()
