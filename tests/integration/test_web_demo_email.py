"""From a merged email to the Web API: a marketing email made by the real Comms Monitor and
Email Monitor jobs, whose List-Unsubscribe (RFC 8058 one-click) and body opt-out link act
through the API, and whose HTML, put through the tracking rewrite, is tracked."""

from __future__ import annotations

import email
import html
import re
from email import policy
from urllib.parse import urlsplit

from sqlalchemy import select

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact, save_template
from comms_pipeline.pipeline.tracking import rewrite_html_for_tracking
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import build_job
from comms_pipeline.store.models import LinkAction, contacts_t, details_t, documents_t
from tests.integration.web_support import client, with_sections

BODY = ('<p>Dear #contact_information.name, see <a href="https://shop.example/offers/spring">'
        "our spring offer</a>.</p><p>#dynamic_link.opt_out_direct_marketing</p>")


def _merge(settings, engine) -> dict[str, tuple[int, email.message.EmailMessage]]:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        for ref, address in (("C-A", "anna@example.com"), ("C-B", "bob@example.com")):
            add_contact(conn, ref, f"Person {ref}", language="en", direct_marketing=True,
                        addresses=[AddressSpec("email", address, is_primary=True)])
        save_template(conn, TemplateSpec("SPRING", "Spring offer", "email",
                                         classification="marketing",
                                         variants=[VariantSpec("en", "Spring offer", BODY)]))
    for ref in ("C-A", "C-B"):
        trigger(engine, contact_ref=ref, template_code="SPRING")
    for job in ("monitor", "email-monitor"):
        Runner(settings, engine, build_job(job, settings, engine), once=True).run()
    with engine.connect() as conn:
        rows = conn.execute(select(details_t.c.id, details_t.c.address, documents_t.c.content)
                            .join(documents_t, documents_t.c.detail_id == details_t.c.id))
        return {r.address: (r.id, email.message_from_bytes(bytes(r.content),
                                                           policy=policy.default))
                for r in rows}


def _opted_in(engine, ref: str) -> bool:  # type: ignore[no-untyped-def]
    t = contacts_t
    with engine.connect() as conn:
        return conn.execute(select(t.c.opt_in_direct_marketing).where(t.c.ref == ref)
                            ).scalar_one()


def test_a_merged_marketing_email_acts_through_the_api(settings, engine):
    cfg = with_sections(settings, links={"redirection_url": "https://www.example.com/bye"},
                        web={"tracking": "all", "tracking_base_url": "https://t.example.com"})
    mails = _merge(cfg, engine)
    api = client(cfg, engine)

    # 1. Anna's mail client unsubscribes with one click: no cookie, no page.
    anna_id, anna = mails["anna@example.com"]
    url = urlsplit(anna["List-Unsubscribe"].strip("<>"))
    r = api.post(f"{url.path}?{url.query}", content=anna["List-Unsubscribe-Post"].encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert _opted_in(engine, "C-A") is False and _opted_in(engine, "C-B") is True
    with engine.connect() as conn:
        [action] = conn.execute(select(LinkAction.__table__)).mappings().all()
    assert action["detail_id"] == anna_id

    # 2. Bob follows the opt-out link in the body: a page first, the change on POST.
    bob_id, bob = mails["bob@example.com"]
    html_part = bob.get_body(preferencelist=("html",)).get_content()
    link = html.unescape(re.search(r'href="([^"]*/links/opt_out_direct_marketing[^"]*)"',
                                   html_part).group(1))
    link = urlsplit(link)
    page = api.get(f"{link.path}?{link.query}")
    assert page.status_code == 200 and _opted_in(engine, "C-B") is True
    done = api.post(f"{link.path}?{link.query}", follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "https://www.example.com/bye"
    assert _opted_in(engine, "C-B") is False

    # 3. The same HTML through the tracking rewrite: the shop link is tracked, the opt-out
    #    link is left alone, and a click lands on the shop.
    with engine.begin() as conn:
        tracked = rewrite_html_for_tracking(conn, bob_id, html_part, cfg)
    click = re.search(r"https://t\.example\.com(/t/c/[\w-]+)", tracked).group(1)
    assert "/links/opt_out_direct_marketing" in tracked
    r = api.get(click, follow_redirects=False)
    assert r.headers["location"] == "https://shop.example/offers/spring"
