"""The ``[retention]`` section: how long message bodies, documents and tracking data are kept.

Each table maps a rule to a number of days after a queue entry was created. A rule is
``"*"`` (every entry), a media (``"email"``), a classification in any media
(``"*.financial"``) or both (``"letter.financial"``); the most specific rule that matches an
entry wins (media and classification, then classification, then media, then ``"*"``). An entry
no rule matches is kept for ever, and so is everything when the section is empty (the
default)::

    [retention.bodies]
    "*" = 7
    [retention.documents]
    "*" = 90
    "letter.financial" = 2557    # seven years
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comms_pipeline.core.states import Media

#: What the retention sweep removes, by the name of its table in the section.
KINDS = ("bodies", "documents", "tracking")
_MEDIA = frozenset(m.value for m in Media)


class RetentionSettings(BaseModel):
    """The ``[retention]`` section (empty: everything is kept for ever)."""

    model_config = ConfigDict(extra="forbid")

    #: The subject and body of queue entries and of the communications log entries they made.
    bodies: dict[str, float] = Field(default_factory=dict)
    #: Merged documents (.eml, .pdf): the copy in the database and the one in the store.
    documents: dict[str, float] = Field(default_factory=dict)
    #: Tracked links and what opens and clicks recorded of the reader (their browser);
    #: the opens and clicks themselves stay, as counts.
    tracking: dict[str, float] = Field(default_factory=dict)

    @field_validator("bodies", "documents", "tracking")
    @classmethod
    def _rules(cls, rules: dict[str, float]) -> dict[str, float]:
        for rule, days in rules.items():
            media, _, classification = rule.partition(".")
            if media != "*" and media not in _MEDIA:
                raise ValueError(f"retention rule {rule!r}: unknown media {media!r} (known: "
                                 f"*, {', '.join(sorted(_MEDIA))})")
            if "." in rule and not classification:
                raise ValueError(f"retention rule {rule!r}: a classification after the dot")
            if days <= 0:
                raise ValueError(f"retention rule {rule!r}: days must be positive")
        return rules

    def days(self, kind: str, media: str, classification: str | None) -> float | None:
        """Days an entry's ``kind`` is kept (None: for ever), by the most specific rule."""
        rules: dict[str, float] = getattr(self, kind)
        for rule in (f"{media}.{classification}" if classification else None,
                     f"*.{classification}" if classification else None, media, "*"):
            if rule is not None and rule in rules:
                return rules[rule]
        return None

    @property
    def configured(self) -> bool:
        return any(getattr(self, kind) for kind in KINDS)
