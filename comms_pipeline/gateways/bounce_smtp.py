"""The bounce receiver's SMTP server (aiosmtpd): takes mail for the bounce domain only.

Remote MTAs deliver their DSNs and feedback reports here, to the VERP address they were sent
from. ``RCPT`` to any other domain is refused ``550 5.7.1`` (this is not a relay), a message
over the size limit ``552``. Each accepted message is handed to ``on_message`` in a worker
thread (the database is synchronous); its reply is the reply to DATA: ``250`` once the report
is stored (read or not), ``451`` when it could not be stored, so the remote MTA tries again.
Nothing a sender does ends the server: an error in ``on_message`` becomes that ``451``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from comms_pipeline.core.errors import GatewayConfigError, MissingExtraError

log = structlog.get_logger(__name__)

#: ``on_message(mail_from, rcpt_tos, data) -> SMTP reply`` (e.g. ``"250 2.0.0 OK"``).
OnMessage = Callable[[str, list[str], bytes], str]
TRY_LATER = "451 4.3.0 the report could not be stored; try again later"


class _Handler:
    def __init__(self, accepts: Callable[[str], bool], on_message: OnMessage,
                 pool: ThreadPoolExecutor) -> None:
        self.accepts = accepts
        self.on_message = on_message
        self.pool = pool

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if not self.accepts(address):
            return "550 5.7.1 relaying denied: this server takes bounces for its domain only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self.on_message,
                                              envelope.mail_from or "",
                                              list(envelope.rcpt_tos), data)
        except Exception as exc:
            log.warning("bounces.store_failed", error=type(exc).__name__)
            return TRY_LATER


class BounceSmtpServer:
    """An aiosmtpd server in its own thread; :meth:`start`, :attr:`port`, :meth:`stop`."""

    def __init__(self, host: str, port: int, accepts: Callable[[str], bool],
                 on_message: OnMessage, *, max_bytes: int = 1_048_576, workers: int = 4,
                 server_hostname: str | None = None) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - aiosmtpd is in the bounces extra
            raise MissingExtraError("aiosmtpd", "bounces") from exc
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="bounces")
        handler = _Handler(accepts, on_message, self.pool)

        class _Controller(Controller):
            def _trigger_server(self) -> Any:  # bound to port 0: learn the kernel's choice
                if self.port == 0 and self.server is not None:
                    self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
                return super()._trigger_server()

        self._controller = _Controller(handler, hostname=host, port=port,
                                       data_size_limit=max_bytes, decode_data=False,
                                       server_hostname=server_hostname,
                                       ident="comms-pipeline bounce receiver")

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def host(self) -> str:
        return str(self._controller.hostname)

    def start(self) -> None:
        try:
            self._controller.start()
        except OSError as exc:  # the port is taken (another copy?) or not ours to bind
            self.pool.shutdown(wait=False)
            where = f"{self._controller.hostname}:{self._controller.port}"
            raise GatewayConfigError(f"bounces.listen_host/listen_port: cannot listen on "
                                     f"{where} ({exc.strerror or exc}); free the port or set "
                                     f"another") from None

    def stop(self) -> None:
        try:
            self._controller.stop()
        finally:
            self.pool.shutdown(wait=True)
