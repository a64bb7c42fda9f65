"""Dynamic links: signed, expiring, bound to the contact and the action."""

from __future__ import annotations

import stat
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from comms_pipeline.core.dynamic_links import DEFAULT_TEXT, DYNAMIC_LINK_NAMES
from comms_pipeline.pipeline.links import (
    ExpiredLinkError,
    InvalidLinkError,
    LinkBuilder,
    link_secret,
    verify_link,
)
from comms_pipeline.rendering import build_context, compile_template
from comms_pipeline.settings.links import LinkSettings


@pytest.fixture
def builder():
    return LinkBuilder(LinkSettings(endpoint="https://crm.example.com/"), "test-secret")


def _token(url: str) -> str:
    return url.split("?t=", 1)[1]


def test_link_round_trip(builder):
    url = builder.url("opt_out_direct_marketing", "C-1001")
    assert url.startswith("https://crm.example.com/links/opt_out_direct_marketing?t=")
    payload = builder.verify(_token(url), "opt_out_direct_marketing")
    assert (payload.contact_ref, payload.action, payload.subject) == (
        "C-1001", "opt_out_direct_marketing", None)
    sr = builder.verify(builder.token("service_request_response_acceptance", "C-2", "SR-7"),
                        "service_request_response_acceptance")
    assert sr.subject == "SR-7"


def test_tampered_wrong_purpose_foreign_and_expired_tokens_are_refused(builder):
    token = builder.token("opt_in_direct_marketing", "C-1001")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(InvalidLinkError):
        builder.verify(tampered, "opt_in_direct_marketing")
    with pytest.raises(InvalidLinkError):
        builder.verify(token, "opt_out_direct_marketing")
    other = LinkBuilder(LinkSettings(), "another-secret")
    with pytest.raises(InvalidLinkError):
        other.verify(token, "opt_in_direct_marketing")
    with pytest.raises(ExpiredLinkError):
        builder.verify(token, "opt_in_direct_marketing", max_age_seconds=-1)
    with pytest.raises(InvalidLinkError):
        builder.verify("not-a-token", "opt_in_direct_marketing")
    with pytest.raises(InvalidLinkError):
        builder.verify(token, "delete_everything")


def test_settings_validation():
    with pytest.raises(ValidationError, match="unknown dynamic link"):
        LinkSettings(enabled=["win_a_prize"])
    with pytest.raises(ValidationError, match="endpoint or a custom_url"):
        LinkSettings(endpoint="")
    assert LinkSettings(enabled=[], endpoint="").enabled == []
    custom = LinkSettings(custom_url="https://links.example.com/act")
    assert custom.base_url == "https://links.example.com/act"


def test_secret_is_generated_once_and_kept_private(tmp_path):
    first = link_secret(LinkSettings(), tmp_path)
    assert len(first) > 40
    assert link_secret(LinkSettings(), tmp_path) == first
    mode = (tmp_path / "secrets" / "links.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert link_secret(LinkSettings(secret="configured"), tmp_path) == "configured"


def test_verify_link_with_settings(tmp_path):
    settings = SimpleNamespace(var_dir=tmp_path, links=LinkSettings())
    token = LinkBuilder.from_settings(settings).token("opt_out_affiliate_marketing", "C-9")
    assert verify_link(token, "opt_out_affiliate_marketing", settings).contact_ref == "C-9"


def test_tags_render_links_bound_to_the_contact(builder):
    contact = {"ref": "C-1002", "name": "Andreas", "preferred_language": "el"}
    context = build_context(contact=contact, entities={"service_request": {"number": "SR-1"}},
                            params={}, links=builder)
    text = compile_template("#dynamic_link.service_request_response_acceptance").render(context)
    payload = builder.verify(_token(text), "service_request_response_acceptance")
    assert (payload.contact_ref, payload.subject) == ("C-1002", "SR-1")
    html = compile_template("<p>#dynamic_link.opt_out_direct_marketing</p>",
                            html=True).render(context)
    assert html.startswith('<p><a href="https://crm.example.com/links/opt_out_direct_marketing'
                           '?t=')
    assert html.endswith('">Διαγραφή από τις προσφορές</a></p>')
    disabled = compile_template("[#dynamic_link.service_request_final_resolution_acceptance]")
    assert disabled.render(context) == "[]"
    no_request = build_context(contact=contact, entities={}, params={}, links=builder)
    assert compile_template("[#dynamic_link.service_request_response_acceptance]").render(
        no_request) == "[]"
    no_links = build_context(contact=contact, entities={}, params={})
    assert compile_template("[#dynamic_link.opt_out_direct_marketing]").render(no_links) == "[]"


def test_link_text_comes_from_settings_per_language():
    settings = LinkSettings(link_text={"en": {"opt_out_direct_marketing": "Stop offers"}})
    assert settings.text("opt_out_direct_marketing", "en") == "Stop offers"
    assert settings.text("opt_out_direct_marketing", "fr") == "Stop offers"
    assert settings.text("opt_in_direct_marketing", "el") == "Ναι, θέλω να λαμβάνω προσφορές"
    for language in ("en", "el"):
        assert set(DEFAULT_TEXT[language]) == set(DYNAMIC_LINK_NAMES)
