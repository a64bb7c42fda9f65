"""The Web API served by uvicorn on a loopback port, in a thread of the test process.

uvicorn binds port 0 itself and the fixture reads the port the kernel gave it from the
listening socket, so no port is chosen by bind-close-reuse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

WAIT = 20


class ServedApp:
    """A uvicorn server running ``app`` on 127.0.0.1 with a port of the kernel's choosing."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + WAIT  # a safety net against hanging, not a timing check
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)


@pytest.fixture
def served(sqlite_url, tmp_path) -> Iterator[tuple[str, Any]]:
    """The Web API on a loopback port: yields (base URL, engine)."""
    from comms_pipeline.store.db import make_engine
    from comms_pipeline.web.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(sqlite_url, tmp_path / "var")
    engine = make_engine(settings.database_url)
    app = ServedApp(create_app(settings, engine)).start()
    yield app.base, engine
    app.stop()
    engine.dispose()
