"""Agents: a contact's communications (state, errors, tracking) and the stored emails and
letters — streamed from the database or the store, or as a presigned S3 link."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import update

from comms_pipeline.gateways.s3 import S3DocumentStore
from comms_pipeline.store.db import make_engine
from comms_pipeline.store.models import documents_t
from tests.conftest import make_settings
from tests.integration.documents_factory import add_entries, make_eml, make_pdf
from tests.integration.web_support import add_system, bearer, client, role_key


@pytest.fixture
def api(settings, engine):
    return client(settings, engine)


def _doc_id(engine, detail_id):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(documents_t.select().with_only_columns(documents_t.c.id)
                            .where(documents_t.c.detail_id == detail_id)).scalar_one()


def test_a_contacts_communications_with_state_errors_and_documents(api, engine):
    [email] = add_entries(engine, "email", 1, contact_ref="C-7",
                          content=lambda i, to: make_eml(to, "Your bill", "Amount due"))
    [letter] = add_entries(engine, "letter", 1, contact_ref="C-7")
    [failed] = add_entries(engine, "email", 1, contact_ref="C-7", with_document=False,
                           state="rejected", error_code="550",
                           error_description="5.1.1 mailbox unavailable")
    add_entries(engine, "email", 1, contact_ref="C-8")
    agent = bearer(role_key(engine, "agent", "Anna"))
    page = api.get("/v1/contacts/C-7/communications", headers=agent).json()
    assert page["contact"] == {"ref": "C-7", "name": "Contact C-7"}
    items = page["items"]
    assert [i["id"] for i in items] == [failed, letter, email]  # newest first
    assert items[0]["state"] == "Rejected"
    assert (items[0]["error_code"], items[0]["error_description"]) == \
        ("550", "5.1.1 mailbox unavailable")
    assert items[0]["document"] is None
    assert items[1]["document"]["content_type"] == "application/pdf"
    assert items[2]["state"] == "Pending" and items[2]["tracking"]["opens"] == 0

    # Paging by cursor gives the same list.
    first = api.get("/v1/contacts/C-7/communications", params={"limit": 2},
                    headers=agent).json()
    rest = api.get("/v1/contacts/C-7/communications",
                   params={"limit": 2, "cursor": first["next_cursor"]}, headers=agent).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [failed, letter, email]
    assert rest["next_cursor"] is None

    r = api.get("/v1/contacts/NOBODY/communications", headers=agent)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    external = bearer(add_system(engine, "PORTAL")[1])
    assert api.get("/v1/contacts/C-7/communications", headers=external).status_code == 403


def test_documents_are_streamed_and_emails_previewed(api, engine):
    eml = make_eml("c-7@example.com", "Your bill", "Amount due")
    [email] = add_entries(engine, "email", 1, contact_ref="C-7", content=lambda i, to: eml)
    pdf = make_pdf(2)
    [letter] = add_entries(engine, "letter", 1, contact_ref="C-7", content=lambda i, to: pdf)
    agent = bearer(role_key(engine, "agent"))
    r = api.get(f"/v1/documents/{_doc_id(engine, letter)}", headers=agent)
    assert r.status_code == 200 and r.content == pdf
    assert r.headers["content-type"] == "application/pdf"
    assert f'filename="{_doc_id(engine, letter)}.pdf"' in r.headers["content-disposition"]
    r = api.get(f"/v1/documents/{_doc_id(engine, email)}", headers=agent)
    assert r.content == eml and r.headers["content-type"] == "message/rfc822"

    preview = api.get(f"/v1/documents/{_doc_id(engine, email)}/preview", headers=agent).json()
    assert preview["subject"] == "Your bill" and "Amount due" in preview["text"]
    assert "<p>Amount due</p>" in preview["html"]
    r = api.get(f"/v1/documents/{_doc_id(engine, letter)}/preview", headers=agent)
    assert r.status_code == 409 and r.json()["code"] == "not_an_email"
    r = api.get(f"/v1/documents/{_doc_id(engine, letter)}/link", headers=agent)
    assert r.status_code == 409 and r.json()["code"] == "not_in_s3"
    assert api.get("/v1/documents/999999", headers=agent).status_code == 404
    assert api.get(f"/v1/documents/{_doc_id(engine, letter)}").status_code == 401

    # A copy that does not match its recorded hash is refused, not served.
    letter_doc = _doc_id(engine, letter)
    with engine.begin() as conn:
        conn.execute(update(documents_t).where(documents_t.c.id == letter_doc)
                     .values(content=pdf + b"tampered"))
    r = api.get(f"/v1/documents/{letter_doc}", headers=agent)
    assert r.status_code == 409 and r.json()["code"] == "document_unavailable"


def test_a_document_kept_in_s3_is_streamed_or_linked(sqlite_url, tmp_path, s3_bucket):
    settings = make_settings(sqlite_url, tmp_path / "var", **s3_bucket.env())
    engine = make_engine(settings.database_url)
    try:
        pdf = make_pdf(1)
        [letter] = add_entries(engine, "letter", 1, contact_ref="C-7", content=lambda i, t: pdf)
        store = S3DocumentStore(settings.gateways.storage)
        location = store.put("2030/01/01/00/1.pdf", pdf, "application/pdf", {})
        store.close()
        doc_id = _doc_id(engine, letter)
        with engine.begin() as conn:
            conn.execute(update(documents_t).where(documents_t.c.id == doc_id).values(
                storage_backend="s3", location=location, content=None))
        api = client(settings, engine)
        agent = bearer(role_key(engine, "agent"))
        r = api.get(f"/v1/documents/{doc_id}", headers=agent)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == \
            hashlib.sha256(pdf).hexdigest()
        link = api.get(f"/v1/documents/{doc_id}/link", headers=agent).json()
        assert link["expires_in"] == 300 and "X-Amz-Signature" in link["url"]
        assert httpx.get(link["url"]).content == pdf
    finally:
        engine.dispose()


def test_a_contacts_log_holds_agents_interactions_sends_and_follow_ups(api, engine):
    from comms_pipeline.notifications import log as comm_log

    [sent] = add_entries(engine, "email", 1, contact_ref="C-9", state="completed")
    with engine.begin() as conn:
        call = comm_log.log_interaction(conn, contact_ref="C-9", media="phone",
                                        direction="incoming", category="complaint",
                                        subject="No signal", created_by="agent.anna")
        visit = comm_log.follow_up(conn, call, media="face_to_face", direction="outgoing",
                                   content="Technician replaced the amplifier")
    agent = bearer(role_key(engine, "agent", "Anna"))
    log = api.get("/v1/contacts/C-9/log", headers=agent).json()
    assert log["contact_ref"] == "C-9"
    by_id = {e["id"]: e for e in log["items"]}
    assert by_id[visit]["follow_up_of_id"] == call
    assert by_id[call]["category"] == "complaint" and by_id[call]["status"] == "completed"
    [send] = [e for e in log["items"] if e["queue_entry_id"] == sent]
    assert (send["media"], send["created_by"]) == ("email", "pipeline")
    assert api.get("/v1/contacts/NOBODY/log", headers=agent).status_code == 404
    external = bearer(add_system(engine, "PORTAL")[1])
    assert api.get("/v1/contacts/C-9/log", headers=external).status_code == 403
