"""Every built-in template in every language renders from the demo's data and the README's
examples with no missing tag and no empty merge field (issue 10 item 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.pipeline.template_files import builtin_dirs, load_template_dir
from comms_pipeline.rendering import build_context, compile_template, required_roots
from comms_pipeline.rendering.tags import DYNAMIC_LINK
from comms_pipeline.runtime.demo import demo_data
from comms_pipeline.settings.links import LinkSettings

README = Path(__file__).resolve().parents[2] / "README.md"
LINKS = LinkBuilder(LinkSettings(enabled=[
    "opt_in_direct_marketing", "opt_out_direct_marketing", "opt_in_affiliate_marketing",
    "opt_out_affiliate_marketing", "service_request_response_acceptance"]), "test-secret")
CASES = [(load_template_dir(folder), variant.language)
         for folder in builtin_dirs() for variant in load_template_dir(folder).variants]
EMPTY_FIELD = re.compile(r"Dear ,|Αγαπητέ/ή ,|\w  +\w|<(strong|b|p|li|td|h2)></\1>| \.(?!\w)")


def contact(language: str) -> dict:
    return {"ref": "C-1001", "name": "Maria Georgiou", "language": language,
            "preferred_language": language, "email": "maria.georgiou@example.com",
            "phone": "+35799100001", "opt_in_direct_marketing": True,
            "opt_in_affiliate_marketing": False}


def render_all(spec, language: str, entities: dict, params: dict) -> tuple[list[str], str]:
    variant = next(v for v in spec.variants if v.language == language)
    context = build_context(contact=contact(language), entities=entities, params=params,
                            referring_entities=spec.referring_entities, language=language,
                            links=LINKS)
    required = required_roots(spec.referring_entities) | {DYNAMIC_LINK}
    missing, out = [], []
    for source, html in ((variant.subject, False), (variant.body_html, True),
                         (variant.body_text, False)):
        if source:
            result = compile_template(source, html=html).render_report(context,
                                                                       required=required)
            missing += result.missing
            out.append(result.text)
    return missing, "\n".join(out)


@pytest.mark.parametrize(("spec", "language"), CASES,
                         ids=[f"{s.code}-{lang}" for s, lang in CASES])
def test_builtin_template_renders_fully_from_the_demo_data(spec, language):
    entities, params = demo_data(spec.code)
    missing, text = render_all(spec, language, entities, params)
    assert missing == []
    assert not EMPTY_FIELD.search(text), EMPTY_FIELD.search(text)


def readme_examples() -> list[tuple[str, dict]]:
    """``(template, entities)`` of every trigger and preview example of the README."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if not re.match(r"\s*(?:bin/)?comms (trigger|templates preview)", line):
            continue
        entities = {name: json.loads(value)
                    for name, value in re.findall(r"--entity (\w+)='([^']*)'", line)}
        template = re.search(r"(?:--template|preview) (\w+)", line)
        event = re.search(r"--event (\w+)", line)
        codes = [template.group(1)] if template else (
            ["PAYMENT_RECEIPT", "PAYMENT_RECEIPT_SMS"] if event and event.group(1) == "posted"
            else [])
        found += [(code, entities) for code in codes]
    for match in re.finditer(r'template_code="(\w+)",\s*entities=(\{.*?\}\}),', text, re.S):
        found.append((match.group(1), json.loads(match.group(2))))
    return found


def test_the_readme_examples_render_with_no_missing_tag():
    examples = readme_examples()
    assert len(examples) >= 4
    specs = {load_template_dir(f).code: load_template_dir(f) for f in builtin_dirs()}
    for code, entities in examples:
        if code.startswith("MY_"):  # the reader's own template, in the versions example
            continue
        spec = specs[code]
        for variant in spec.variants:
            missing, text = render_all(spec, variant.language, entities, {})
            assert missing == [], (code, variant.language, entities)
            assert not EMPTY_FIELD.search(text), (code, EMPTY_FIELD.search(text))
