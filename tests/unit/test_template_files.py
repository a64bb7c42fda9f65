"""Template directories on disk and the built-in templates (the seeds' business examples)."""

from __future__ import annotations

import re

import pytest

from comms_pipeline.core.sms_text import analyse
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.pipeline.template_files import (
    TemplateFileError,
    builtin_dirs,
    load_template_dir,
    pick_variant,
    write_template_dir,
)
from comms_pipeline.rendering import build_context, compile_template, validate_template
from comms_pipeline.settings.links import LinkSettings

SAMPLE = {
    "accounts_receivable": {"number": "AR-1001", "name": "Maria Georgiou", "balance": "-42.50",
                            "outstanding_amount": "118.20", "currency": "EUR"},
    "subscription": {"number": "S-1001", "type": "Residential",
                     "services": ["TV Basic", "Sports Plus"], "installed_items": "HD-200"},
    "bill": {"number": "B-2024-0901", "period": "September 2024", "due_date": "2024-10-21",
             "total_amount_to_be_paid": "118.20", "currency": "EUR"},
    "payment": {"number": "P-5001", "amount": "42.50", "currency": "EUR",
                "posted_on": "2024-10-02"},
    "wallet": {"number": "W-1003", "available_amount": "3.40", "currency": "EUR",
               "estimated_consumption_date": "2024-10-12"},
    "service_request": {"number": "SR-7001", "type": "Picture quality",
                        "response_description": "A technician will call.",
                        "responded_by": "Technical Department", "response_date": "2024-10-05"},
    "notification": {"number": "N-1", "bills_notified_amount": [
        {"number": "B-2024-0901", "amount": "59.10"},
        {"number": "B-2024-0801", "amount": "59.10"}]},
}
CONTACT = {"ref": "C-1001", "name": "Maria Georgiou", "opt_in_direct_marketing": True}
LEFTOVER = re.compile(r"\$!?\{?[a-z_]+\.|(?<![\w&])#[a-z_]+\.[a-z_]")

BUILTINS = {spec.code: spec for spec in map(load_template_dir, builtin_dirs())}


def test_the_seed_examples_are_all_there():
    assert set(BUILTINS) >= {
        "WELCOME_SUBSCRIBER", "BILL_ISSUED", "PAYMENT_RECEIPT", "ACCOUNT_BALANCE",
        "SERVICE_REQUEST_RESPONSE", "MAILING_LIST_OPT_IN", "MAILING_LIST_OPT_OUT",
        "CONSENT_CONFIRMATION", "PAYMENT_RECEIPT_SMS", "WALLET_LOW_BALANCE_SMS"}
    for spec in BUILTINS.values():
        assert {v.language for v in spec.variants} >= {"en", "el"}, spec.code


@pytest.mark.parametrize("code", sorted(BUILTINS))
def test_builtin_templates_validate(code):
    assert validate_template(BUILTINS[code], links=LinkSettings()) == []


@pytest.mark.parametrize("language", ["en", "el"])
@pytest.mark.parametrize("code", sorted(BUILTINS))
def test_builtin_templates_render_every_part(code, language):
    spec = BUILTINS[code]
    variant = pick_variant(spec, language)
    assert variant.language == language
    context = build_context(
        contact=CONTACT, entities=SAMPLE, params={p: f"<{p}>" for p in spec.unrestricted_params},
        referring_entities=spec.referring_entities, language=language,
        links=LinkBuilder(LinkSettings(), "k"))
    for source, html in ((variant.subject, False), (variant.body_html, True),
                         (variant.body_text, False)):
        if not source:
            continue
        out = compile_template(source, html=html).render(context)
        assert not LEFTOVER.search(out), (code, language, LEFTOVER.search(out))
        if language == "el":
            assert re.search("[α-ω]", out) or "#param" in source, (code, out)
        if spec.media == "sms":
            assert analyse(out).chars <= 160, (code, language, out)
    texts = " ".join(filter(None, (variant.subject, variant.body_html, variant.body_text)))
    for field in ("#payment.number", "#bill.number", "#service_request.number"):
        if field in texts:
            entity = field.split(".")[0][1:]
            assert SAMPLE[entity]["number"] in compile_template(texts).render(context)


def test_write_and_load_round_trip(tmp_path):
    spec = TemplateSpec(code="T1", name="Test «1»", media="sms", category="tests",
                        referring_entities=["payment"], unrestricted_params=["promo"],
                        variants=[VariantSpec("en", body_text="Paid #payment.number"),
                                  VariantSpec("el", body_text="Πληρώθηκε #payment.number")])
    folder = write_template_dir(spec, tmp_path / "t1")
    assert sorted(p.name for p in folder.iterdir()) == ["el.txt", "en.txt", "template.toml"]
    loaded = load_template_dir(folder)
    assert loaded == spec


def test_subject_and_sms_text_lose_the_editors_final_newline(tmp_path):
    (tmp_path / "template.toml").write_text('code = "X"\nname = "X"\nmedia = "email"\n')
    (tmp_path / "en.subject").write_text("Hello #contact_information.name\n")
    (tmp_path / "en.txt").write_text("Body\n\n")
    (tmp_path / "en.html").write_text("<p>Body</p>\n")
    (tmp_path / "notes.md").write_text("ignored")
    variant = load_template_dir(tmp_path).variants[0]
    assert (variant.subject, variant.body_text, variant.body_html) == (
        "Hello #contact_information.name", "Body", "<p>Body</p>\n")


@pytest.mark.parametrize("toml, message", [
    (None, "no template.toml"),
    ('code = "X"\nname = "X"\n', "missing key(s): media"),
    ('code = "X"\nname = "X"\nmedia = "sms"\ncolour = "red"\n', "unknown key(s): colour"),
    ('code = "X\n', "template.toml"),
])
def test_bad_template_directories(tmp_path, toml, message):
    if toml is not None:
        (tmp_path / "template.toml").write_text(toml)
    with pytest.raises(TemplateFileError, match=re.escape(message)):
        load_template_dir(tmp_path)


def test_variant_falls_back_to_the_default_language():
    spec = BUILTINS["PAYMENT_RECEIPT"]
    assert pick_variant(spec, "fr").language == "en"
    assert pick_variant(spec, "el-CY").language == "el"
    assert pick_variant(spec, None).language == "en"
