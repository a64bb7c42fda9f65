"""Open pixel and click tracking: links rewritten at merge, redirects only to recorded URLs,
events per communication, and the all / notification-runs-only / off settings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from comms_pipeline.cli.notifications import report_chart
from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.tracking import Tracker, rewrite_html_for_tracking, strip_pixel
from comms_pipeline.store.models import (
    Notification,
    NotificationRun,
    NotificationType,
    details_t,
    tracking_events_t,
    tracking_links_t,
)
from tests.integration.web_support import (
    bearer,
    client,
    external_entries,
    role_key,
    with_sections,
)

BASE = "https://t.example.com"
HTML = ('<html><body><p>Dear Maria, <a class="cta" href="https://shop.example.com/offer?a=1&amp;'
        'b=2">see the offer</a>, <a href=\'http://help.example.com/\'>help</a>, '
        '<a href="mailto:care@example.com">write</a>, <a href="javascript:alert(1)">x</a>, '
        '<a href="#top">top</a>, <a href="http://127.0.0.1:8000/links/opt_out_direct_marketing'
        '?t=abc">unsubscribe</a></p></body></html>')


def _tracked_settings(settings, mode="all"):  # type: ignore[no-untyped-def]
    return with_sections(settings, web={"tracking": mode, "tracking_base_url": BASE})


def _events(engine):  # type: ignore[no-untyped-def]
    t = tracking_events_t
    with engine.connect() as conn:
        return [(r.detail_id, r.kind, r.link_id) for r in conn.execute(
            select(t).order_by(t.c.id))]


def _rewrite(engine, cfg, detail_id, html=HTML):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return rewrite_html_for_tracking(conn, detail_id, html, cfg)


def test_links_are_rewritten_and_a_pixel_added(settings, engine):
    cfg = _tracked_settings(settings)
    [entry] = external_entries(engine, None, 1, media="email", state="completed")
    out = _rewrite(engine, cfg, entry)
    clicks = re.findall(rf'href="{re.escape(BASE)}/t/c/([A-Za-z0-9_-]+)"', out)
    assert len(clicks) == 2
    assert 'class="cta"' in out and "see the offer" in out
    # Not rewritten: mailto, javascript, anchors, and the dynamic (unsubscribe) link.
    for kept in ('href="mailto:care@example.com"', 'href="javascript:alert(1)"',
                 'href="#top"', "links/opt_out_direct_marketing?t=abc"):
        assert kept in out
    assert re.search(rf'<img src="{re.escape(BASE)}/t/o/[^"]+\.gif"[^>]*></body>', out)
    t = tracking_links_t
    with engine.connect() as conn:
        recorded = {r.id: r.url for r in conn.execute(select(t))}
    assert recorded == {clicks[0]: "https://shop.example.com/offer?a=1&b=2",
                        clicks[1]: "http://help.example.com/"}
    assert "/t/o/" not in strip_pixel(out, cfg)


def test_opens_and_clicks_are_recorded_per_communication(settings, engine):
    cfg = _tracked_settings(settings)
    entry, other = external_entries(engine, None, 2, media="email", state="completed")
    out = _rewrite(engine, cfg, entry)
    api = client(cfg, engine)
    pixel = re.search(rf'{re.escape(BASE)}(/t/o/[^"]+\.gif)', out).group(1)
    click_id = re.search(r"/t/c/([A-Za-z0-9_-]+)", out).group(1)

    r = api.get(pixel, headers={"User-Agent": "MailApp/1.0"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert r.content.startswith(b"GIF89a") and "no-store" in r.headers["cache-control"]
    r = api.get(f"/t/c/{click_id}", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example.com/offer?a=1&b=2"
    assert _events(engine) == [(entry, "open", None), (entry, "click", click_id)]

    agent = bearer(role_key(engine, "agent"))
    items = api.get("/v1/contacts/C-1/communications", headers=agent).json()["items"]
    by_id = {i["id"]: i["tracking"] for i in items}
    assert (by_id[entry]["opens"], by_id[entry]["clicks"]) == (1, 1)
    assert (by_id[other]["opens"], by_id[other]["clicks"]) == (0, 0)
    events = api.get(f"/v1/communications/{entry}/tracking", headers=agent).json()
    assert [(e["kind"], e["url"]) for e in events] == [
        ("open", None), ("click", "https://shop.example.com/offer?a=1&b=2")]
    assert events[0]["user_agent"] == "MailApp/1.0"


def test_the_click_endpoint_is_no_open_redirect(settings, engine):
    cfg = _tracked_settings(settings)
    [entry] = external_entries(engine, None, 1, media="email", state="completed")
    click_id = re.search(r"/t/c/([A-Za-z0-9_-]+)", _rewrite(engine, cfg, entry)).group(1)
    api = client(cfg, engine)
    r = api.get(f"/t/c/{click_id}", params={"url": "https://evil.example/",
                                           "next": "https://evil.example/"},
                follow_redirects=False)
    assert r.headers["location"] == "https://shop.example.com/offer?a=1&b=2"
    for attempt in ("https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example", "evil.example",
                    click_id + "x", click_id[:-1], "..%2F..%2Flinks", "javascript:alert(1)"):
        r = api.get(f"/t/c/{attempt}", follow_redirects=False)
        assert r.status_code == 404, attempt
        assert "location" not in r.headers
    assert [e[1] for e in _events(engine)] == ["click"]


def test_a_tampered_pixel_records_nothing(settings, engine):
    cfg = _tracked_settings(settings)
    [entry] = external_entries(engine, None, 1, media="email", state="completed")
    tracker = Tracker(cfg)
    token = tracker.open_token(entry)
    api = client(cfg, engine)

    @hsettings(max_examples=40, deadline=None, database=None)
    @given(st.integers(0, len(token) - 1), st.sampled_from("ABCabc0189-_."))
    def tamper(position, char):  # type: ignore[no-untyped-def]
        forged = token[:position] + char + token[position + 1:]
        if tracker.opened_detail(forged) == entry:  # only base64's spare bits changed
            return
        assert api.get(f"/t/o/{forged}.gif").status_code == 200
        assert _events(engine) == []

    tamper()
    forged_other = Tracker(cfg).signer.dumps(entry + 1000)  # a real signature, no such detail
    assert api.get(f"/t/o/{forged_other}.gif").status_code == 200
    assert _events(engine) == []


def _notification(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A notification (and its run): ``(notification id, run id)``."""
    now = utcnow()
    with engine.begin() as conn:
        type_id = conn.execute(insert(NotificationType.__table__).values(
            code="DUNNING", name="Dunning", classification="financial", entity="invoice",
            template_code="DUN", created_at=now).returning(NotificationType.id)).scalar_one()
        run_id = conn.execute(insert(NotificationRun.__table__).values(
            type_id=type_id, status="done", started_at=now).returning(NotificationRun.id)
        ).scalar_one()
        return conn.execute(insert(Notification.__table__).values(
            run_id=run_id, type_id=type_id, number="N-1", recipient_key="C-1",
            contact_ref="C-1", created_at=now).returning(Notification.id)).scalar_one(), run_id


@pytest.mark.parametrize("mode, tracked", [("all", {"run", "plain"}),
                                           ("notification_runs", {"run"}),
                                           ("off", set())])
def test_tracking_mode_chooses_which_emails_are_tracked(settings, engine, mode, tracked):
    cfg = _tracked_settings(settings, mode)
    [run_entry] = external_entries(engine, None, 1, media="email",
                                   notification_id=_notification(engine)[0])
    [plain_entry] = external_entries(engine, None, 1, media="email")
    seen = set()
    for name, entry in (("run", run_entry), ("plain", plain_entry)):
        out = _rewrite(engine, cfg, entry)
        if out != HTML:
            assert "/t/o/" in out
            seen.add(name)
    assert seen == tracked


def test_a_notification_runs_report(settings, engine):
    cfg = _tracked_settings(settings, "notification_runs")
    notification_id, run_id = _notification(engine)
    sent, waiting = external_entries(engine, None, 2, media="email",
                                     notification_id=notification_id)
    with engine.begin() as conn:
        conn.execute(details_t.update().where(details_t.c.id == sent).values(state="completed"))
    api = client(cfg, engine)
    for entry in (sent, waiting):
        out = _rewrite(engine, cfg, entry)
        api.get(re.search(rf'{re.escape(BASE)}(/t/o/[^"]+\.gif)', out).group(1))
        if entry == sent:
            click_id = re.search(r"/t/c/([A-Za-z0-9_-]+)", out).group(1)
            api.get(f"/t/c/{click_id}", follow_redirects=False)
            api.get(f"/t/c/{click_id}", follow_redirects=False)  # twice: one person
    agent = bearer(role_key(engine, "agent"))
    report = api.get(f"/v1/notification-runs/{run_id}/tracking", headers=agent).json()
    assert report == {"run_id": run_id, "communications": 2, "sent": 1, "opened": 2,
                      "clicked": 1}
    # ... and the same report as `comms notifications show-run` draws it.
    chart = report_chart(report, width=10)
    assert chart == ["  communications          2  ##########  100.0%",
                     "  sent                    1  #####        50.0%",
                     "  opened                  2  ##########  100.0%",
                     "  clicked                 1  #####        50.0%"]
    assert api.get("/v1/notification-runs/999/tracking", headers=agent).status_code == 404
