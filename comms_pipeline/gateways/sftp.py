"""SFTP backends (paramiko): the print house letter drop and a document store.

The server's host key is pinned: it must be listed in ``known_hosts_file`` (or the user's
``~/.ssh/known_hosts`` when none is configured) and an unknown or changed key refuses the
connection — a print drop receives customers' letters, so a man in the middle must not.

One connection is kept open and reused; when the transport has died in between (server
restart, idle timeout) the operation in hand is redone once on a fresh connection. Every
paramiko, socket and SFTP error becomes a :class:`TransientGatewayError` carrying the reason:
none of them is the document's fault, so the document waits (with backoff) for an operator.
"""

from __future__ import annotations

import contextlib
import errno
import io
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import structlog

from comms_pipeline.core.errors import GatewayError, MissingExtraError, TransientGatewayError
from comms_pipeline.gateways.deadline import Watchdog
from comms_pipeline.gateways.manifest import MANIFEST_NAME, build_manifest, new_batch_name
from comms_pipeline.gateways.protocols import Letter, Outcome, SendResult

try:
    import paramiko
    from paramiko.ssh_exception import NoValidConnectionsError
except ImportError as exc:  # pragma: no cover - paramiko is part of the test extras
    raise MissingExtraError("paramiko", "sftp") from exc

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import LetterGateway, StorageGateway

log = structlog.get_logger(__name__)
T = TypeVar("T")


class UnknownHostKeyError(paramiko.SSHException):
    """The server's host key is not in known_hosts."""


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKeyError(
            f"the {key.get_name()} host key of {hostname} is not in known_hosts")


def sftp_error(exc: BaseException) -> GatewayError:
    """Translate a paramiko / socket / SFTP exception into a gateway error."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UnknownHostKeyError):
        return TransientGatewayError("HOST_KEY_UNKNOWN", str(exc))
    if isinstance(exc, paramiko.BadHostKeyException):
        return TransientGatewayError(
            "HOST_KEY_MISMATCH", f"the host key of {exc.hostname} does not match known_hosts")
    if isinstance(exc, NoValidConnectionsError) and exc.errors:
        return sftp_error(next(iter(exc.errors.values())))
    if isinstance(exc, paramiko.AuthenticationException):
        return TransientGatewayError("AUTH_FAILED", str(exc) or "authentication failed")
    if isinstance(exc, paramiko.SSHException):
        return TransientGatewayError("SSH", str(exc) or type(exc).__name__)
    if isinstance(exc, EOFError):
        return TransientGatewayError("DISCONNECTED", "the SFTP server closed the connection")
    if isinstance(exc, TimeoutError):
        return TransientGatewayError("TIMEOUT", "the SFTP server did not answer in time")
    if isinstance(exc, OSError):
        if exc.errno:
            name = errno.errorcode.get(exc.errno, "OSERROR")
            return TransientGatewayError(name, exc.strerror or str(exc))
        return TransientGatewayError("SFTP", str(exc) or type(exc).__name__)
    return TransientGatewayError("SFTP", f"{type(exc).__name__}: {exc}")


class SftpConnection:
    """One kept-open, host-key-pinned SFTP session."""

    def __init__(self, cfg: LetterGateway | StorageGateway) -> None:
        self.cfg = cfg
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _connect(self) -> paramiko.SFTPClient:
        cfg = self.cfg
        client = paramiko.SSHClient()
        try:
            if cfg.known_hosts_file:
                client.load_host_keys(cfg.known_hosts_file)
            else:
                client.load_system_host_keys()
            client.set_missing_host_key_policy(_RejectUnknownHost())
            client.connect(cfg.host, port=cfg.port, username=cfg.username or None,
                           password=cfg.password, key_filename=cfg.key_file,
                           timeout=cfg.connect_timeout, banner_timeout=cfg.timeout,
                           auth_timeout=cfg.timeout, channel_timeout=cfg.timeout,
                           look_for_keys=False, allow_agent=False)
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(cfg.timeout)  # every SFTP reply: a read timeout
        except Exception as exc:  # every failure here is mapped below
            client.close()
            err = sftp_error(exc)
            log.warning("sftp.connect_failed", where=self.where, code=err.code,
                        error=err.description)
            raise err from None
        self._client, self._sftp = client, sftp
        self._dirs.clear()
        log.info("sftp.connected", where=self.where, user=cfg.username)
        return sftp

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def call(self, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run ``operation`` on the session; redo it once on a fresh one if the link died."""
        for attempt in range(2):
            sftp = self._sftp if self._sftp is not None and self._alive() else None
            if sftp is None:
                self.close()
                sftp = self._connect()
            try:
                with Watchdog(self.cfg.total_timeout, self.close, "sftp") as dog:
                    return operation(sftp)
            except GatewayError:
                raise
            except Exception as exc:  # mapped to our errors at this boundary
                if dog.fired:
                    raise TransientGatewayError(
                        "TIMEOUT", f"the SFTP server at {self.where} took more than "
                        f"{self.cfg.total_timeout:g} s over one upload") from None
                self._dirs.clear()  # a folder removed behind our back is made again next time
                if self._alive() or attempt:
                    raise sftp_error(exc) from None
                log.warning("sftp.connection_lost", where=self.where,
                            error=type(exc).__name__)
                self.close()
        raise TransientGatewayError("DISCONNECTED", "the SFTP connection was lost")

    def makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """``mkdir -p``, remembering what exists so a batch costs no extra round trips."""
        if not path or path in ("/", ".") or path in self._dirs:
            return
        try:
            sftp.stat(path)
        except FileNotFoundError:
            self.makedirs(sftp, posixpath.dirname(path))
            try:
                sftp.mkdir(path)
            except OSError:
                sftp.stat(path)  # made by someone else meanwhile, or the real error
        self._dirs.add(path)

    @staticmethod
    def write(sftp: paramiko.SFTPClient, path: str, data: bytes) -> None:
        sftp.putfo(io.BytesIO(data), path, file_size=len(data), confirm=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None


class SftpLetterDrop:
    """Letters uploaded to ``<remote_dir>/<batch>/``; ``manifest.json`` is written last."""

    def __init__(self, cfg: LetterGateway) -> None:
        self.conn = SftpConnection(cfg)
        self.remote_dir = cfg.remote_dir.rstrip("/") or "/"

    def deliver(self, letters: Sequence[Letter]) -> list[Outcome]:
        if not letters:
            return []
        batch = new_batch_name()
        folder = posixpath.join(self.remote_dir, batch)
        manifest = build_manifest(batch, letters)

        def upload(sftp: paramiko.SFTPClient) -> None:
            self.conn.makedirs(sftp, folder)
            for letter in letters:
                self.conn.write(sftp, posixpath.join(folder, letter.name), letter.pdf)
            part = posixpath.join(folder, MANIFEST_NAME + ".part")
            self.conn.write(sftp, part, manifest)
            sftp.posix_rename(part, posixpath.join(folder, MANIFEST_NAME))

        try:
            self.conn.call(upload)
        except GatewayError as err:
            log.warning("letter.batch_failed", batch=batch, count=len(letters), code=err.code,
                        error=err.description)
            return [err] * len(letters)
        log.info("letter.batch_dropped", batch=batch, count=len(letters), where=self.conn.where)
        return [SendResult(ref=f"{batch}/{letter.name}", reply="uploaded") for letter in letters]

    def close(self) -> None:
        self.conn.close()


class SftpDocumentStore:
    """Documents kept under ``<remote_dir>/<key>``; the location is an ``sftp://`` URL."""

    backend = "sftp"

    def __init__(self, cfg: StorageGateway) -> None:
        self.conn = SftpConnection(cfg)
        self.remote_dir = cfg.remote_dir.rstrip("/") or "/"

    def put(self, key: str, data: bytes, content_type: str,
            metadata: Mapping[str, str]) -> str:
        path = posixpath.join(self.remote_dir, key)

        def upload(sftp: paramiko.SFTPClient) -> None:
            self.conn.makedirs(sftp, posixpath.dirname(path))
            self.conn.write(sftp, path, data)

        self.conn.call(upload)
        # A path relative to the login directory is written as /~/path in the URL.
        return f"sftp://{self.conn.where}{path if path.startswith('/') else '/~/' + path}"

    def get(self, location: str) -> bytes:
        path = urlsplit(location).path
        path = path[3:] if path.startswith("/~/") else path

        def download(sftp: paramiko.SFTPClient) -> bytes:
            buf = io.BytesIO()
            sftp.getfo(path, buf)
            return buf.getvalue()

        return self.conn.call(download)

    def delete(self, location: str) -> None:
        path = urlsplit(location).path
        path = path[3:] if path.startswith("/~/") else path

        def remove(sftp: paramiko.SFTPClient) -> None:
            # Removed already (a sweep that stopped before recording it) is fine.
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self.conn.call(remove)

    def close(self) -> None:
        self.conn.close()
