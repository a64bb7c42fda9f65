"""The bounce receiver running in a thread, and DSNs made from the corpus's Postfix sample."""

from __future__ import annotations

import re
import smtplib
import threading
from pathlib import Path

from sqlalchemy import select

from comms_pipeline.daemons.bounces import BounceDaemon
from comms_pipeline.store.models import feedback_t, transitions_t

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "feedback"
BOUNCE_DOMAIN = "bounces.example.com"
#: What the corpus's Postfix sample names, replaced by a test's own values.
SAMPLE_VERP = "bounces+1017.9f2c1a0b3d4e@bounces.example.com"
SAMPLE_MESSAGE_ID = "<176458044210.4411.1234567890123456789.cp1017.9f2c1a0b3d4e@comms.example.com>"
SAMPLE_RECIPIENT = "nobody@example.org"


def bounce_env(**extra: str) -> dict[str, str]:
    return {"COMMS_BOUNCES_DOMAIN": BOUNCE_DOMAIN, "COMMS_BOUNCES_LISTEN_PORT": "0",
            "COMMS_LINKS_SECRET": "test-link-secret", **extra}


class Receiver:
    """``comms daemon run bounces`` in a thread: :meth:`start` returns once it listens."""

    def __init__(self, settings, engine) -> None:  # type: ignore[no-untyped-def]
        self.daemon = BounceDaemon(settings, engine)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.daemon.serve, args=(self.stop_event,),
                                       daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        for _ in range(500):
            if self.daemon.server._controller.server is not None:
                break
            self.stop_event.wait(0.01)
        return self

    @property
    def port(self) -> int:
        return self.daemon.server.port

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)

    def send(self, rcpt: str, data: bytes, mail_from: str = "") -> dict:
        """Deliver ``data`` as a remote MTA delivers a bounce (null sender, CRLF lines);
        the refusals."""
        data = re.sub(rb"\r?\n", b"\r\n", data)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            return smtp.sendmail(mail_from, [rcpt], data)


def postfix_dsn(verp: str, message_id: str, recipient: str) -> bytes:
    """The corpus's Postfix "User unknown" DSN about our message."""
    text = (CORPUS / "postfix_user_unknown.eml").read_text()
    return (text.replace(SAMPLE_VERP, verp).replace(SAMPLE_MESSAGE_ID, message_id)
            .replace(SAMPLE_RECIPIENT, recipient).encode())


def reports(engine) -> list[dict]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(feedback_t).order_by(feedback_t.c.id))
                .mappings()]


def history(engine, detail_id: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    t = transitions_t
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.c.from_state, t.c.to_state, t.c.actor, t.c.code)
            .where(t.c.kind == "detail", t.c.row_id == detail_id).order_by(t.c.id))]
