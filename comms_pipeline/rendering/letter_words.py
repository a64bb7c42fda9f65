"""The few words a letter's frame says itself, per language (the CLDR has no such phrases).

Dates and numbers in the frame come from Babel through :class:`~comms_pipeline.rendering.
formatters.Formatters`; these are the words around them. English is the fallback.
"""

from __future__ import annotations

#: The footer of every page: ``{n}`` this page of the letter, ``{m}`` the letter's pages.
PAGE_OF = {
    "en": "Page {n} of {m}",
    "el": "Σελίδα {n} από {m}",
    "de": "Seite {n} von {m}",
    "fr": "Page {n} sur {m}",
}
#: The label of the letter's reference number in its date block.
REFERENCE = {
    "en": "Our reference",
    "el": "Αριθμός αναφοράς",
    "de": "Unser Zeichen",
    "fr": "Notre référence",
}


def base_language(language: str | None) -> str:
    return (language or "en").replace("_", "-").split("-")[0].lower()


def page_of(language: str | None) -> str:
    return PAGE_OF.get(base_language(language), PAGE_OF["en"])


def reference_label(language: str | None) -> str:
    return REFERENCE.get(base_language(language), REFERENCE["en"])
