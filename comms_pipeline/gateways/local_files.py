"""Local-folder backends for emails, letters and stored documents (the embedded default).

Every file is written under a temporary name, flushed to disk (``fsync``) and renamed into
place, so a reader never sees a half-written .eml, PDF or manifest, a power cut cannot leave
a torn file under the real name, and a retried write simply replaces the earlier attempt. A
full disk or quota (ENOSPC, EDQUOT) or a read-only filesystem (EROFS) is an error the entry
waits on (STORAGE_FULL, STORAGE_READ_ONLY), never a message counted as sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from comms_pipeline.core.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from comms_pipeline.core.states import ErrorCode
from comms_pipeline.gateways.manifest import MANIFEST_NAME, build_manifest, new_batch_name
from comms_pipeline.gateways.protocols import EmailMessage, Letter, Outcome, SendResult


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` entirely, or is as it was: temp file, fsync, rename, fsync of
    the folder (so the rename itself survives a crash). The temp file goes on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a folder: not a failed write
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_STORAGE_CODES = {errno.ENOSPC: ErrorCode.STORAGE_FULL, errno.EDQUOT: ErrorCode.STORAGE_FULL,
                  errno.EROFS: ErrorCode.STORAGE_READ_ONLY}


def storage_error(exc: OSError, where: Path | str) -> GatewayError:
    """A full disk, a full quota, a read-only filesystem or a missing permission is for an
    operator to fix: the entry waits (transient) with a code that says which."""
    code = _STORAGE_CODES.get(exc.errno or 0)
    if code == ErrorCode.STORAGE_FULL:
        return TransientGatewayError(code, f"no space left to write under {where} "
                                     f"({exc.strerror or exc})")
    if code == ErrorCode.STORAGE_READ_ONLY:
        return TransientGatewayError(code, f"{where} is on a read-only filesystem")
    return TransientGatewayError(errno.errorcode.get(exc.errno or 0, "OSERROR"),
                                 exc.strerror or str(exc))


def _os_error(exc: OSError, where: Path | str = "the output folder") -> GatewayError:
    return storage_error(exc, where)


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
                results.append(_os_error(exc, self.folder))
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
            err = _os_error(exc, target)
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
            raise _os_error(exc, self.root) from None
        return str(path)

    def get(self, location: str) -> bytes:
        try:
            return Path(location).read_bytes()
        except FileNotFoundError:
            raise PermanentGatewayError("NOT_FOUND", f"{location} is not there") from None
        except OSError as exc:
            raise _os_error(exc) from None

    def delete(self, location: str) -> None:
        try:
            Path(location).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc) from None

    def close(self) -> None:
        """Nothing is held open."""
