"""A throwaway PostgreSQL cluster of the test's own, to stop, restart and break at will.

The machine's shared server (127.0.0.1:5432) serves every other test run: a test that
restarts PostgreSQL must not touch it. :class:`PgCluster` runs ``initdb`` into a temporary
folder and ``pg_ctl`` on a free port (as the ``postgres`` OS user when run as root, which
PostgreSQL refuses), with durability switched off for speed: nothing in it outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.smtp import free_port

PG_BIN_DIRS = [Path(p) for p in sorted(
    (str(d / "bin") for d in Path("/usr/lib/postgresql").glob("*")), reverse=True)]


def pg_bin(name: str) -> str | None:
    """The newest installed server binary ``name`` (initdb, pg_ctl), else one on PATH."""
    for d in PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return shutil.which(name)


class PgCluster:
    """``initdb`` + ``pg_ctl`` on 127.0.0.1:<free port>; ``url(db)`` for SQLAlchemy."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="comms-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        # PostgreSQL cannot listen on port 0 (it must know its port for its socket file and
        # the URL), and the cluster is stopped and restarted on the same port: a port first.
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o755)

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)

    def init(self) -> PgCluster:
        self._run(pg_bin("initdb") or "initdb", "-D", str(self.data), "-U", "postgres",
                  "-A", "trust", "--no-sync", "-E", "UTF8")
        return self

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-l", str(self.log),
                  "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions are ended ("terminating connection due to administrator
        command") and new ones refused ("the database system is shutting down")."""
        self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w",
                  "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def cluster_available() -> bool:
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started throwaway cluster (its ``postgres`` database empty)."""
    from tests.conftest import require_service

    require_service(cluster_available(), "PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = PgCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
