"""The retention sweep on SQLite and PostgreSQL, with documents kept in moto's S3 and on a
real SFTP server: what is past its retention goes (in the database and the store), nothing
else does, and the states, codes and transitions stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.documents import DocumentRemovedError, fetch_document
from comms_pipeline.runtime.retry_entries import retry_entries
from comms_pipeline.runtime.run import run_job, stage_backlog
from comms_pipeline.settings.retention import RetentionSettings
from comms_pipeline.store.models import (
    comms_t,
    details_t,
    tracking_events_t,
    tracking_links_t,
    transitions_t,
)
from tests.integration.documents_factory import add_entries, details, documents
from tests.integration.test_storage_daemon import run_once
from tests.integration.web_support import bearer, client, role_key
from tests.servers.smtp import free_port

RULES = RetentionSettings(bodies={"*": 7}, documents={"*": 7, "letter.financial": 3000},
                          tracking={"email": 7})


def _with(settings, retention: RetentionSettings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"retention": retention})


def _seed(settings, engine) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Finished emails (two old, one new), old financial letters, an old pending email; all
    stored; tracking on the emails; the sends in the communications log."""
    old = add_entries(engine, "email", 2, body="old body", state="completed")
    new = add_entries(engine, "email", 1, body="new body", state="completed")
    letters = add_entries(engine, "letter", 2, classification="financial", state="rejected",
                          error_code="PRINT_REFUSED", error_description="refused")
    pending = add_entries(engine, "email", 1, body="pending body")
    assert run_once(settings, engine) == 6  # every document kept in the store
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id.in_(old + letters + pending))
                     .values(created_at=now - timedelta(days=10)))
        for n, detail_id in enumerate(old + new):
            conn.execute(insert(tracking_links_t).values(
                id=f"link-{detail_id}", detail_id=detail_id, url=f"https://example.com/{n}"))
            conn.execute(insert(tracking_events_t).values(
                detail_id=detail_id, kind="click", link_id=f"link-{detail_id}",
                user_agent="Browser/1.0", at=now))
            conn.execute(insert(comms_t).values(
                contact_id=select(details_t.c.contact_id).where(details_t.c.id == detail_id)
                .scalar_subquery(), media="email", direction="outgoing", subject="Your bill",
                content="the body", status="completed", detail_id=detail_id, created_at=now))
    return {"old": old, "new": new, "letters": letters, "pending": pending}


def _objects(settings, engine, doc_ids):  # type: ignore[no-untyped-def]
    """Which documents' stored copies can still be read back from the store."""
    from comms_pipeline.core.errors import GatewayError
    from comms_pipeline.pipeline.documents import make_document_store

    store = make_document_store(settings)
    there = set()
    try:
        for doc in documents(engine):
            if doc["id"] in doc_ids:
                try:
                    store.get(doc["location"])
                    there.add(doc["id"])
                except GatewayError:
                    pass
    finally:
        store.close()
    return there


def _check_sweep(settings, engine, ids):  # type: ignore[no-untyped-def]
    docs = {d["detail_id"]: d for d in documents(engine)}
    all_docs = {d["id"] for d in docs.values()}
    assert _objects(settings, engine, all_docs) == all_docs
    with engine.connect() as conn:
        transitions = conn.execute(select(func.count()).select_from(transitions_t)).scalar()
    before = details(engine, sum(ids.values(), []))

    swept = _with(settings, RULES)
    assert stage_backlog("retention-sweep", swept, engine) == 4  # 2 old emails, 2 letters
    assert run_job("retention-sweep", swept, engine) == 4
    after = details(engine, sum(ids.values(), []))
    for i in ids["old"] + ids["letters"]:  # bodies: "*" = 7 days
        assert (after[i]["body"], after[i]["subject"], after[i]["purged_by"]) == \
            (None, None, "retention")
        assert after[i]["purged_at"] is not None
    for i in ids["new"] + ids["pending"]:  # too new, or not sent yet: untouched
        assert after[i]["body"] == before[i]["body"] and after[i]["purged_at"] is None
    for i, row in after.items():  # states, codes and the attempts' count stay
        assert (row["state"], row["error_code"], row["address"], row["attempts"]) == \
            (before[i]["state"], before[i]["error_code"], before[i]["address"],
             before[i]["attempts"])

    docs = {d["detail_id"]: d for d in documents(engine)}
    gone = {docs[i]["id"] for i in ids["old"]}
    for i in ids["old"]:
        assert docs[i]["content"] is None and docs[i]["purged_by"] == "retention"
    for i in ids["new"] + ids["letters"] + ids["pending"]:  # financial letters: 3000 days
        assert docs[i]["content"] is not None and docs[i]["purged_at"] is None
    assert _objects(settings, engine, all_docs) == all_docs - gone  # gone from the store too
    with pytest.raises(DocumentRemovedError, match="removed by the retention policy on"):
        fetch_document(settings, engine, docs[ids["old"][0]]["id"])

    with engine.connect() as conn:
        links = set(conn.execute(select(tracking_links_t.c.detail_id)).scalars())
        events = {r.detail_id: r for r in conn.execute(select(tracking_events_t))}
        logged = {r.detail_id: r for r in conn.execute(select(comms_t))}
        assert conn.execute(select(func.count()).select_from(transitions_t)).scalar() \
            == transitions
    assert links == set(ids["new"])
    for i in ids["old"]:  # the click is still counted; who clicked and where is gone
        assert (events[i].kind, events[i].user_agent, events[i].link_id) == ("click", None, None)
        assert (logged[i].content, logged[i].subject, logged[i].purged_by) == \
            (None, None, "retention")
    assert events[ids["new"][0]].user_agent == "Browser/1.0"
    assert logged[ids["new"][0]].content == "the body"

    assert run_job("retention-sweep", swept, engine) == 0  # nothing more is due
    with engine.begin() as conn:  # a purged entry is not sent again
        result = retry_entries(conn, [ids["letters"][0]], force=True)
    assert "removed by the retention policy" in result.refused[ids["letters"][0]]


def test_sweep_with_s3(db_url, s3_bucket, make_engine_for):
    settings, engine = make_engine_for(db_url, **s3_bucket.env())
    ids = _seed(settings, engine)
    _check_sweep(settings, engine, ids)
    # Agents are told why the content is gone, not shown an error.
    api = client(settings, engine)
    agent = bearer(role_key(engine, "agent"))
    notice = f"removed by the retention policy on {utcnow():%Y-%m-%d}"
    items = {i["id"]: i for i in api.get("/v1/contacts/C-1/communications",
                                         headers=agent).json()["items"]}
    assert {items[i]["removed"] for i in ids["old"]} == {notice}
    assert items[ids["new"][0]]["removed"] is None
    log = api.get("/v1/contacts/C-1/log", headers=agent).json()["items"]
    assert {e["removed"] for e in log if e["queue_entry_id"] in ids["old"]} == {notice}
    doc = next(d for d in documents(engine) if d["detail_id"] == ids["old"][0])
    gone = api.get(f"/v1/documents/{doc['id']}", headers=agent)
    assert gone.status_code == 410 and gone.json()["code"] == "document_removed", gone.json()
    link = api.get(f"/v1/documents/{doc['id']}/link", headers=agent)
    assert link.status_code == 410 and notice in link.json()["message"], link.json()


def test_sweep_with_sftp(sqlite_url, sftp_server, make_engine_for):
    settings, engine = make_engine_for(sqlite_url, **sftp_server.env(
        "storage", sftp_server.known_hosts))
    _check_sweep(settings, engine, _seed(settings, engine))


def test_default_keeps_everything(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    ids = _seed(settings, engine)
    assert not settings.retention.configured
    assert stage_backlog("retention-sweep", settings, engine) == 0
    assert run_job("retention-sweep", settings, engine) == 0
    assert all(r["purged_at"] is None and r["subject"]
               for r in details(engine, sum(ids.values(), [])).values())
    assert all(d["content"] is not None and d["purged_at"] is None for d in documents(engine))


def test_a_store_that_fails_leaves_its_documents_for_the_next_run(sqlite_url, s3_bucket,
                                                                  make_engine_for):
    settings, engine = make_engine_for(sqlite_url, **s3_bucket.env())
    ids = _seed(settings, engine)
    down, _ = make_engine_for(sqlite_url, **s3_bucket.env(
        endpoint_url=f"http://127.0.0.1:{free_port()}", attempts="1", timeout="2"))
    rules = RetentionSettings(bodies={"*": 7}, documents={"*": 7})
    assert run_job("retention-sweep", _with(down, rules), engine) == 4  # one pass, no loop
    docs = {d["detail_id"]: d for d in documents(engine)}
    assert all(docs[i]["content"] is not None and docs[i]["purged_at"] is None
               for i in ids["old"] + ids["letters"])
    assert all(r["body"] is None for r in details(engine, ids["old"]).values())
    assert run_job("retention-sweep", _with(settings, rules), engine) == 4  # the store is back
    docs = {d["detail_id"]: d for d in documents(engine)}
    assert all(docs[i]["content"] is None for i in ids["old"] + ids["letters"])


def test_rules_most_specific_wins():
    rules = RetentionSettings(documents={"*": 1, "letter": 2, "*.financial": 3,
                                         "letter.financial": 4})
    assert rules.days("documents", "letter", "financial") == 4
    assert rules.days("documents", "email", "financial") == 3
    assert rules.days("documents", "letter", None) == 2
    assert rules.days("documents", "sms", "marketing") == 1
    assert rules.days("bodies", "sms", None) is None
    with pytest.raises(ValueError, match="unknown media 'fax'"):
        RetentionSettings(bodies={"fax": 1})


def test_a_document_waiting_for_storage_is_removed_once_stored(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    ids = add_entries(engine, "email", 2, state="completed")
    with engine.begin() as conn:
        conn.execute(update(details_t).values(created_at=utcnow() - timedelta(days=10)))
    swept = _with(settings, RetentionSettings(documents={"*": 7}))
    assert run_job("retention-sweep", swept, engine) == 0  # the Storage daemon may hold them
    assert all(d["content"] is not None for d in documents(engine))
    assert run_once(settings, engine) == 2
    assert run_job("retention-sweep", swept, engine) == 2
    assert all(d["content"] is None and d["purged_by"] == "retention"
               for d in documents(engine))
    assert not any((settings.var_dir / "store").rglob("*.eml"))  # the stored files too
    assert all(r["purged_at"] is None for r in details(engine, ids).values())  # bodies: kept
