"""A real Postfix instance on loopback, in a temporary configuration directory.

Debian's ``postfix`` package (installed by ``.ci/services`` for smtp-sink; its own instance
is never configured or started) runs a second, private instance: ``postfix -c DIR start``
with a main.cf that listens on one loopback port, relays one domain to a given port and
sends everything for another domain (the bounces) to a second port -- no DNS, no local
delivery, a queue that retries within seconds. ``stop()`` runs ``postfix -c DIR stop``
(this instance only). Postfix's daemons need root to start (they drop to the ``postfix``
user), so the fixture is skipped when not run as root outside CI.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers.smtp import free_port

POSTFIX = "/usr/sbin/postfix"


def postfix_usable() -> bool:
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return os.geteuid() == 0 and os.access(POSTFIX, os.X_OK) and \
        Path("/etc/postfix/master.cf").exists()


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domain}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = inline:{{ {relay_domain}=smtp:[127.0.0.1]:{relay_port}, \
{bounce_domain}=smtp:[127.0.0.1]:{bounce_port} }}
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
smtp_connection_cache_on_demand = no
notify_classes =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
"""


class PostfixInstance:
    """``start()``; :attr:`port` takes mail; ``stop()``; :meth:`log` is its maillog."""

    def __init__(self, relay_domain: str, relay_port: int, bounce_domain: str,
                 bounce_port: int) -> None:
        # Not pytest's tmp_path: Postfix's daemons (user postfix) must reach the queue.
        self.dir = Path(tempfile.mkdtemp(prefix="comms-postfix-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.port = free_port()
        conf = self.dir / "conf"
        conf.mkdir()
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix")
        (conf / "main.cf").write_text(MAIN_CF.format(
            dir=self.dir, relay_domain=relay_domain, relay_port=relay_port,
            bounce_domain=bounce_domain, bounce_port=bounce_port))
        master = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if fields[:2] == ["smtp", "inet"]:
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif len(fields) >= 5 and not line.startswith(("#", " ")) and fields[4] == "y":
                fields[4] = "n"  # no chroot: the instance lives in a temporary folder
                line = " ".join(fields)
            master.append(line)
        (conf / "master.cf").write_text("\n".join(master) + "\n")
        self.conf = conf

    def _postfix(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.conf), command], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> PostfixInstance:
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr.strip()} {self.log()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postfix did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pidfile = self.dir / "queue" / "pid" / "master.pid"
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        self._postfix("stop")
        deadline = time.monotonic() + 20
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)  # this instance's master: gone once it has stopped
            except ProcessLookupError:
                break
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
