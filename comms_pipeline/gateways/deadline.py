"""A total deadline for one gateway call, on top of the per-read timeouts.

A read timeout bounds each wait, but a peer that trickles one byte just inside it keeps a
call going for ever. :class:`Watchdog` cuts the connection (``on_expire``, from a timer
thread) once the whole call has taken ``seconds``: the blocked read then fails at once and
the adapter maps it, seeing ``fired``, to a transient TIMEOUT.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Watchdog:
    """``with Watchdog(120, cut, "smtp") as dog: ...``; ``dog.fired`` says whether it cut."""

    def __init__(self, seconds: float, on_expire: Callable[[], None], what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.fired = False
        self._on_expire = on_expire
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.fired = True
        log.warning("gateway.total_timeout", gateway=self.what, seconds=self.seconds)
        try:
            self._on_expire()
        except Exception:  # the connection may be half gone already: cutting is best effort
            log.debug("gateway.cut_failed", gateway=self.what, exc_info=True)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def shutdown_socket(sock: object) -> None:
    """Make every blocked read and write on ``sock`` return (an error) at once."""
    import socket

    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def http_timeout(httpx, cfg):
    """httpx's timeouts from a gateway's settings: ``connect_timeout`` for the connection,
    ``timeout`` for each read, write and wait for a pooled connection."""
    return httpx.Timeout(cfg.timeout, connect=cfg.connect_timeout)
