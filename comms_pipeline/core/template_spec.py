"""A template as an author writes it (code, media, languages, parts), before it is saved.

The template files, the CLI, the Web API and the demo build these; the template checks read
them; :mod:`comms_pipeline.pipeline.admin_records` saves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VariantSpec:
    language: str
    subject: str | None = None
    body_html: str | None = None
    body_text: str | None = None


@dataclass
class TemplateSpec:
    code: str
    name: str
    media: str
    variants: list[VariantSpec]
    direction: str = "outgoing"
    category: str | None = None
    classification: str = "customer_care"
    referring_entities: list[str] = field(default_factory=list)
    unrestricted_params: list[str] = field(default_factory=list)
    external_system: str | None = None
    default_language: str = "en"
