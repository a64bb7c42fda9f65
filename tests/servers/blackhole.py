"""A "black hole" on loopback: it accepts TCP connections and then never says a word.

The classic hung peer (a frozen server, a firewall that swallows packets after the
handshake, a load balancer with no backend): the client's connect succeeds, and every read
waits. What the peer is sent is read and thrown away, so the client's writes never block
either: only its read (and total) timeouts can get it out.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

import pytest


class BlackHole:
    """``with BlackHole() as hole: ... hole.port``; ``accepted`` counts connections.

    ``trickle``: bytes written to every connection every tenth of a second instead of
    silence: a peer that keeps each read alive and never finishes an answer (only a total
    timeout ends it)."""

    def __init__(self, trickle: bytes | None = None) -> None:
        self.trickle = trickle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="black-hole", daemon=True)

    def start(self) -> BlackHole:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener, *self._conns], [], [], 0.1)
            if self.trickle:
                for conn in self._conns:
                    with contextlib.suppress(OSError):
                        conn.send(self.trickle)
            for sock in ready:
                if sock is self._listener:
                    conn, _ = self._listener.accept()
                    self._conns.append(conn)
                    self.accepted += 1
                    continue
                try:
                    data = sock.recv(65536)  # swallowed
                except OSError:
                    data = b""
                if not data:
                    self._conns.remove(sock)
                    sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._listener.close()

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole
