"""The communication queue over HTTP: an external system pulls its own entries and completes,
rejects or removes them; nobody else's entries are visible; transitions are compare-and-set."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import insert, update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.apikeys import rotate_system_key
from comms_pipeline.store.models import details_t, documents_t, keys_t
from tests.integration.details_factory import transitions
from tests.integration.documents_factory import make_eml
from tests.integration.web_support import (
    add_system,
    bearer,
    client,
    detail,
    external_entries,
    role_key,
)


@pytest.fixture
def api(settings, engine):
    return client(settings, engine)


@pytest.fixture
def two_systems(engine):
    a_id, a_key = add_system(engine, "PORTAL")
    b_id, b_key = add_system(engine, "CAS")
    return {"a": (a_id, bearer(a_key)), "b": (b_id, bearer(b_key))}


def test_every_queue_call_needs_a_valid_key(api, engine, two_systems):
    (a_id, a_auth) = two_systems["a"]
    [entry] = external_entries(engine, a_id, 1)
    for headers in ({}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": "Bearer cp_000000000000_wrong"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = api.get("/v1/queue", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "unauthorized"
        assert set(r.json()) == {"code", "message", "details"}
    assert api.post(f"/v1/queue/{entry}/complete").status_code == 401
    assert detail(engine, entry)["state"] == "awaiting_external"
    assert api.get("/health").json() == {"status": "ok", "database": "ok"}


def test_a_rotated_key_stops_working_and_the_new_one_works(api, engine, two_systems):
    with engine.begin() as conn:
        new = rotate_system_key(conn, "PORTAL")
    assert api.get("/v1/queue", headers=two_systems["a"][1]).status_code == 401
    assert "revoked" in api.get("/v1/queue", headers=two_systems["a"][1]).json()["message"]
    assert api.get("/v1/queue", headers=bearer(new.key)).status_code == 200


def test_keys_are_stored_hashed_and_found_by_prefix(engine, two_systems):

    key = two_systems["a"][1]["Authorization"].split()[1]
    t = keys_t
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(t.select())]
    stored = [r for r in rows if key.split("_")[1] == r["prefix"]]
    assert len(stored) == 1
    assert stored[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(v) for r in rows for v in r.values())


def test_a_system_sees_and_changes_only_its_own_entries(api, engine, two_systems):
    (a_id, a_auth), (b_id, _) = two_systems["a"], two_systems["b"]
    mine = external_entries(engine, a_id, 3)
    theirs = external_entries(engine, b_id, 2)
    listed = api.get("/v1/queue", headers=a_auth).json()
    assert [e["id"] for e in listed["items"]] == mine
    assert {e["external_system"] for e in listed["items"]} == {"PORTAL"}
    for path in (f"/v1/queue/{theirs[0]}",):
        r = api.get(path, headers=a_auth)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    for action, body in (("complete", None), ("reject", {"code": "X", "description": "no"}),
                         ("remove", None)):
        r = api.post(f"/v1/queue/{theirs[0]}/{action}", headers=a_auth, json=body)
        assert r.status_code == 404, action
    assert detail(engine, theirs[0])["state"] == "awaiting_external"
    # An admin sees both systems' entries; an agent key may not use the queue.
    admin = bearer(role_key(engine, "admin"))
    assert len(api.get("/v1/queue", headers=admin).json()["items"]) == 5
    agent = bearer(role_key(engine, "agent"))
    r = api.get("/v1/queue", headers=agent)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_pull_then_complete_reject_remove(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    e1, e2, e3, e4 = external_entries(engine, a_id, 4)
    got = api.get(f"/v1/queue/{e1}", headers=auth).json()
    assert got["state"] == "Pending" and got["body"] == '{"n": 0}'
    assert got["subject"] == "Entry 0" and got["contact_ref"] == "C-1"

    r = api.post(f"/v1/queue/{e1}/complete", headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "Completed"
    assert r.json()["completed_at"].endswith("Z") or "+00:00" in r.json()["completed_at"]
    r = api.post(f"/v1/queue/{e2}/reject", headers=auth,
                 json={"code": "CAS-17", "description": "smart card not paired"})
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["error_code"], r.json()["error_description"]) == \
        ("Rejected", "CAS-17", "smart card not paired")
    assert api.post(f"/v1/queue/{e1}/remove", headers=auth).json()["state"] == \
        "Completed and Removed"
    assert api.post(f"/v1/queue/{e3}/remove", headers=auth).json()["state"] == \
        "Completed and Removed"

    # Not from Rejected, not twice: 409 with the reason, and nothing changes.
    r = api.post(f"/v1/queue/{e2}/remove", headers=auth)
    assert r.status_code == 409
    assert r.json()["code"] == "conflict" and "Rejected" in r.json()["message"]
    assert r.json()["details"] == {"state": "Rejected"}
    assert api.post(f"/v1/queue/{e1}/complete", headers=auth).status_code == 409
    assert api.post(f"/v1/queue/{e3}/reject", headers=auth,
                    json={"code": "X", "description": "late"}).status_code == 409

    states = {s: [e["id"] for e in api.get("/v1/queue", params={"state": s},
                                            headers=auth).json()["items"]]
              for s in ("Pending", "Completed", "Rejected", "Completed and Removed")}
    assert states == {"Pending": [e4], "Completed": [], "Rejected": [e2],
                      "Completed and Removed": [e1, e3]}
    assert transitions(engine, e1) == [("awaiting_external", "completed"),
                                       ("completed", "completed_removed")]


def test_reject_explains_bad_bodies(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    [entry] = external_entries(engine, a_id, 1)
    r = api.post(f"/v1/queue/{entry}/reject", headers=auth, json={"code": "X"})
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_request"
    assert "description" in r.json()["message"]
    assert r.json()["details"][0]["field"] == "body.description"
    assert api.get("/v1/queue/abc", headers=auth).status_code == 422
    assert api.get("/v1/queue", params={"state": "Expired"}, headers=auth).status_code == 422


def test_listing_filters_pages_and_skips_expired(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    now = utcnow()
    firsts = external_entries(engine, a_id, 5, contact_ref="C-1")
    others = external_entries(engine, a_id, 2, contact_ref="C-2", media="email")
    expired = external_entries(engine, a_id, 1, expires_at=now - timedelta(minutes=1))
    urgent = external_entries(engine, a_id, 1, priority=1)

    by_contact = api.get("/v1/queue", params={"contact": "C-2"}, headers=auth).json()
    assert [e["id"] for e in by_contact["items"]] == others
    by_media = api.get("/v1/queue", params={"media": "email"}, headers=auth).json()
    assert [e["id"] for e in by_media["items"]] == others

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/queue", params=params, headers=auth).json()
        seen += [e["id"] for e in page["items"]]
        if len(seen) == 2:
            # The last entry of the page leaves the listing: the cursor still holds.
            assert api.post(f"/v1/queue/{seen[-1]}/complete", headers=auth).status_code == 200
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == urgent + firsts + others
    assert expired[0] not in seen
    assert api.get(f"/v1/queue/{expired[0]}", headers=auth).json()["state"] == "Expired"
    r = api.post(f"/v1/queue/{expired[0]}/complete", headers=auth)
    assert r.status_code == 409 and "expired" in r.json()["message"]

    r = api.get("/v1/queue", params={"cursor": "not-a-cursor"}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    other_filter = api.get("/v1/queue", params={"limit": 1, "media": "email"},
                           headers=auth).json()["next_cursor"]
    r = api.get("/v1/queue", params={"cursor": other_filter}, headers=auth)
    assert r.status_code == 422


def test_an_email_entry_shows_its_stored_message(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    [entry] = external_entries(engine, a_id, 1, media="email", body="Hello text")
    eml = make_eml("c-1@example.com", subject="Your bill", body="Hello there")
    with engine.begin() as conn:
        conn.execute(insert(documents_t).values(
            detail_id=entry, kind="email", content_type="message/rfc822", content=eml,
            size=len(eml), sha256=hashlib.sha256(eml).hexdigest(), created_at=utcnow()))
    got = api.get(f"/v1/queue/{entry}", headers=auth).json()
    assert got["body"] == "Hello text"
    assert "<p>Hello there</p>" in got["html"]
    assert got["document"]["content_type"] == "message/rfc822"
    r = api.get(f"/v1/queue/{entry}/document", headers=auth)
    assert r.status_code == 200 and r.content == eml
    other = bearer(add_system(engine, "OTHER")[1])
    assert api.get(f"/v1/queue/{entry}/document", headers=other).status_code == 404


def test_idempotency_key_replays_the_first_answer(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    e1, e2 = external_entries(engine, a_id, 2)
    first = api.post(f"/v1/queue/{e1}/complete", headers={**auth, "Idempotency-Key": "k-1"})
    again = api.post(f"/v1/queue/{e1}/complete", headers={**auth, "Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(transitions(engine, e1)) == 1
    # The same key for another request is refused; the other entry is untouched.
    r = api.post(f"/v1/queue/{e2}/complete", headers={**auth, "Idempotency-Key": "k-1"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert detail(engine, e2)["state"] == "awaiting_external"
    body = {"code": "E1", "description": "first"}
    r1 = api.post(f"/v1/queue/{e2}/reject", headers={**auth, "Idempotency-Key": "k-2"},
                  json=body)
    r2 = api.post(f"/v1/queue/{e2}/reject", headers={**auth, "Idempotency-Key": "k-2"},
                  json={"code": "E1", "description": "different"})
    assert r1.status_code == 200 and r2.status_code == 422
    # A refusal is an answer too: replayed as it was, even after the state changed.
    c1 = api.post(f"/v1/queue/{e2}/complete", headers={**auth, "Idempotency-Key": "k-3"})
    assert c1.status_code == 409
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == e2)
                     .values(state="awaiting_external"))
    c2 = api.post(f"/v1/queue/{e2}/complete", headers={**auth, "Idempotency-Key": "k-3"})
    assert (c2.status_code, c2.json()) == (409, c1.json())
    assert detail(engine, e2)["state"] == "awaiting_external"
    # Keys are per API key: another system's "k-1" is its own.
    b_id, b_auth = two_systems["b"]
    [b1] = external_entries(engine, b_id, 1)
    r = api.post(f"/v1/queue/{b1}/complete", headers={**b_auth, "Idempotency-Key": "k-1"})
    assert r.status_code == 200


def test_a_claimed_entry_is_not_changed_under_its_daemon(api, engine, two_systems):
    a_id, auth = two_systems["a"]
    [entry] = external_entries(engine, a_id, 1)
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == entry).values(
            claimed_by="push-external-1", lease_until=utcnow() + timedelta(minutes=5)))
    r = api.post(f"/v1/queue/{entry}/complete", headers=auth)
    assert r.status_code == 409 and "being delivered" in r.json()["message"]


def test_a_batch_acknowledges_many_entries_each_on_its_own(api, engine, two_systems):
    (a_id, auth), (b_id, _) = two_systems["a"], two_systems["b"]
    e1, e2, e3 = external_entries(engine, a_id, 3)
    [foreign] = external_entries(engine, b_id, 1)
    api.post(f"/v1/queue/{e3}/reject", headers=auth, json={"code": "X", "description": "y"})
    body = {"actions": [{"id": e1, "action": "complete"},
                        {"id": e2, "action": "reject", "code": "E9", "description": "refused"},
                        {"id": e3, "action": "remove"},
                        {"id": foreign, "action": "complete"}]}
    r = api.post("/v1/queue/batch", headers={**auth, "Idempotency-Key": "b-1"}, json=body)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [(x["id"], x["status"], x["state"]) for x in results] == [
        (e1, 200, "Completed"), (e2, 200, "Rejected"), (e3, 409, "Rejected"),
        (foreign, 404, None)]
    assert "only a Completed or Pending entry" in results[2]["message"]
    assert detail(engine, e2)["error_code"] == "E9"
    assert detail(engine, foreign)["state"] == "awaiting_external"
    replay = api.post("/v1/queue/batch", headers={**auth, "Idempotency-Key": "b-1"}, json=body)
    assert replay.json() == r.json() and len(transitions(engine, e1)) == 1
    bad = api.post("/v1/queue/batch", headers=auth,
                   json={"actions": [{"id": e1, "action": "reject"}]})
    assert bad.status_code == 422 and "code and description" in bad.json()["message"]
    assert api.post("/v1/queue/batch", headers=auth, json={"actions": []}).status_code == 422
