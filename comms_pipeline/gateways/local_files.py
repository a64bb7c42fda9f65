"""Local-folder backends for emails, letters and stored documents (the embedded default).

Every file is written under a temporary name and renamed into place, so a reader never sees a
half-written .eml, PDF or manifest, and a retried write simply replaces the earlier attempt.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from comms_pipeline.core.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.manifest import MANIFEST_NAME, build_manifest, new_batch_name
from comms_pipeline.gateways.protocols import EmailMessage, Letter, Outcome, SendResult


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _os_error(exc: OSError) -> GatewayError:
    """A full disk or a missing permission is for an operator to fix: retry later."""
    return TransientGatewayError(errno.errorcode.get(exc.errno or 0, "OSERROR"),
                                 exc.strerror or str(exc))


class LocalEmailSender:
    """Emails saved as ``<folder>/<detail id>.eml`` instead of being sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send_many(self, messages: Sequence[EmailMessage]) -> list[Outcome]:
        results: list[Outcome] = []
        for m in messages:
            path = self.folder / f"{m.detail_id}.eml"
            try:
                write_atomically(path, m.data)
            except OSError as exc:
                results.append(_os_error(exc))
                continue
            results.append(SendResult(ref=f"local-{m.detail_id}", reply=f"saved {path.name}"))
        return results

    def close(self) -> None:
        """Nothing is held open."""


class LocalLetterDrop:
    """Letters dropped as ``<folder>/<batch>/<name>.pdf`` with the manifest written last."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def deliver(self, letters: Sequence[Letter]) -> list[Outcome]:
        if not letters:
            return []
        batch = new_batch_name()
        target = self.folder / batch
        try:
            for letter in letters:
                write_atomically(target / letter.name, letter.pdf)
            write_atomically(target / MANIFEST_NAME, build_manifest(batch, letters))
        except OSError as exc:
            err = _os_error(exc)
            return [err] * len(letters)
        return [SendResult(ref=f"{batch}/{letter.name}", reply="dropped") for letter in letters]

    def close(self) -> None:
        """Nothing is held open."""


class LocalDocumentStore:
    """Documents kept under ``<root>/<key>``; the location is the file's absolute path."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put(self, key: str, data: bytes, content_type: str,
            metadata: Mapping[str, str]) -> str:
        path = self.root / key
        try:
            write_atomically(path, data)
        except OSError as exc:
            raise _os_error(exc) from None
        return str(path)

    def get(self, location: str) -> bytes:
        try:
            return Path(location).read_bytes()
        except FileNotFoundError:
            raise PermanentGatewayError("NOT_FOUND", f"{location} is not there") from None
        except OSError as exc:
            raise _os_error(exc) from None

    def close(self) -> None:
        """Nothing is held open."""
