"""A real SFTP server on loopback: asyncssh's SFTP server, in a thread, chrooted to a folder.

It has a throwaway ed25519 host key (written to a known_hosts file for the client to pin),
accepts one user by password or by public key, and can be stopped and started again on the
same port (with every open session cut, as a real restart would).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncssh
import pytest

USER = "comms"
PASSWORD = "s3cret"


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: SftpServer) -> None:
        self.owner = owner

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._connections = {c for c in self.owner._connections if not c.is_closed()}

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == (USER, PASSWORD)

    def public_key_auth_supported(self) -> bool:
        return self.owner.client_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        expected = self.owner.client_key
        return (username == USER and expected is not None
                and key.public_data == expected.public_data)


class _LoggingSFTPServer(asyncssh.SFTPServer):
    """Records the files opened and renamed, in order, so tests can check write order."""

    def __init__(self, chan: asyncssh.SSHServerChannel, owner: SftpServer) -> None:
        super().__init__(chan, chroot=str(owner.root))
        self.owner = owner

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self.owner.operations.append(("open", path.decode()))
        return super().open(path, pflags, attrs)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.owner.operations.append(("rename", newpath.decode()))
        return super().posix_rename(oldpath, newpath)


class SftpServer:
    def __init__(self, root: Path, *, with_client_key: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        # 0 until the first start() binds port 0 and keeps the kernel's choice; a restart
        # after stop() comes back on that same port (known_hosts names it).
        self.port = 0
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519") if with_client_key else None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.known_hosts: Path | None = None
        self.operations: list[tuple[str, str]] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> SftpServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._acceptor = loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="sftp-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    async def _listen(self) -> asyncssh.SSHAcceptor:
        acceptor = await asyncssh.listen(
            self.host, self.port, server_host_keys=[self.host_key],
            server_factory=lambda: _Server(self),
            sftp_factory=lambda chan: _LoggingSFTPServer(chan, self),
            allow_scp=False, login_timeout=10)
        self.port = acceptor.get_port()
        return acceptor

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return

        async def shutdown() -> None:
            if self._acceptor is not None:
                self._acceptor.close()
                await self._acceptor.wait_closed()
            for conn in list(self._connections):
                conn.abort()
            self._connections.clear()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    # -- what a client needs --------------------------------------------------------------
    def known_hosts_line(self) -> str:
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[{self.host}]:{self.port} {public[0]} {public[1]}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line())
        return path

    def write_client_key(self, path: Path) -> Path:
        assert self.client_key is not None, "start the server with with_client_key=True"
        path.write_bytes(self.client_key.export_private_key("openssh"))
        path.chmod(0o600)
        return path

    def env(self, gateway: str, known_hosts: Path, **extra: str) -> dict[str, str]:
        """``COMMS_GATEWAYS_<GATEWAY>_*`` settings that point a gateway at this server."""
        prefix = f"COMMS_GATEWAYS_{gateway.upper()}_"
        env = {prefix + "BACKEND": "sftp", prefix + "HOST": self.host,
               prefix + "PORT": str(self.port), prefix + "USERNAME": USER,
               prefix + "PASSWORD": PASSWORD, prefix + "KNOWN_HOSTS_FILE": str(known_hosts),
               prefix + "TIMEOUT": "10"}
        env.update({prefix + k.upper(): v for k, v in extra.items()})
        return env


@pytest.fixture
def sftp_server(tmp_path):
    """An SFTP server chrooted to ``tmp_path / "sftp-root"``, with its known_hosts file
    at ``server.known_hosts``."""
    server = SftpServer(tmp_path / "sftp-root").start()
    server.known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
    yield server
    server.stop()
