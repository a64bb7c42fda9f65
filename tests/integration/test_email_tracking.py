"""Tracking from a real merge: with tracking on, the Email Monitor rewrites links to opaque
click ids and adds the open pixel; the Web API redirects a click to the recorded URL only."""

from __future__ import annotations

import email
from email import policy

from sqlalchemy import select

from comms_pipeline.core.template_spec import VariantSpec
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import TrackingEvent, TrackingLink, documents_t
from tests import factories
from tests.integration.web_support import client, with_sections

BODY = ('<p>Dear #contact_information.name, see <a href="https://example.com/bill?id=7">your '
        'bill</a>.</p>')


def _merge(settings, engine):
    with engine.begin() as conn:
        factories.contact(conn)
        factories.email_template(conn, variants=[VariantSpec("en", subject="Bill",
                                                             body_html=BODY)])
    trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    run_job("monitor", settings, engine)
    run_job("email-monitor", settings, engine)
    with engine.connect() as conn:
        raw = conn.execute(select(documents_t.c.content)).scalar_one()
    return email.message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()


def test_tracked_email_redirects_only_to_recorded_links(settings, engine):
    settings = with_sections(settings, web={"tracking": "all",
                                            "base_url": "https://comms.example"})
    html = _merge(settings, engine)
    with engine.connect() as conn:
        (link,) = conn.execute(select(TrackingLink.__table__)).all()
    assert link.url == "https://example.com/bill?id=7"
    assert f'href="https://comms.example/t/c/{link.id}"' in html
    assert "example.com/bill" not in html
    assert "https://comms.example/t/o/" in html
    api = client(settings, engine)
    hit = api.get(f"/t/c/{link.id}", follow_redirects=False)
    assert (hit.status_code, hit.headers["location"]) == (302, link.url)
    assert api.get("/t/c/not-a-link?url=https://evil.example",
                   follow_redirects=False).status_code == 404
    with engine.connect() as conn:
        kinds = conn.execute(select(TrackingEvent.__table__.c.kind)).scalars().all()
    assert kinds == ["click"]


def test_untracked_email_keeps_its_links(settings, engine):
    html = _merge(settings, engine)  # tracking is off by default
    assert 'href="https://example.com/bill?id=7"' in html and "/t/o/" not in html
