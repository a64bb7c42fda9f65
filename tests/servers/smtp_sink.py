"""Postfix's ``smtp-sink`` (a fast C SMTP server that throws mail away) on a loopback port.

Debian's ``postfix`` package ships it (``.ci/services`` installs it; the package's own daemon
is not started there). It refuses whole commands on demand (``-r`` soft, ``-f`` hard: e.g.
``"."`` for the end of DATA), which is how the tests and the email benchmark use it: a real
server nobody on the project wrote, and one fast enough that the client is the limit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from tests.servers.smtp import free_port

PATH_FALLBACK = "/usr/sbin/smtp-sink"


def smtp_sink_path() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return PATH_FALLBACK if os.access(PATH_FALLBACK, os.X_OK) else None


class SmtpSink:
    """``smtp-sink [options] 127.0.0.1:<free port>``; ``stop()`` ends it."""

    def __init__(self, *options: str, backlog: int = 64) -> None:
        path = smtp_sink_path()
        if path is None:
            raise FileNotFoundError("smtp-sink (Debian package postfix) is not installed")
        self.host = "127.0.0.1"
        # Postfix's smtp-sink takes its address on the command line and does not report a
        # port it was given as 0, so this is the one server here that needs a port first.
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        self.proc = subprocess.Popen([path, *user, *options, f"{self.host}:{self.port}",
                                      str(backlog)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10  # liveness only
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {self.proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"smtp-sink did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def env(self, **extra: str) -> dict[str, str]:
        """``COMMS_*`` settings that point the email gateway at this sink."""
        return {"COMMS_GATEWAYS_EMAIL_BACKEND": "smtp", "COMMS_GATEWAYS_EMAIL_HOST": self.host,
                "COMMS_GATEWAYS_EMAIL_PORT": str(self.port),
                "COMMS_GATEWAYS_EMAIL_TIMEOUT": "10", **extra}
