"""Erasure leaves no trace of a canary contact: the canary goes through the real pipeline (the
Web API and a trigger, the Comms and Email Monitors, the Email daemon to a loopback SMTP
server, the Storage daemon to moto's S3 or a real SFTP server, a tracked open), is erased, and
then every text, JSON and binary column of every table and every stored document is searched
for its strings. On SQLite and PostgreSQL."""

from __future__ import annotations

import email
import json
import re
import uuid
from email import policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import JSON, LargeBinary, String, Text, func, insert, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.feedback_events import FeedbackEvent
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.contact_admin import update_contact
from comms_pipeline.pipeline.documents import DocumentRemovedError, fetch_document
from comms_pipeline.pipeline.erasure import NothingToEraseError, erase, pseudonym
from comms_pipeline.pipeline.feedback import handle_feedback
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job, run_stage
from comms_pipeline.store.models import (
    Base,
    contacts_t,
    details_t,
    documents_t,
    erasures_t,
    link_actions_t,
    members_t,
    notifications_t,
    runs_t,
    segments_t,
    skipped_t,
    transitions_t,
    types_t,
)
from tests.integration.web_support import bearer, client, role_key, with_sections

BODY = ('<p>Dear #contact_information.name, #param.note '
        '<a href="https://example.com/bill?id=7">your bill</a>.</p>')


def _canary() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"ref": f"CANARY-{tag}", "name": f"Ζεφυρίνη Canarysdottir{tag}",
            "email": f"zephyrine.{tag}@canary.example",
            "phone": f"+3579955{int(tag, 16) % 10000:04d}",
            "street": f"{tag} Canary Lane", "body": f"the canary's secret {tag} body",
            "agent": f"CanaryBrowser/{tag}"}


def _seed(settings, engine, c: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        add_contact(conn, c["ref"], c["name"], language="en", data={"note": c["body"]},
                    addresses=[AddressSpec("email", c["email"], "home", True),
                               AddressSpec("phone", c["phone"], "mobile", True),
                               AddressSpec("postal", f"{c['street']}\n1065 Nicosia", "home",
                                           True)])
        add_contact(conn, "OTHER-1", "Other Person", language="en",
                    addresses=[AddressSpec("email", "other@example.com", "home", True)])
        save_template(conn, TemplateSpec(
            "CANARY_BILL", "Bill", "email", classification="financial",
            unrestricted_params=["note"],
            variants=[VariantSpec("en", subject="Bill for #contact_information.name",
                                  body_html=BODY)]))
        update_contact(conn, c["ref"], actor="agent:jane", opt_in_direct_marketing=True)
    api = client(settings, engine)
    admin = bearer(role_key(engine, "admin"))
    r = api.post("/v1/requests", headers={**admin, "Idempotency-Key": f"idem-{c['ref']}"},
                 json={"contact_ref": c["ref"], "template_code": "CANARY_BILL",
                       "params": {"note": c["body"]}, "idempotency_key": f"crm-{c['ref']}"})
    assert r.status_code == 202, r.json()
    trigger(engine, contact_ref=c["ref"], template_code="CANARY_BILL",
            params={"note": c["body"]}, entities={"bill": {"owner": c["name"]}})
    trigger(engine, contact_ref="OTHER-1", template_code="CANARY_BILL",
            params={"note": "other note"})
    run_job("monitor", settings, engine)
    run_job("email-monitor", settings, engine)
    assert run_stage("email", settings, engine, once=True, signals=False).handled == 3
    assert run_stage("storage", settings, engine, once=True, signals=False).handled == 3
    with engine.connect() as conn:
        raw = conn.execute(select(documents_t.c.content).join(
            details_t, details_t.c.id == documents_t.c.detail_id)
            .where(details_t.c.address == c["email"]).limit(1)).scalar_one()
    html = email.message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
    pixel = re.search(r'https://comms\.example(/t/o/[^"]+\.gif)', html)
    assert pixel, html
    assert api.get(pixel[1], headers={"User-Agent": c["agent"]}).status_code == 200
    now = utcnow()
    with engine.begin() as conn:  # the notifications log, link actions and a stored list
        contact_id = conn.execute(select(contacts_t.c.id)
                                  .where(contacts_t.c.ref == c["ref"])).scalar_one()
        type_id = conn.execute(insert(types_t).values(
            code="CANARY_TYPE", name="Bills", classification="financial", entity="bill",
            template_code="CANARY_BILL").returning(types_t.c.id)).scalar_one()
        run_id = conn.execute(insert(runs_t).values(
            type_id=type_id, status="done", started_at=now,
            summary={"errors": [f"{c['ref']}: no address"], "last": f"{c['name']} (Nicosia)"}
        ).returning(runs_t.c.id)).scalar_one()
        conn.execute(insert(notifications_t).values(
            run_id=run_id, type_id=type_id, number=f"N-{uuid.uuid4().hex[:8]}",
            recipient_key=f"{c['ref']}:B-1", contact_ref=c["ref"],
            data={"name": c["name"], "email": c["email"]}, created_at=now))
        conn.execute(insert(skipped_t).values(
            run_id=run_id, contact_ref=c["ref"], recipient_key=c["ref"],
            reason_code="NO_ADDRESS", reason=f"{c['name']} has no address", at=now))
        conn.execute(insert(link_actions_t).values(
            token_id=uuid.uuid4().hex, contact_id=contact_id, action="opt_out",
            data={"email": c["email"]}, at=now))
        segment_id = conn.execute(insert(segments_t).values(
            code="CANARY_LIST", name="List", kind="list").returning(segments_t.c.id)
        ).scalar_one()
        conn.execute(insert(members_t).values(segment_id=segment_id, member_ref=c["ref"]))


def _texts(value: Any) -> list[str]:
    """What a stored value says: the text, the JSON, the bytes and, for an email, its
    decoded parts (base64 and quoted-printable hide nothing)."""
    if value is None:
        return []
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        found = [data.decode("latin-1")]
        for part in email.message_from_bytes(data, policy=policy.default).walk():
            found.extend(str(v) for v in part.values())  # headers, RFC 2047 decoded
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload.decode("utf-8", "replace"))
        return found
    if isinstance(value, str):
        return [value]
    return [json.dumps(value, ensure_ascii=False, default=str),
            json.dumps(value, default=str)]


def _database_mentions(engine, secrets: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    """``table.column`` of every value in the database that mentions a secret."""
    found = set()
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            cols = [col for col in table.columns
                    if isinstance(col.type, String | Text | JSON | LargeBinary)]
            if not cols:
                continue
            for row in conn.execute(select(*cols)):
                for col, value in zip(cols, row, strict=True):
                    if any(s in t for t in _texts(value) for s in secrets):
                        found.add(f"{table.name}.{col.name}")
    return found


def _store_mentions(objects: dict[str, bytes], secrets: list[str]) -> set[str]:
    return {key for key, data in objects.items()
            if any(s in t for t in _texts(data) for s in secrets)}


def _s3_objects(bucket) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    s3 = bucket.client()
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket.name).get("Contents", []):
        got = s3.get_object(Bucket=bucket.name, Key=obj["Key"])
        out[obj["Key"]] = got["Body"].read() + json.dumps(got["Metadata"]).encode()
    s3.close()
    return out


def _sftp_objects(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(params=["s3", "sftp"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return bucket.env(), lambda: _s3_objects(bucket)
    server = request.getfixturevalue("sftp_server")
    return (server.env("storage", server.known_hosts),
            lambda: _sftp_objects(server.root))


def test_erasure_leaves_no_trace_of_the_canary(db_url, smtp_server, store, make_engine_for):
    env, objects = store
    settings, engine = make_engine_for(db_url, **smtp_server.env(), **env)
    settings = with_sections(settings, web={"tracking": "all",
                                            "base_url": "https://comms.example"})
    c = _canary()
    secrets = list(c.values())
    _seed(settings, engine, c)
    with engine.begin() as conn:  # the feedback loop's records of the canary too
        sent = conn.execute(select(details_t.c.id).where(details_t.c.address == c["email"])
                            ).scalars().first()
        handle_feedback(conn, FeedbackEvent("soft_bounce", sent, None, c["email"], "4.2.2",
                                            f"552 mailbox of {c['email']} is full", "smtp",
                                            utcnow()))
        sup.suppress(conn, address=c["email"], media="email", reason="complaint",
                     actor="feedback", source_detail_id=sent)

    everywhere = _database_mentions(engine, secrets)  # the scan finds what it looks for
    assert {"suppressions.address", "soft_bounces.address", "feedback_reports.recipient",
            "feedback_reports.diagnostic"} <= everywhere, everywhere
    assert {"contacts.ref", "contacts.name", "contacts.data", "contact_addresses.value",
            "request_headers.contact_ref", "request_headers.params",
            "request_headers.entities", "request_details.address", "request_details.subject",
            "documents.content", "communications.subject", "tracking_events.user_agent",
            "notifications.data", "skipped_recipients.reason", "link_actions.data",
            "segment_members.member_ref", "idempotency_records.response",
            "notification_runs.summary"} <= everywhere, everywhere
    assert len(_store_mentions(objects(), secrets)) == 2  # the canary's two emails
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                  for t in (details_t, transitions_t, documents_t)}
        states = sorted(conn.execute(select(details_t.c.state)).scalars())
        canary_docs = list(conn.execute(select(documents_t.c.id).join(
            details_t, details_t.c.id == documents_t.c.detail_id)
            .where(details_t.c.address == c["email"])).scalars())

    api = client(settings, engine)
    admin = bearer(role_key(engine, "admin", "dpo"))
    assert api.post(f"/v1/contacts/{c['ref']}/erase",
                    headers=bearer(role_key(engine, "agent"))).status_code == 403
    r = api.post(f"/v1/contacts/{c['ref']}/erase", headers=admin)
    assert r.status_code == 200, r.json()
    answer = r.json()
    assert answer["pseudonym"] == pseudonym(c["ref"]) and answer["already"] is False
    assert answer["counts"]["entries"] == 2 and answer["counts"]["stored_copies"] == 2
    assert answer["counts"]["requests"] == 2 and answer["counts"]["addresses"] == 3

    assert _database_mentions(engine, secrets) == set()
    assert _store_mentions(objects(), secrets) == set()
    assert len(objects()) == 1  # the other person's email is still kept
    with engine.connect() as conn:  # counts, states and the audit trail stay
        assert {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in (details_t, transitions_t, documents_t)} == counts
        assert sorted(conn.execute(select(details_t.c.state)).scalars()) == states
        other = conn.execute(select(details_t.c.subject, details_t.c.body).where(
            details_t.c.address == "other@example.com")).one()
        record = conn.execute(select(erasures_t)).one()
    assert other.subject == "Bill for Other Person"
    assert (record.pseudonym, record.erased_by) == (pseudonym(c["ref"]), "api:dpo")
    assert record.counts == answer["counts"]
    with pytest.raises(DocumentRemovedError, match="removed by an erasure"):
        fetch_document(settings, engine, canary_docs[0])

    again = api.post(f"/v1/contacts/{c['ref']}/erase", headers=admin).json()
    assert again["already"] is True and again["counts"] == answer["counts"]
    assert api.post("/v1/contacts/NOBODY/erase", headers=admin).status_code == 404


def test_cli_erase_cancels_what_is_not_sent(sqlite_url, make_engine_for, tmp_path):
    from comms_pipeline.cli.main import cli

    settings, engine = make_engine_for(sqlite_url)
    c = _canary()
    with engine.begin() as conn:
        add_contact(conn, c["ref"], c["name"],
                    addresses=[AddressSpec("email", c["email"], "home", True)])
    header = trigger(engine, contact_ref=c["ref"], template_code="ANY")
    env = {"COMMS_DATABASE_URL": sqlite_url, "COMMS_PATHS_VAR": str(tmp_path / "var")}
    runner = CliRunner()
    out = runner.invoke(cli, ["contacts", "erase", c["ref"], "--yes", "--by", "dpo"], env=env)
    assert out.exit_code == 0, out.output
    assert f"now {pseudonym(c['ref'])}" in out.output and "cancelled 1" in out.output
    with engine.connect() as conn:
        from comms_pipeline.store.models import headers_t

        row = conn.execute(select(headers_t).where(headers_t.c.id == header)).one()
        record = conn.execute(select(erasures_t)).one()
    assert (row.status, row.status_code, row.contact_ref) == \
        ("cancelled", "ERASED", pseudonym(c["ref"]))
    assert record.erased_by == "cli:dpo"
    out = runner.invoke(cli, ["contacts", "erase", c["ref"], "--yes"], env=env)
    assert out.exit_code == 0 and "already erased" in out.output
    assert _database_mentions(engine, list(c.values())) == set()
    with pytest.raises(NothingToEraseError):
        erase(engine, settings, "NOBODY", actor="test")


def test_erasure_waits_for_rows_a_worker_holds(db_url, make_engine_for):
    from datetime import timedelta

    from sqlalchemy import update

    from comms_pipeline.pipeline.erasure import ErasureBusyError
    from tests.integration.documents_factory import add_entries

    settings, engine = make_engine_for(db_url)
    c = _canary()
    with engine.begin() as conn:
        add_contact(conn, c["ref"], c["name"],
                    addresses=[AddressSpec("email", c["email"], "home", True)])
    [entry] = add_entries(engine, "email", 1, contact_ref=c["ref"], address=lambda i: c["email"])
    with engine.begin() as conn:  # the Storage daemon holds its document
        conn.execute(update(documents_t).values(
            claimed_by="storage@elsewhere", lease_until=utcnow() + timedelta(minutes=1)))
    with pytest.raises(ErasureBusyError, match="ERASURE_BUSY"):
        erase(engine, settings, c["ref"], actor="test")
    assert "contacts.name" in _database_mentions(engine, [c["name"]])  # nothing was erased
    with engine.begin() as conn:  # its lease passed (the daemon died): the erasure goes on
        conn.execute(update(documents_t).values(lease_until=utcnow() - timedelta(seconds=1)))
    result = erase(engine, settings, c["ref"], actor="test")
    assert result.counts["cancelled"] == 2  # its request (not processed) and its entry
    assert result.counts["documents"] == 1
    assert _database_mentions(engine, list(c.values())) == set()
    with engine.connect() as conn:
        assert conn.execute(select(details_t.c.state).where(details_t.c.id == entry)
                            ).scalar_one() == "rejected"
