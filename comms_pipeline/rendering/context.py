"""The data a template sees, made of plain values only.

Everything a caller hands in (the contact row, the trigger's entity JSON, the data-source rows,
the unrestricted parameters) is copied into dicts, lists, strings, numbers, decimals, dates
and booleans, so no object of the caller's (an ORM row, a string subclass claiming to be safe
HTML, anything with methods) reaches the template, and a render cannot change the caller's
data. Keys beginning with ``_`` are dropped: the sandbox would refuse them anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from comms_pipeline.rendering.formatters import Formatters
from comms_pipeline.rendering.tags import CATALOGUE, CONTACT, DYNAMIC_LINK, FORMATTERS, PARAM


class LinkBuilder(Protocol):
    """What renders ``#dynamic_link.*`` tags (the pipeline's ``links.LinkBuilder``)."""

    def for_contact(self, contact_ref: str, language: str | None = None,
                    subjects: Mapping[str, str] | None = None) -> Any: ...

RESERVED = frozenset({CONTACT, PARAM, DYNAMIC_LINK, FORMATTERS})
MAX_DEPTH = 16
#: Immutable plain values, copied as they are (exact types: subclasses are converted).
_SCALARS = frozenset({str, int, float, bool, type(None), Decimal, date, datetime, time})


def to_plain(value: Any, depth: int = 0) -> Any:
    """A deep copy of ``value`` made of plain data only (unknown objects become strings)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > MAX_DEPTH:
        return None
    if kind is dict:  # the common case, kept tight: it runs for every value of every render
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                key = str(key)
            if key[:1] != "_":
                out[key] = item if type(item) in _SCALARS else to_plain(item, depth + 1)
        return out
    if kind is list:
        return [v if type(v) in _SCALARS else to_plain(v, depth + 1) for v in value]
    return _convert(value, depth)


def _convert(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass (e.g. one claiming to be safe HTML)
    if isinstance(value, Enum):
        return to_plain(value.value, depth + 1)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float | Decimal | date | time):
        return _scalar(value)
    if isinstance(value, Mapping):
        return to_plain(dict(value.items()), depth)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v, depth + 1) for v in value]
    return str(value)


def _scalar(value: Any) -> Any:
    """A subclass of a plain scalar type, as the plain type itself."""
    for plain in (bool, int, float, Decimal):
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, datetime):
        return datetime.fromisoformat(value.isoformat())
    if isinstance(value, date):
        return date.fromisoformat(value.isoformat())
    return time.fromisoformat(value.isoformat())


def contact_view(contact: Mapping[str, Any]) -> dict[str, Any]:
    """``#contact_information.*``: the contact's columns with its free ``data`` beside them."""
    plain = to_plain(dict(contact)) if contact else {}
    extra = plain.pop("data", None)
    if isinstance(extra, dict):
        for key, value in extra.items():
            plain.setdefault(key, value)
    if plain.get("ref") is not None:
        plain.setdefault("number", plain["ref"])
    name = plain.get("name")
    if isinstance(name, str) and name.strip():
        first, _, last = name.strip().partition(" ")
        plain.setdefault("first_name", first)
        plain.setdefault("last_name", last.strip())
    return plain


def link_relations(entities: dict[str, Any]) -> None:
    """Fill ``payment.accounts_receivable`` from a separately given ``accounts_receivable``.

    A trigger (or a data source) may give related entities side by side; nested tags such as
    ``#payment.accounts_receivable.balance`` then still find them.
    """
    originals = {n: dict(d) for n, d in entities.items() if isinstance(d, dict)}
    for name, data in entities.items():
        info = CATALOGUE.get(name)
        if info is None or not isinstance(data, dict):
            continue
        for relation in info.relations:
            related = originals.get(relation)  # as given: one level, never a cycle
            if related is not None and not isinstance(data.get(relation), dict):
                data[relation] = related


def _with_relations(entities: set[str]) -> set[str]:
    """The entities whose data a template can reach: its own and their direct relations."""
    found = set(entities)
    for name in entities:
        info = CATALOGUE.get(name)
        if info is not None:
            found.update(info.relations)
    return found


#: Data that is always the communication's own: its contact, a notification run's figures and
#: the unrestricted parameters. A missing value there is missing data, as it is in a
#: referring entity's.
ALWAYS_REQUIRED = frozenset({CONTACT, "notification", PARAM})


def required_roots(referring_entities: Sequence[str] | None) -> frozenset[str]:
    """The roots whose missing values fail a merge (see ``CompiledTemplate.render``).

    A tag of an entity the communication does not refer to still renders empty (the seeds'
    rule); one of a referring entity, the contact, the notification or a parameter does not.
    """
    return ALWAYS_REQUIRED | frozenset(referring_entities or ())


def build_context(*, contact: Mapping[str, Any], entities: Mapping[str, Any] | None,
                  params: Mapping[str, Any] | None,
                  referring_entities: Sequence[str] | None = None,
                  language: str | None = None, links: LinkBuilder | None = None,
                  currency: str = "EUR") -> dict[str, Any]:
    """The data a template sees.

    Entities not among ``referring_entities`` are left out (their tags render empty; nested
    paths below a referring entity are that entity's own data). ``language`` (else the
    contact's preferred language) picks the formatting of ``$fmt`` and the dynamic links'
    text; without ``links`` the ``#dynamic_link.*`` tags render empty.
    """
    allowed = None if referring_entities is None else set(referring_entities)
    useful = None if allowed is None else _with_relations(allowed)
    given = {str(k): to_plain(v) for k, v in (entities or {}).items()
             if not str(k).startswith("_") and str(k) not in RESERVED
             and (useful is None or str(k) in useful)}
    link_relations(given)
    context: dict[str, Any] = {k: v for k, v in given.items() if allowed is None or k in allowed}
    person = contact_view(contact)
    context[CONTACT] = person
    context[PARAM] = {str(k): to_plain(v) for k, v in (params or {}).items()
                      if not str(k).startswith("_")}
    lang = language or person.get("preferred_language") or person.get("language") or "en"
    context[FORMATTERS] = Formatters(str(lang), currency)
    if links is not None:
        subjects = {}
        request = context.get("service_request")
        if isinstance(request, dict) and request.get("number") is not None:
            subjects["service_request"] = str(request["number"])
        ref = person.get("ref") or person.get("id") or ""
        context[DYNAMIC_LINK] = links.for_contact(str(ref), str(lang), subjects)
    else:
        context[DYNAMIC_LINK] = {}
    return context
