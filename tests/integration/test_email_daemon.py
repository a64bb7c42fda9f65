"""The Email daemon against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from email.utils import parseaddr

import pytest
from sqlalchemy import select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.email import EmailDaemon
from comms_pipeline.pipeline.admin_records import add_external_system, set_media
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.models import details_t
from tests.integration.documents_factory import add_entries, details, make_eml
from tests.servers.smtp import SmtpServer, server_tls_context


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    return Runner(settings, engine, EmailDaemon(settings, engine), once=True).run()


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Liveness wait (not a timing assertion): give up only if it never happens."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_sends_on_kept_open_connections_and_records_queue_ids(db_url, smtp_server,
                                                              make_engine_for):
    settings, engine = make_engine_for(db_url, COMMS_DAEMONS_BATCH_SIZE="10",
                                       COMMS_GATEWAYS_EMAIL_CONNECTIONS="2",
                                       **smtp_server.env())
    ids = add_entries(engine, "email", 30)

    assert run_once(settings, engine) == 30

    rows = details(engine, ids)
    assert {r["state"] for r in rows.values()} == {"completed"}
    received = {m.message_id: m for m in smtp_server.messages}
    assert len(received) == len(smtp_server.messages) == 30
    by_queue_id = {m.queue_id: m for m in smtp_server.messages}
    sender = parseaddr(settings.email.from_address)[1]
    for row in rows.values():
        message = by_queue_id[row["gateway_ref"]]  # the server's queue id, recorded
        assert row["gateway_status"].startswith("250 ")
        assert message.mail_from == sender
        assert message.rcpt_tos == (row["address"],)
        assert row["completed_at"] is not None and row["error_code"] is None
    # Three batches over (up to) two parallel connections, each kept open across batches.
    assert len({m.peer for m in smtp_server.messages}) in (1, 2)


def test_4xx_is_retried_later_and_5xx_is_rejected_with_the_reply(db_url, smtp_server,
                                                                  make_engine_for):
    settings, engine = make_engine_for(db_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                       **smtp_server.env())
    addresses = ["ok@example.com", "busy@example.com", "nobody@example.com"]
    ids = add_entries(engine, "email", 3, address=lambda i: addresses[i])
    smtp_server.handler.rcpt_replies.update({
        "busy@example.com": "451 4.2.1 Mailbox busy, try later",
        "nobody@example.com": "550 5.1.1 No such user here"})

    run_once(settings, engine)

    ok, busy, nobody = (details(engine, ids)[i] for i in ids)
    assert ok["state"] == "completed"
    assert (nobody["state"], nobody["error_code"]) == ("rejected", "550")
    assert nobody["error_description"] == "5.1.1 No such user here"
    assert (busy["state"], busy["error_code"]) == ("awaiting_send", "451")
    assert busy["next_attempt_at"] > utcnow()  # backing off, not spinning

    # The mailbox frees up and the backoff passes: the retry goes through.
    smtp_server.handler.rcpt_replies.clear()
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == busy["id"])
                     .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    run_once(settings, engine)
    busy = details(engine, [busy["id"]])[busy["id"]]
    assert (busy["state"], busy["error_code"], busy["attempts"]) == ("completed", None, 2)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ok@example.com",),
                                                          ("busy@example.com",)]


def test_data_replies_and_a_dropped_connection(sqlite_url, smtp_server, make_engine_for):
    settings, engine = make_engine_for(sqlite_url, COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600",
                                       **smtp_server.env())
    handler = smtp_server.handler
    ids = add_entries(engine, "email", 3)
    handler.data_replies.extend(["452 4.3.1 Insufficient system storage",
                                 "554 5.7.1 Message refused as spam"])
    run_once(settings, engine)
    rows = [details(engine, ids)[i] for i in ids]
    assert [r["state"] for r in rows] == ["awaiting_send", "rejected", "completed"]
    assert (rows[0]["error_code"], rows[1]["error_code"]) == ("452", "554")
    assert rows[1]["error_description"] == "5.7.1 Message refused as spam"

    # The link dies after the message went out but before the DATA reply: the server did
    # not take it, so it is sent again on a new connection -- and only once.
    dropped = add_entries(engine, "email", 2)
    handler.drop_before_data_reply = 1
    run_once(settings, engine)
    assert {r["state"] for r in details(engine, dropped).values()} == {"completed"}

    # Connections cut while idle (server restart, idle timeout) are reopened unnoticed.
    more = add_entries(engine, "email", 3)
    smtp_server.drop_sessions()
    run_once(settings, engine)
    assert {r["state"] for r in details(engine, more).values()} == {"completed"}
    counts = Counter(handler.message_ids())
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert len({m.peer for m in smtp_server.messages}) == 3


def test_a_lost_reply_after_the_server_took_the_message_resends_the_same_message_id(
        sqlite_url, smtp_server, make_engine_for, capsys):
    """The one case SMTP cannot settle (RFC 5321 6.1): at-least-once, never lost, and the
    copy carries the same Message-ID so that the receiver can collapse it."""
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env())
    ids = add_entries(engine, "email", 2)
    smtp_server.handler.drop_after_taking = 1
    run_once(settings, engine)
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    counts = Counter(smtp_server.handler.message_ids())
    assert sorted(counts.values()) == [1, 2]
    assert "email.reply_lost" in capsys.readouterr().out


def test_server_down_for_a_while_and_back_every_message_delivered_once(db_url, smtp_server,
                                                                        make_engine_for):
    settings, engine = make_engine_for(
        db_url, COMMS_DAEMONS_BATCH_SIZE="5", COMMS_DAEMONS_POLL_INTERVAL="0.05",
        COMMS_CLAIMS_BACKOFF_BASE_SECONDS="0.05", COMMS_CLAIMS_BACKOFF_MAX_SECONDS="0.2",
        COMMS_CLAIMS_MAX_ATTEMPTS="1000", **smtp_server.env(
            COMMS_GATEWAYS_EMAIL_CONNECTIONS="2", COMMS_GATEWAYS_EMAIL_TIMEOUT="5"))
    ids = add_entries(engine, "email", 40)
    runner = Runner(settings, engine, EmailDaemon(settings, engine))
    thread = threading.Thread(target=runner.run, name="email-daemon")
    thread.start()
    try:
        wait_for(lambda: len(smtp_server.messages) >= 8, "the first messages")
        smtp_server.stop()

        def retried_while_down() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(details_t.c.id).where(
                    details_t.c.id.in_(ids), details_t.c.attempts >= 3,
                    details_t.c.state == "awaiting_send")).first() is not None

        wait_for(retried_while_down, "retries while the server is down")
        smtp_server.start()

        def all_done() -> bool:
            return all(r["state"] != "awaiting_send" for r in details(engine, ids).values())

        wait_for(all_done, "every message to be delivered")
    finally:
        runner.stop_event.set()
        thread.join(30)

    rows = details(engine, ids)
    assert {r["state"] for r in rows.values()} == {"completed"}
    counts = Counter(smtp_server.handler.message_ids())
    assert len(counts) == 40 and set(counts.values()) == {1}, counts.most_common(3)
    assert max(r["attempts"] for r in rows.values()) >= 3


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_auth(sqlite_url, tls_files, make_engine_for, security):
    cert, key = tls_files
    context = server_tls_context(cert, key)
    server = (SmtpServer(tls_context=context, auth=True) if security == "starttls"
              else SmtpServer(ssl_context=context, auth=True)).start()
    try:
        settings, engine = make_engine_for(sqlite_url, **server.env(
            COMMS_GATEWAYS_EMAIL_SECURITY=security, COMMS_GATEWAYS_EMAIL_TLS_CA_FILE=str(cert),
            COMMS_GATEWAYS_EMAIL_USERNAME="comms", COMMS_GATEWAYS_EMAIL_PASSWORD="s3cret"))
        ids = add_entries(engine, "email", 3)
        run_once(settings, engine)
    finally:
        server.stop()
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    assert len(server.messages) == 3
    assert server.handler.logins == ["comms"]  # one login: one kept-open connection


def test_plain_auth_and_a_wrong_password(sqlite_url, make_engine_for):
    server = SmtpServer(auth=True).start()
    try:
        env = server.env(COMMS_GATEWAYS_EMAIL_USERNAME="comms",
                         COMMS_GATEWAYS_EMAIL_PASSWORD="wrong",
                         COMMS_CLAIMS_BACKOFF_BASE_SECONDS="600")
        settings, engine = make_engine_for(sqlite_url, **env)
        ids = add_entries(engine, "email", 2)
        run_once(settings, engine)
        refused = details(engine, ids)
        # Bad credentials are the operator's problem, not the message's: kept for a retry.
        assert {(r["state"], r["error_code"]) for r in refused.values()} == {
            ("awaiting_send", "535")}

        env["COMMS_GATEWAYS_EMAIL_PASSWORD"] = "s3cret"
        settings, engine = make_engine_for(sqlite_url, **env)
        with engine.begin() as conn:
            conn.execute(update(details_t).values(next_attempt_at=None))
        run_once(settings, engine)
    finally:
        server.stop()
    assert {r["state"] for r in details(engine, ids).values()} == {"completed"}
    assert server.handler.logins == ["comms"]


def _dkim_key(tmp_path) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    """A fresh RSA key file and the DNS TXT record that publishes it."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(key_file), b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signature_verifies(sqlite_url, smtp_server, make_engine_for, tmp_path):
    import dkim

    key_file, txt = _dkim_key(tmp_path)
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env(
        COMMS_GATEWAYS_EMAIL_DKIM_SELECTOR="s1", COMMS_GATEWAYS_EMAIL_DKIM_DOMAIN="example.com",
        COMMS_GATEWAYS_EMAIL_DKIM_KEY_FILE=key_file))
    add_entries(engine, "email", 1)
    run_once(settings, engine)

    (message,) = smtp_server.messages
    assert message.data.startswith(b"DKIM-Signature:")
    dns = {b"s1._domainkey.example.com.": txt}
    assert dkim.verify(message.data, dnsfunc=lambda name, timeout=5: dns.get(name))
    tampered = message.data.replace(b"Hello", b"Jello")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: dns.get(name))


def test_dkim_signs_the_one_click_unsubscribe_headers(sqlite_url, smtp_server, make_engine_for,
                                                      tmp_path):
    """RFC 8058 section 4: List-Unsubscribe and List-Unsubscribe-Post are under the signature."""
    import dkim

    from comms_pipeline.rendering.mime import MessageSpec, build_message, parse_mailbox

    key_file, txt = _dkim_key(tmp_path)
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env(
        COMMS_GATEWAYS_EMAIL_DKIM_SELECTOR="s1", COMMS_GATEWAYS_EMAIL_DKIM_DOMAIN="example.com",
        COMMS_GATEWAYS_EMAIL_DKIM_KEY_FILE=key_file))
    url = "https://comms.example.com/u?t=abc.def"

    def marketing(i: int, to: str) -> bytes:
        return build_message(MessageSpec(
            sender=parse_mailbox("Offers <offers@example.com>"), to=parse_mailbox(to),
            subject="Our spring offers", text="Hello", unsubscribe_url=url))[0]

    add_entries(engine, "email", 1, content=marketing)
    run_once(settings, engine)

    (message,) = smtp_server.messages
    dns = {b"s1._domainkey.example.com.": txt}
    verify = lambda data: dkim.verify(data, dnsfunc=lambda name, timeout=5: dns.get(name))  # noqa: E731
    assert verify(message.data)
    signature = message.message()["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in "".join(signature.split()).split(";") if t)
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(tags["h"].lower().split(":"))
    assert message.message()["List-Unsubscribe"] == f"<{url}>"
    # Changing either header (a relay rewriting the link, say) breaks the signature.
    assert not verify(message.data.replace(b"t=abc.def", b"t=abc.xyz"))
    assert not verify(message.data.replace(b"List-Unsubscribe=One-Click",
                                           b"List-Unsubscribe=Two-Click"))


def test_processing_rules_expiry_and_external_entries(sqlite_url, smtp_server, make_engine_for):
    settings, engine = make_engine_for(sqlite_url, **smtp_server.env())
    with engine.begin() as conn:
        system = add_external_system(conn, "PORTAL", "Customer portal")
    sendable = add_entries(engine, "email", 1)
    incoming = add_entries(engine, "email", 1, direction="incoming")
    expired = add_entries(engine, "email", 1, expires_at=utcnow() - timedelta(minutes=1))
    external = add_entries(engine, "email", 1, external_system_id=system)
    no_doc = add_entries(engine, "email", 1, with_document=False)

    run_once(settings, engine)
    rows = details(engine, sendable + incoming + expired + external + no_doc)
    assert rows[sendable[0]]["state"] == "completed"
    assert (rows[incoming[0]]["state"], rows[incoming[0]]["error_description"]) == (
        "rejected", "Incoming Emails not Supported")
    assert rows[expired[0]]["state"] == "expired"
    assert rows[external[0]]["state"] == "awaiting_send"  # left to the external system
    assert (rows[no_doc[0]]["state"], rows[no_doc[0]]["error_code"]) == ("rejected",
                                                                          "NO_DOCUMENT")

    with engine.begin() as conn:
        set_media(conn, "email", enabled=False)
    disabled = add_entries(engine, "email", 1)
    run_once(settings, engine)
    row = details(engine, disabled)[disabled[0]]
    assert (row["state"], row["error_description"]) == ("rejected", "Email Server not Enabled")
    assert len(smtp_server.messages) == 1


def test_local_backend_writes_eml_files(sqlite_url, make_engine_for, tmp_path):
    settings, engine = make_engine_for(sqlite_url)
    ids = add_entries(engine, "email", 2, content=lambda i, to: make_eml(to, body=f"n{i}"))
    run_once(settings, engine)
    rows = details(engine, ids)
    for i, detail_id in enumerate(ids):
        path = settings.var_dir / "out" / "email" / f"{detail_id}.eml"
        assert f"n{i}".encode() in path.read_bytes()
        assert rows[detail_id]["state"] == "completed"
