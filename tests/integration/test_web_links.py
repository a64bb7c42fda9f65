"""Dynamic links: GET confirms and changes nothing, POST acts once and redirects to the
configured URL, RFC 8058 one-click works without cookies, bad tokens are refused."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.store.models import contacts_t, details_t, link_actions_t
from tests.integration.web_support import (
    add_system,
    bearer,
    client,
    ensure_contact,
    external_entries,
    with_sections,
)

THANKS = "https://www.example.com/thanks"
OPT_OUT = "opt_out_direct_marketing"


@pytest.fixture
def cfg(settings):
    return with_sections(settings, links={"redirection_url": THANKS},
                         web={"service_request_system": "CRM"})


@pytest.fixture
def api(cfg, engine):
    ensure_contact(engine, "C-1", direct_marketing=True)
    return client(cfg, engine)


@pytest.fixture
def links(cfg):
    return LinkBuilder.from_settings(cfg)


def _contact(engine, ref="C-1"):  # type: ignore[no-untyped-def]
    t = contacts_t
    with engine.connect() as conn:
        return conn.execute(select(t).where(t.c.ref == ref)).mappings().one()


def _actions(engine):  # type: ignore[no-untyped-def]
    t = link_actions_t
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.id)).mappings()]


def test_get_confirms_and_changes_nothing_post_acts_and_redirects(api, engine, links):
    token = links.token(OPT_OUT, "C-1")
    r = api.get(f"/links/{OPT_OUT}", params={"t": token})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in r.text and "Unsubscribe" in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert _contact(engine)["opt_in_direct_marketing"] is True
    assert _actions(engine) == []

    r = api.post(f"/links/{OPT_OUT}", params={"t": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == THANKS
    assert "set-cookie" not in r.headers
    assert _contact(engine)["opt_in_direct_marketing"] is False
    [action] = _actions(engine)
    assert action["action"] == OPT_OUT and token not in str(action)

    # Once only: the second POST is refused, and GET says it is done.
    r = api.post(f"/links/{OPT_OUT}", params={"t": token}, follow_redirects=False)
    assert r.status_code == 409 and "already used" in r.text
    assert "already used" in api.get(f"/links/{OPT_OUT}", params={"t": token}).text
    assert len(_actions(engine)) == 1


def test_opt_in_links_set_each_flag(api, engine, links):
    for action, column, value in (("opt_in_affiliate_marketing",
                                   "opt_in_affiliate_marketing", True),
                                  ("opt_out_affiliate_marketing",
                                   "opt_in_affiliate_marketing", False),
                                  ("opt_in_direct_marketing", "opt_in_direct_marketing", True)):
        r = api.post(f"/links/{action}", params={"t": links.token(action, "C-1")},
                     follow_redirects=False)
        assert r.status_code == 303, action
        assert _contact(engine)[column] is value, action


def test_rfc8058_one_click_unsubscribe(api, engine, links):
    [entry] = external_entries(engine, None, 1, media="email", state="completed")
    token = links.token(OPT_OUT, "C-1", str(entry))  # as the Email Monitor makes it
    r = api.post("/links/unsubscribe", params={"t": token},
                 content=b"List-Unsubscribe=One-Click",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert _contact(engine)["opt_in_direct_marketing"] is False
    [action] = _actions(engine)
    assert action["detail_id"] == entry
    # A mail provider's retry is answered the same and acts no more.
    again = api.post("/links/unsubscribe", params={"t": token},
                     content=b"List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.status_code == 200 and len(_actions(engine)) == 1


def test_one_click_as_multipart_form(api, engine, links):
    boundary = "XyZ123"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\""
            f"\r\n\r\nOne-Click\r\n--{boundary}--\r\n").encode()
    r = api.post("/links/unsubscribe", params={"t": links.token(OPT_OUT, "C-1")},
                 content=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200
    assert _contact(engine)["opt_in_direct_marketing"] is False


def test_service_request_acceptance_is_pushed_to_the_external_system(api, engine, links):
    system_id, key = add_system(engine, "CRM")
    action = "service_request_response_acceptance"
    r = api.post(f"/links/{action}", params={"t": links.token(action, "C-1", "SR-77")},
                 follow_redirects=False)
    assert r.status_code == 303
    [recorded] = _actions(engine)
    assert recorded["action"] == action and recorded["data"]["subject"] == "SR-77"
    entry_id = recorded["data"]["queue_entry"]
    pulled = client(api.app.state.settings, engine).get(
        "/v1/queue", headers=bearer(key)).json()["items"]
    assert [e["id"] for e in pulled] == [entry_id]
    got = client(api.app.state.settings, engine).get(f"/v1/queue/{entry_id}",
                                                     headers=bearer(key)).json()
    assert '"service_request": "SR-77"' in got["body"]
    assert got["external_system"] == "CRM" and got["contact_ref"] == "C-1"
    with engine.connect() as conn:
        assert conn.execute(select(details_t.c.external_system_id).where(
            details_t.c.id == entry_id)).scalar_one() == system_id


def test_wrong_purpose_expired_and_missing_tokens_are_refused(api, engine, links, monkeypatch):
    opt_in = links.token("opt_in_direct_marketing", "C-1")
    for method in (api.get, api.post):
        assert method(f"/links/{OPT_OUT}", params={"t": opt_in}).status_code == 400
        assert method(f"/links/{OPT_OUT}").status_code == 400
        assert method("/links/transfer_money", params={"t": opt_in}).status_code == 404
    r = api.post(f"/links/{OPT_OUT}", params={"t": opt_in},
                 headers={"Accept": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"code": "invalid_link", "message": r.json()["message"],
                        "details": None}

    import itsdangerous.timed

    old = time.time() - 40 * 86400  # older than the 30 days a link lives
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: old)
    expired = links.token(OPT_OUT, "C-1")
    monkeypatch.undo()
    r = api.post(f"/links/{OPT_OUT}", params={"t": expired}, follow_redirects=False)
    assert r.status_code == 410 and "expired" in r.text
    assert _contact(engine)["opt_in_direct_marketing"] is True
    assert _actions(engine) == []


def test_tampered_tokens_never_act(api, engine, links):
    token = links.token(OPT_OUT, "C-1")
    other = links.token(OPT_OUT, "C-2")
    ensure_contact(engine, "C-2", direct_marketing=True)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

    @hsettings(max_examples=60, deadline=None, database=None)
    @given(st.data())
    def tamper(data):  # type: ignore[no-untyped-def]
        kind = data.draw(st.sampled_from(["replace", "splice", "truncate"]))
        if kind == "replace":
            i = data.draw(st.integers(0, len(token) - 1))
            forged = token[:i] + data.draw(st.sampled_from(alphabet)) + token[i + 1:]
        elif kind == "splice":  # another contact's payload with this token's signature
            forged = other.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1]
        else:
            forged = token[:data.draw(st.integers(1, len(token) - 1))]
        if forged == token:
            return
        try:
            same = links.verify(forged, OPT_OUT)
        except Exception:
            same = None
        r = api.post(f"/links/{OPT_OUT}", params={"t": forged}, follow_redirects=False)
        if same is not None:  # only base64's spare bits changed: it *is* the same token
            assert same.contact_ref == "C-1"
            return
        assert r.status_code == 400, (kind, forged)

    tamper()
    assert _contact(engine, "C-2")["opt_in_direct_marketing"] is True
    assert all(a["contact_id"] != _contact(engine, "C-2")["id"] for a in _actions(engine))
