"""A total deadline for one gateway call, on top of the per-read timeouts.

A read timeout bounds each wait, but a peer that trickles one byte just inside it keeps a
call going for ever. :class:`Watchdog` cuts the connection (``on_expire``, from a timer
thread) once the whole call has taken ``seconds``: the blocked read then fails at once and
the adapter maps it, seeing ``fired``, to a transient TIMEOUT.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Watchdog:
    """``with Watchdog(120, cut, "smtp") as dog: ...``; ``dog.fired`` says whether it cut.

    Arming one costs a dictionary entry, not a thread: a single sentinel thread per process
    looks at every armed deadline a few times a second (a thread per call cost as much as the
    call itself on a fast peer).
    """

    def __init__(self, seconds: float, on_expire: Callable[[], None], what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.fired = False
        self.deadline = 0.0
        self._on_expire = on_expire

    def _expire(self) -> None:
        self.fired = True
        log.warning("gateway.total_timeout", gateway=self.what, seconds=self.seconds)
        try:
            self._on_expire()
        except Exception:  # the connection may be half gone already: cutting is best effort
            log.debug("gateway.cut_failed", gateway=self.what, exc_info=True)

    def __enter__(self) -> Watchdog:
        self.deadline = time.monotonic() + self.seconds
        _SENTINEL.arm(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _SENTINEL.disarm(self)


class _Sentinel:
    """The one thread that fires the process's expired watchdogs."""

    #: How often the armed deadlines are looked at (the resolution of a total timeout).
    TICK = 0.2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, Watchdog] = {}
        self._thread: threading.Thread | None = None

    def arm(self, dog: Watchdog) -> None:
        with self._lock:
            self._armed[id(dog)] = dog
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gateway-watchdog",
                                                daemon=True)
                self._thread.start()

    def disarm(self, dog: Watchdog) -> None:
        with self._lock:
            self._armed.pop(id(dog), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                due = [d for d in self._armed.values() if d.deadline <= now]
                for dog in due:
                    del self._armed[id(dog)]
            for dog in due:
                dog._expire()


_SENTINEL = _Sentinel()


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
