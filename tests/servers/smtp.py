"""A real SMTP server on loopback (aiosmtpd) that records what it receives and misbehaves on
demand: chosen recipients answered with 4xx/5xx, DATA answered with queued replies, the
connection dropped before the DATA reply, the whole server stopped and started again on the
same port. Also a self-signed certificate for STARTTLS / implicit TLS tests.

It is strict about the command sequence as Postfix is: a transaction refused at the end of
DATA keeps its sender until the client sends RSET, and a MAIL before that RSET is answered
``503 5.5.1 Error: nested MAIL command`` (aiosmtpd alone forgets the sender after any DATA
reply). After a refused RCPT aiosmtpd already keeps the sender, as Postfix does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    """A port nothing listens on now, for a test that needs a port before (or without) a
    server: a dead address to connect to, or a server that can only be told its port. A
    server that can bind port 0 itself does so instead (no bind-close-reuse race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    queue_id: str
    peer: tuple = ()
    #: When the message was taken (``time.monotonic()``), for rate checks.
    at: float = 0.0

    @property
    def message_id(self) -> str | None:
        return BytesHeaderParser().parsebytes(self.data).get("Message-ID")

    def message(self):  # type: ignore[no-untyped-def]
        return message_from_bytes(self.data)


class RecordingHandler:
    """Keeps every accepted message; fault switches are plain attributes set by tests."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}   # recipient -> reply (e.g. "550 5.1.1 no")
        self.data_replies: deque[str] = deque()  # next DATA replies, instead of accepting
        self.data_reply_for: dict[str, str] = {}  # recipient -> end-of-DATA reply (refusal)
        self.mail_replies: deque[str | None] = deque()  # next MAIL replies (None: accept)
        self.drop_before_data_reply = 0          # abort the connection this many times
        self.drop_after_taking = 0               # take the message, then abort: reply lost
        self.logins: list[str] = []
        #: Postfix's sequence rule (see the module docstring); ``False`` = aiosmtpd's leniency.
        self.strict = True
        self.pipelining = False                  # offer PIPELINING (RFC 2920) in EHLO
        self.nested_mail = 0                     # MAIL commands answered 503 (nested)
        self.resets = 0                          # RSET commands received
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.strict and getattr(session, "refused_sender", None):
            self.nested_mail += 1
            return "503 5.5.1 Error: nested MAIL command"
        reply = self.mail_replies.popleft() if self.mail_replies else None
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RSET(self, server, session, envelope):
        session.refused_sender = None
        self.resets += 1
        return "250 2.0.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.drop_before_data_reply > 0:
            self.drop_before_data_reply -= 1
            server.transport.abort()
            return "451 4.3.0 never seen by the client"
        reply = next((self.data_reply_for[r] for r in envelope.rcpt_tos
                      if r in self.data_reply_for), None)
        if reply is None and self.data_replies:
            reply = self.data_replies.popleft()
        if reply is not None:
            if not reply.startswith("2"):
                session.refused_sender = envelope.mail_from  # until RSET, as Postfix does
            return reply
        queue_id = f"Q{next(self._ids):06d}"
        with self._lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          bytes(envelope.original_content or envelope.content),
                                          queue_id, tuple(session.peer or ()),
                                          time.monotonic()))
        if self.drop_after_taking > 0:
            self.drop_after_taking -= 1
            server.transport.abort()
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode()
        ok = (login, auth_data.password.decode()) == ("comms", "s3cret")
        if ok:
            self.logins.append(login)
        return AuthResult(success=ok, handled=False)

    def message_ids(self) -> list[str | None]:
        with self._lock:
            return [m.message_id for m in self.messages]


class _TrackingController(Controller):
    """A Controller that can drop its live sessions, so that "stopped" really means gone."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: weakref.WeakSet = weakref.WeakSet()

    def _trigger_server(self):  # type: ignore[no-untyped-def]
        # Bound to port 0: learn the kernel's choice before aiosmtpd connects to check itself.
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        return super()._trigger_server()

    def factory(self):  # type: ignore[no-untyped-def]
        smtp = super().factory()
        self.sessions.add(smtp)
        return smtp

    def drop_sessions(self, graceful: bool = False) -> None:
        """Cut every live session: ``abort`` (a reset: replies in flight may be lost) or,
        ``graceful``, close after the replies already written have gone out (a shutdown)."""
        done = threading.Event()

        def _cut() -> None:
            for session in list(self.sessions):
                if session.transport is not None:
                    if graceful:
                        session.transport.close()
                    else:
                        session.transport.abort()
            done.set()

        self.loop.call_soon_threadsafe(_cut)
        done.wait(5)


class SmtpServer:
    """aiosmtpd on 127.0.0.1; ``stop()`` then ``start()`` comes back on the same port.

    The first ``start()`` binds port 0 and keeps the port the kernel chose (``port`` is 0
    until then), so later starts rebind the port this server itself held."""

    def __init__(self, handler: RecordingHandler | None = None, *,
                 tls_context: ssl.SSLContext | None = None,
                 ssl_context: ssl.SSLContext | None = None, auth: bool = False) -> None:
        self.handler = handler or RecordingHandler()
        self.host = "127.0.0.1"
        self.port = 0
        self.tls_context = tls_context
        self.ssl_context = ssl_context
        self.auth = auth
        self._controller: _TrackingController | None = None

    def _build(self) -> _TrackingController:
        params: dict = {"hostname": self.host, "port": self.port, "ready_timeout": 10}
        if self.ssl_context is not None:
            params["ssl_context"] = self.ssl_context
        if self.tls_context is not None:
            params.update(tls_context=self.tls_context, require_starttls=True)
        if self.auth:
            # aiosmtpd only knows about STARTTLS sessions (not implicit TLS), and it warns
            # when AUTH is required without TLS: so require AUTH only behind STARTTLS.
            starttls = self.tls_context is not None
            params.update(authenticator=self.handler.authenticate, auth_required=starttls,
                          auth_require_tls=starttls)
        return _TrackingController(self.handler, **params)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpServer:
        if self._controller is None:
            self._controller = self._build()
            self._controller.start()
            self.port = self._controller.port
        return self

    def stop(self) -> None:
        """Shut down as a server does: no reply already written is lost on the way."""
        if self._controller is not None:
            self._controller.drop_sessions(graceful=True)
            self._controller.stop()
            self._controller = None

    def drop_sessions(self) -> None:
        """Cut every open connection (as an idle timeout or a restart would)."""
        if self._controller is not None:
            self._controller.drop_sessions()

    @property
    def messages(self) -> list[Received]:
        return list(self.handler.messages)

    def env(self, **extra: str) -> dict[str, str]:
        """``COMMS_*`` settings that point the email gateway at this server (once started)."""
        assert self.port, "start() the server first: it binds port 0 and learns its port"
        env = {"COMMS_GATEWAYS_EMAIL_BACKEND": "smtp",
               "COMMS_GATEWAYS_EMAIL_HOST": self.host,
               "COMMS_GATEWAYS_EMAIL_PORT": str(self.port),
               "COMMS_GATEWAYS_EMAIL_TIMEOUT": "10"}
        env.update(extra)
        return env


def self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 / localhost; returns (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def smtp_server():
    """A recording SMTP server (no TLS, no AUTH) on a free loopback port."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))
