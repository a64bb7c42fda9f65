"""The open pixel against hostile and stale tokens, through HTTP on SQLite and PostgreSQL.

A pixel token expires with the dynamic links (``[links] max_age_days``); one that is validly
signed but holds no usable detail id answers the same GIF as any other, records nothing and
never fails the request.
"""

from __future__ import annotations

import time

import itsdangerous.timed
from sqlalchemy import select

from comms_pipeline.pipeline.tracking import Tracker
from comms_pipeline.store.models import tracking_events_t
from tests.integration.web_support import client, external_entries, with_sections

BASE = "https://t.example.com"


def _cfg(settings, **links):  # type: ignore[no-untyped-def]
    return with_sections(settings, web={"tracking": "all", "tracking_base_url": BASE},
                         links=links)


def _events(engine) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    t = tracking_events_t
    with engine.connect() as conn:
        return [(r.detail_id, r.kind) for r in conn.execute(select(t))]


def test_a_pixel_token_expires_with_the_links(settings, engine, monkeypatch) -> None:
    cfg = _cfg(settings, max_age_days=2)
    [entry] = external_entries(engine, None, 1, media="email", state="completed")
    tracker = Tracker(cfg)
    fresh = tracker.open_token(entry)
    three_days_ago = time.time() - 3 * 86400
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: three_days_ago)
    stale = tracker.open_token(entry)
    monkeypatch.undo()
    api = client(cfg, engine)
    r = api.get(f"/t/o/{stale}.gif")
    assert r.status_code == 200 and r.content.startswith(b"GIF89a")
    assert _events(engine) == []
    assert api.get(f"/t/o/{fresh}.gif").status_code == 200
    assert _events(engine) == [(entry, "open")]


def test_a_signed_token_without_a_usable_detail_records_nothing(settings, engine) -> None:
    cfg = _cfg(settings)
    external_entries(engine, None, 1, media="email", state="completed")
    api, tracker = client(cfg, engine), Tracker(cfg)
    for payload in (10 ** 30, 2 ** 63, -1, 0, True, "1", [1], {"id": 1}, None, 1.5):
        r = api.get(f"/t/o/{tracker.signer.dumps(payload)}.gif")
        assert r.status_code == 200 and r.content.startswith(b"GIF89a"), payload
    assert _events(engine) == []


def test_a_signed_but_unreadable_token_answers_the_pixel(settings, engine) -> None:
    cfg = _cfg(settings)
    tracker = Tracker(cfg)
    signer = tracker.signer.make_signer(tracker.signer.salt)
    api = client(cfg, engine)
    for raw in (b"not-json", b"eyJub3QiOiJqc29u", b"\xff\xfe"):
        token = signer.sign(itsdangerous.encoding.base64_encode(raw)).decode()
        r = api.get(f"/t/o/{token}.gif")
        assert r.status_code == 200 and r.content.startswith(b"GIF89a"), raw
    assert _events(engine) == []
