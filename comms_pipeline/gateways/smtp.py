"""SMTP email backend: kept-open connections, a pool of parallel lanes, a rate limit.

Opening an SMTP session costs several round trips (TCP, EHLO, STARTTLS, AUTH), so each *lane*
owns one connection and keeps it open across messages and batches; ``connections`` lanes send
side by side, each in its own thread, and all of them share one messages-per-second limit.

The server's replies decide each message's fate: 2xx is accepted (the reply, usually with the
server's queue id, is kept as the gateway reference), 4xx is transient (retried later with
backoff by the claim mechanism), 5xx is permanent (Rejected with the reply code and text),
except ``503`` (bad sequence of commands): that is the client's protocol state, never a verdict
on the message, so the session is dropped and the message sent once more on a fresh one (and
retried later if that fails too). Every refused transaction -- at MAIL, RCPT or the end of
DATA -- is ended with ``RSET`` before the next ``MAIL FROM`` on the same connection, as
``smtplib.sendmail`` does: Postfix keeps a refused transaction's sender until then and answers
the next MAIL ``503 5.5.1 Error: nested MAIL command``. On a server that offers PIPELINING
(RFC 2920), a message's envelope goes out in one write, and its content in one write with
``RSET`` and the next message's envelope behind it: a run of messages costs one write and one
wait for the server each, and within such a run RSET ends every transaction, refused or not,
before the next MAIL.
The reply to DATA decides whether the server took the message: when the connection drops
before that reply has been read, the message in hand is sent once more on a fresh connection
(the server had not confirmed it; SMTP leaves no way to ask), and once the reply has been read
the message is never sent again. A drop after the whole message went out but before its reply
came back is the one case SMTP cannot settle (RFC 5321 section 6.1, RFC 1047): the server may
have taken it. Delivery is then at-least-once, as with every MTA: the copy sent again carries
the same Message-ID, so the receiver can collapse it, and ``email.reply_lost`` is logged.

smtplib, ssl and socket errors never leave this module: they
become :class:`TransientGatewayError` or :class:`PermanentGatewayError`.
"""

from __future__ import annotations

import contextlib
import errno
import re
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.errors import (
    GatewayConfigError,
    GatewayError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)
from comms_pipeline.gateways.deadline import Watchdog, shutdown_socket
from comms_pipeline.gateways.protocols import EmailMessage, Outcome, SendResult
from comms_pipeline.gateways.rate import RateGate

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from comms_pipeline.settings.gateways import EmailGateway

log = structlog.get_logger(__name__)

_QUEUE_ID = re.compile(r"(?:queued as|id=|queue id)\s*:?\s*([A-Za-z0-9._@<>/+-]+)", re.I)
REF_MAX = 128
STATUS_MAX = 64


# -- classification ------------------------------------------------------------------------
def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(value.split())


#: "Bad sequence of commands": the client's session state is wrong, the message is not at fault.
BAD_SEQUENCE = 503


def reply_error(code: int, text: bytes | str | None) -> GatewayError:
    """An SMTP reply that is not success: 5xx is permanent (but 503), anything else retried."""
    permanent = 500 <= code <= 599 and code != BAD_SEQUENCE
    cls = PermanentGatewayError if permanent else TransientGatewayError
    return cls(str(code), _text(text) or "no reply text")


def error_from_exception(exc: BaseException) -> GatewayError:
    """Translate a smtplib / ssl / socket exception into the project's gateway errors."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, text = next(iter(exc.recipients.values()))
        return reply_error(code, text)
    if isinstance(exc, smtplib.SMTPResponseException):
        return reply_error(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):  # smtplib's word for a read timeout
            return TransientGatewayError("TIMEOUT", "the SMTP server did not answer in time")
        return TransientGatewayError("DISCONNECTED", _text(str(exc)) or "connection closed")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return TransientGatewayError("NOT_SUPPORTED", _text(str(exc)))
    if isinstance(exc, smtplib.SMTPException):
        return TransientGatewayError("SMTP", _text(str(exc)) or type(exc).__name__)
    if isinstance(exc, ssl.SSLError):
        return TransientGatewayError("TLS", _text(getattr(exc, "reason", None) or str(exc)))
    if isinstance(exc, TimeoutError):
        return TransientGatewayError("TIMEOUT", "the SMTP server did not answer in time")
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "NETWORK")
        return TransientGatewayError(name, _text(exc.strerror or str(exc)) or name)
    return TransientGatewayError("SMTP", f"{type(exc).__name__}: {_text(str(exc))}")


def setup_error(exc: BaseException) -> GatewayError:
    """A failure while opening the session (connect, TLS, AUTH) is the server's, not the
    message's: always transient, so that messages are retried with backoff while the operator
    fixes it (``claims.max_attempts`` and the backoff: about three hours by default)."""
    err = error_from_exception(exc)
    return TransientGatewayError(err.code, f"connection setup failed: {err.description}")


def accepted(code: int, text: bytes | str) -> SendResult:
    """The server took the message: keep its queue id (or its reply) as our reference."""
    reply = _text(text)
    found = _QUEUE_ID.search(reply)
    ref = found.group(1) if found else reply
    return SendResult(ref=ref[:REF_MAX] or None, reply=f"{code} {reply}"[:STATUS_MAX])


# -- helpers -------------------------------------------------------------------------------
class RateLimiter:
    """Spaces sends evenly to at most ``per_second``, across every lane (0 = unlimited)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class DkimSigner:
    """Prepends a DKIM-Signature (dkimpy, relaxed/relaxed, rsa-sha256) to each message.

    The one-click unsubscribe headers are signed as RFC 8058 section 4 requires. A header
    listed here but absent from a message is still named in ``h=``, which signs its absence:
    nobody on the way can add one without breaking the signature.
    """

    HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
               b"content-type", b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post")

    def __init__(self, selector: str, domain: str, key_file: str) -> None:
        try:
            import dkim
        except ImportError as exc:  # pragma: no cover - dkimpy is part of the test extras
            raise MissingExtraError("dkimpy", "dkim") from exc
        self._dkim = dkim
        self.selector = selector.encode()
        self.domain = domain.encode()
        try:
            self.key = Path(key_file).read_bytes()
        except OSError as exc:
            raise GatewayConfigError(f"gateways.email.dkim_key_file: cannot read {key_file} "
                                     f"({exc.strerror}): fix the path or its permissions"
                                     ) from None

    def sign(self, data: bytes) -> bytes:
        try:
            header = self._dkim.sign(data, self.selector, self.domain, self.key,
                                     canonicalize=(b"relaxed", b"relaxed"),
                                     include_headers=list(self.HEADERS))
        except self._dkim.DKIMException as exc:
            raise TransientGatewayError("DKIM", f"signing failed: {exc}") from None
        return header + data


def _tls_context(cfg: EmailGateway) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.tls_ca_file)
    if not cfg.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- one connection ------------------------------------------------------------------------
#: An address that needs no quoting in MAIL / RCPT: the validated addresses of this pipeline.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\Z")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _bracketed(address: str) -> str:
    """``<address>`` for MAIL / RCPT. ``smtplib.quoteaddr`` parses every address again (a
    third of the time of a send); a plain ``local@domain`` needs no parsing, anything else
    still goes through it."""
    if _PLAIN_ADDRESS.match(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _end_of_data(data: bytes) -> bytes:
    """The message as DATA content: dot-stuffed (RFC 5321 4.5.2), ended by ``CRLF . CRLF``."""
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _EndOfData:
    """Remembers whether the end-of-data marker of the current transaction has gone out,
    and writes MAIL / RCPT of plain addresses without smtplib's address parser."""

    data_sent = False
    #: Seconds for the TCP connect (and, with implicit TLS, the handshake); reads then wait
    #: ``timeout`` each.
    connect_timeout: float | None = None

    def _get_socket(self, host: str, port: int, timeout: float):
        sock = super()._get_socket(host, port, self.connect_timeout or timeout)  # type: ignore[misc]
        sock.settimeout(timeout)
        return sock

    def send(self, s: ReadableBuffer | str) -> None:
        super().send(s)  # type: ignore[misc]
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.data_sent = True

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if any(o.lower() == "smtputf8" for o in options):
            return super().mail(sender, options)  # type: ignore[misc]
        extra = "".join(" " + o for o in options) if self.does_esmtp else ""  # type: ignore[attr-defined]
        self.putcmd("mail", f"FROM:{_bracketed(sender)}{extra}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined]

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if options:
            return super().rcpt(recip, options)  # type: ignore[misc]
        self.putcmd("rcpt", f"TO:{_bracketed(recip)}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined]


class _Session(_EndOfData, smtplib.SMTP):
    pass


class _SslSession(_EndOfData, smtplib.SMTP_SSL):
    pass


class SmtpLane:
    """One kept-open SMTP connection, used by one thread at a time."""

    def __init__(self, cfg: EmailGateway, limiter: RateLimiter,
                 signer: DkimSigner | None, name: str, gate: RateGate | None = None) -> None:
        self.cfg = cfg
        self.limiter = limiter
        #: The gateway's maximum rate over every copy (``max_rate_per_second``).
        self.gate = gate
        self.signer = signer
        self.name = name
        self._smtp: _Session | _SslSession | None = None
        self._opening: _Session | _SslSession | None = None
        #: The message whose ``RSET`` and envelope went out behind the last message's content
        #: on this connection (their replies not read yet): see :meth:`_pipelined`.
        self._ahead: EmailMessage | None = None

    def _connect(self) -> _Session | _SslSession:
        cfg = self.cfg
        smtp: _Session | _SslSession | None = None
        try:
            if cfg.security == "ssl":
                smtp = _SslSession(timeout=cfg.timeout, context=_tls_context(cfg))
            else:
                smtp = _Session(timeout=cfg.timeout)
            smtp.connect_timeout = cfg.connect_timeout
            smtp._host = cfg.host  # type: ignore[union-attr]  # what TLS checks the certificate against
            self._opening = smtp  # within reach of the total timeout's cut
            code, text = smtp.connect(cfg.host, cfg.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            smtp.ehlo()
            if cfg.security == "starttls":
                smtp.starttls(context=_tls_context(cfg))
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
        except Exception as exc:  # every failure here is mapped below
            if smtp is not None:
                smtp.close()
            raise setup_error(exc) from None
        finally:
            self._opening = None
        log.info("email.connected", lane=self.name, host=cfg.host, port=cfg.port,
                 security=cfg.security)
        return smtp

    def _drop(self) -> None:
        self._ahead = None
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """End a refused transaction; a session that cannot even RSET is dropped."""
        try:
            code, _ = smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._drop()

    def send(self, message: EmailMessage, then: EmailMessage | None = None) -> Outcome:
        """Send ``message``; ``then``, the message this lane sends next, if known: on a
        pipelining server its envelope goes out with this message's content."""
        try:
            data = self.signer.sign(message.data) if self.signer else message.data
        except GatewayError as err:
            if self._ahead is message:  # its envelope is open on the server: hang up on it
                self._drop()
            return err
        self.limiter.wait()
        if self.gate is not None:
            self.gate.acquire()
        with Watchdog(self.cfg.total_timeout, self._cut, "smtp") as dog:
            result = self._send(message, data, then)
        if dog.fired and not isinstance(result, SendResult):
            self._drop()
            return TransientGatewayError(
                "TIMEOUT", f"the SMTP server took more than {self.cfg.total_timeout:g} s "
                "over one message")
        return result

    def _cut(self) -> None:
        smtp = self._smtp or self._opening
        if smtp is not None:
            shutdown_socket(getattr(smtp, "sock", None))

    def _send(self, message: EmailMessage, data: bytes, then: EmailMessage | None) -> Outcome:
        lost: BaseException | None = None
        if self._ahead is not None and self._ahead is not message:
            self._drop()  # the envelope on the wire is another message's: start afresh
        for attempt in range(2):  # resent once after a dropped connection or a 503
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                return self._transaction(self._smtp, message, data, then)
            except GatewayError as err:
                if err.code != str(BAD_SEQUENCE):
                    return err
                # Out of step with the server (the session was dropped): not taken, try anew.
                log.warning("email.bad_sequence", lane=self.name, detail_id=message.detail_id)
                if attempt:
                    return err
                continue
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                # Dropped before the DATA reply was read: the server did not confirm it.
                reply_lost = self._smtp is not None and self._smtp.data_sent
                log.warning("email.reply_lost" if reply_lost else "email.connection_lost",
                            lane=self.name, detail_id=message.detail_id,
                            error=type(exc).__name__)
                self._drop()
                lost = exc
        return error_from_exception(lost) if lost else TransientGatewayError(
            "DISCONNECTED", "connection lost")

    @staticmethod
    def _mail_options(smtp: smtplib.SMTP, message: EmailMessage, data: bytes) -> list[str]:
        """MAIL FROM's parameters for this message: SMTPUTF8 for a non-ASCII address (refused
        when the server does not offer it), BODY=8BITMIME for 8-bit content."""
        mail_options: list[str] = []
        if not all(a.isascii() for a in (message.mail_from, *message.rcpt_to)):
            if not smtp.has_extn("smtputf8"):
                raise PermanentGatewayError(
                    "SMTPUTF8", "the address is not ASCII and the server does not offer SMTPUTF8")
            mail_options.append("SMTPUTF8")
        if not data.isascii() and smtp.has_extn("8bitmime"):
            mail_options.append("BODY=8BITMIME")
        return mail_options

    def _transaction(self, smtp: _Session | _SslSession, message: EmailMessage,
                     data: bytes, then: EmailMessage | None = None) -> SendResult:
        smtp.data_sent = False
        mail_options = self._mail_options(smtp, message, data)
        if smtp.has_extn("pipelining") and "SMTPUTF8" not in mail_options:
            return self._pipelined(smtp, message, data, mail_options, then)
        try:
            code, text = smtp.mail(message.mail_from, mail_options)
            if code != 250:
                raise self._refused(smtp, code, text)
            refusal = None
            taken = 0
            for rcpt in message.rcpt_to:
                code, text = smtp.rcpt(rcpt)
                if code in (250, 251):
                    taken += 1
                elif refusal is None:
                    refusal = (code, text)
            if not taken and refusal is not None:
                raise self._refused(smtp, *refusal)
            code, text = smtp.data(data)
        except smtplib.SMTPResponseException as exc:  # DATA itself refused (e.g. 554)
            raise self._refused(smtp, exc.smtp_code, exc.smtp_error) from None
        if code != 250:  # refused at the end of DATA: the transaction still needs its RSET
            raise self._refused(smtp, code, text)
        return accepted(code, text)

    @staticmethod
    def _envelope(message: EmailMessage, mail_options: list[str]) -> bytes:
        """MAIL, every RCPT and DATA, as one pipelined group (DATA ends a group)."""
        options = "".join(" " + o for o in mail_options)
        commands = [f"MAIL FROM:{_bracketed(message.mail_from)}{options}",
                    *(f"RCPT TO:{_bracketed(r)}" for r in message.rcpt_to), "DATA\r\n"]
        return "\r\n".join(commands).encode("ascii")

    def _behind(self, smtp: _Session | _SslSession, then: EmailMessage | None) -> bytes:
        """What goes out behind a message's content: ``RSET`` and the next message's envelope
        (RFC 2920 section 3.1: message content may start a group, RSET may be in one), so that
        the next message costs one wait for the server instead of two. RSET ends this
        transaction whatever its verdict, so the next MAIL never meets a refused sender.
        Nothing for a next message that needs SMTPUTF8 (it goes its own way), and nothing
        under a rate limit (the next message's DATA would stay open on the server through
        the wait for its turn)."""
        if then is None or self.limiter.interval or self.gate is not None or \
                not all(a.isascii() for a in (then.mail_from, *then.rcpt_to)):
            return b""
        return b"RSET\r\n" + self._envelope(then, self._mail_options(smtp, then, then.data))

    def _pipelined(self, smtp: _Session | _SslSession, message: EmailMessage, data: bytes,
                   mail_options: list[str], then: EmailMessage | None = None) -> SendResult:
        """MAIL, every RCPT and DATA in one write (RFC 2920 PIPELINING), their replies read in
        order, then the message: two writes and two waits per message instead of four. With
        ``then`` (the message this lane sends next), its ``RSET`` and envelope go out in the
        same write as this message's content (:meth:`_behind`), and a message in a run costs
        one write and one wait.

        The verdict is the first refusal in the envelope (MAIL, else RCPT when no recipient
        was taken); the replies after it (a 503 to DATA, say) are its consequences."""
        if self._ahead is message:  # the envelope went out behind the last message
            self._ahead = None
            code, text = smtp.getreply()  # the RSET that ended the last transaction
            if code != 250:  # out of step with the server: sent afresh on a new session
                self._drop()
                raise reply_error(BAD_SEQUENCE, f"RSET answered {code} {_text(text)}")
        else:
            smtp.send(self._envelope(message, mail_options))
        mail = smtp.getreply()
        rcpts = [smtp.getreply() for _ in message.rcpt_to]
        code, text = smtp.getreply()
        refusal = None
        if mail[0] != 250:
            refusal = mail
        elif not any(r[0] in (250, 251) for r in rcpts):
            refusal = next((r for r in rcpts if r[0] not in (250, 251)), (code, text))
        if code != 354:
            raise self._refused(smtp, *(refusal or (code, text)))
        if refusal is not None:  # DATA opened for a refused envelope: end it by hanging up
            self._drop()
            raise reply_error(*refusal)
        behind = self._behind(smtp, then)
        smtp.send(_end_of_data(data) + behind)
        smtp.data_sent = True
        if behind:
            self._ahead = then
        code, text = smtp.getreply()
        if code != 250:  # refused at the end of DATA: the transaction still needs its RSET
            raise self._refused(smtp, code, text)
        return accepted(code, text)

    def _refused(self, smtp: smtplib.SMTP, code: int, text: bytes | str) -> GatewayError:
        """End the refused transaction (RSET) so the next MAIL starts clean; a 421 (closing)
        or a 503 (the session's state is not what we think) drops the session instead. An
        RSET already on its way (sent behind the content, :meth:`_behind`) is not sent again."""
        if code in (421, BAD_SEQUENCE):
            self._drop()
        elif self._ahead is None:
            self._reset(smtp)
        return reply_error(code, text)

    def close(self) -> None:
        if self._smtp is not None and self._ahead is None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
        self._drop()  # an envelope sent ahead is abandoned by hanging up: no message is taken


# -- the sender ----------------------------------------------------------------------------
def _take(todo: deque[int]) -> int | None:
    try:
        return todo.popleft()
    except IndexError:
        return None


class SmtpEmailSender:
    """An :class:`~comms_pipeline.gateways.protocols.EmailSender` over a pool of SMTP lanes."""

    def __init__(self, cfg: EmailGateway, rate: RateGate | None = None) -> None:
        self.cfg = cfg
        signer = None
        if cfg.dkim_selector and cfg.dkim_domain and cfg.dkim_key_file:
            signer = DkimSigner(cfg.dkim_selector, cfg.dkim_domain, cfg.dkim_key_file)
        limiter = RateLimiter(cfg.rate_per_second)
        self.lanes = [SmtpLane(cfg, limiter, signer, f"{cfg.name or 'smtp'}-{i}", rate)
                      for i in range(cfg.connections)]
        self._pool = (ThreadPoolExecutor(len(self.lanes), thread_name_prefix="smtp")
                      if len(self.lanes) > 1 else None)

    def send_many(self, messages: Sequence[EmailMessage]) -> list[Outcome]:
        if self._pool is None or len(messages) < 2:
            lane = self.lanes[0]
            return [lane.send(m, messages[i + 1] if i + 1 < len(messages) else None)
                    for i, m in enumerate(messages)]
        results: list[Outcome | None] = [None] * len(messages)
        todo = deque(range(len(messages)))

        lanes = self.lanes[: len(messages)]

        def drain(lane: SmtpLane) -> None:
            """Each lane takes its next message before sending the one in hand, so that the
            next one's envelope can go out with this one's content -- while at least one
            message per lane is left, so that the last ones still spread over every lane."""
            i = _take(todo)
            while i is not None:
                j = _take(todo) if len(todo) >= len(lanes) else None
                results[i] = lane.send(messages[i], None if j is None else messages[j])
                i = j if j is not None else _take(todo)

        for future in [self._pool.submit(drain, lane) for lane in lanes]:
            future.result()
        return [r if r is not None else TransientGatewayError("SMTP", "not sent")
                for r in results]

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
