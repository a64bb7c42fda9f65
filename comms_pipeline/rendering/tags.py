"""The seeds' tag language and the catalogue of entities a tag may name.

A tag is ``#entity.field`` with any depth of nesting (``#payment.accounts_receivable.balance``).
Tags are translated into silent Velocity references (``$!{payment.accounts_receivable.balance}``)
so that airspeed renders them, and a missing value renders empty as the seeds require. The
catalogue is what auto-complete shows and what validation checks field names against; an
entity that is not in it is still allowed when the template names it as a referring entity
(its fields are then free).

``\\#word.word`` keeps a literal hash (e.g. a CSS selector or a URL fragment).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from comms_pipeline.core.dynamic_links import DYNAMIC_LINK_NAMES

#: Velocity directives: ``#end.`` at the end of a sentence is not a tag.
DIRECTIVES = frozenset({
    "if", "elseif", "else", "end", "foreach", "set", "macro", "define", "stop", "include",
    "parse", "evaluate", "break",
})

#: ``#a.b`` not preceded by a word character, a backslash, a hash or ``&`` (``&#123;``).
TAG_RE = re.compile(
    r"(?<![\w\\#&])#([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+)")

CONTACT = "contact_information"
PARAM = "param"
DYNAMIC_LINK = "dynamic_link"
FORMATTERS = "fmt"



@dataclass(frozen=True)
class EntityInfo:
    """One entity of the catalogue: its fields and the entities it refers to."""

    fields: tuple[str, ...]
    relations: tuple[str, ...] = ()
    description: str = ""


_AR = "accounts_receivable"

CATALOGUE: dict[str, EntityInfo] = {
    CONTACT: EntityInfo(
        ("name", "first_name", "last_name", "ref", "number", "email", "phone",
         "preferred_language", "opt_in_direct_marketing", "opt_in_affiliate_marketing"),
        description="the contact the communication belongs to"),
    _AR: EntityInfo(
        ("number", "name", "balance", "outstanding_amount", "credit_limit", "currency",
         "state", "due_date"), ("wallet",), "an account"),
    "subscription": EntityInfo(
        ("number", "type", "state", "services", "installed_items", "activated_on",
         "billing_frequency"), (_AR,), "a subscription to services"),
    "bill": EntityInfo(
        ("number", "issued_on", "due_date", "period", "total_amount",
         "total_amount_to_be_paid", "currency"), (_AR,), "an issued bill"),
    "payment": EntityInfo(
        ("number", "amount", "currency", "posted_on", "method", "reference"), (_AR,),
        "a posted payment"),
    "wallet": EntityInfo(
        ("number", "balance", "available_amount", "currency",
         "estimated_consumption_date", "low_balance_threshold"), (_AR,), "a prepaid wallet"),
    "service_request": EntityInfo(
        ("number", "type", "status", "description", "response_description", "responded_by",
         "response_date", "temporary_resolution", "final_resolution"),
        description="a customer's service request"),
    "notification": EntityInfo(
        ("number", "type", "total_notified_amount", "subscriptions_notified_amount",
         "bills_notified_amount", "wallets_available_amount",
         "wallets_product_available_amount", "wallets_estimated_consumption_date",
         "subscriptions_type", "jobs_type", "activities_type", "due_date"), (_AR,),
        "a notification of a notification run"),
    "job": EntityInfo(("number", "type", "status", "completed_on")),
    "activity": EntityInfo(("number", "type", "status", "completed_on")),
    "lead": EntityInfo(("number", "name", "status")),
    "communication": EntityInfo(("number", "subject", "sent_on"),
                                description="a related communication"),
    "rewards_participant": EntityInfo(
        ("number", "sign_up_on", "sign_up_by_unit"), (_AR,)),
    "award_reward_transaction": EntityInfo(
        ("number", "offer", "date", "amount"), ("rewards_participant",)),
    "spend_reward_transaction": EntityInfo(
        ("number", "total_amount", "date", "unit"), ("rewards_participant",)),
    "payment_gateway_card": EntityInfo(
        ("card_holder_name", "last_four_digits", "expiry"), (_AR,)),
    "payment_gateway_request": EntityInfo(
        ("number", "amount", "state"), (_AR, "payment_gateway_card")),
    "access_token": EntityInfo(("number", "type", "expires_on")),
}

#: Nesting depth shown by auto-complete (``#payment.accounts_receivable.wallet.balance``).
MAX_TAG_DEPTH = 2


@dataclass
class Translation:
    """Velocity source of a template and a map back to the author's positions."""

    source: str
    tags: list[tuple[str, int]] = field(default_factory=list)  # (path, original offset)
    starts: list[int] = field(default_factory=list)  # translated offsets of replacements
    _ends: list[int] = field(default_factory=list)
    _deltas: list[int] = field(default_factory=list)  # cumulative growth after each one

    def original_offset(self, offset: int) -> int:
        i = bisect.bisect_right(self.starts, offset) - 1
        if i < 0:
            return offset
        if offset < self._ends[i]:
            return self.tags[i][1]  # inside a translated tag: the tag's own start
        return offset - self._deltas[i]


def translate(source: str) -> Translation:
    """Turn every ``#entity.field`` tag into a silent Velocity reference."""
    out: list[str] = []
    result = Translation("")
    last = 0
    grown = 0
    for match in TAG_RE.finditer(source):
        path = match.group(1)
        if path.split(".", 1)[0].lower() in DIRECTIVES:
            continue
        replacement = "$!{" + path + "}"
        out.append(source[last:match.start()])
        result.starts.append(match.start() + grown)
        result._ends.append(match.start() + grown + len(replacement))
        grown += len(replacement) - len(match.group(0))
        result._deltas.append(grown)
        out.append(replacement)
        result.tags.append((path, match.start()))
        last = match.end()
    out.append(source[last:])
    result.source = "".join(out)
    return result


def find_tags(source: str) -> list[tuple[str, int]]:
    """``(path, offset)`` of every tag in ``source``."""
    return translate(source).tags


def line_column(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def entity_fields(entity: str) -> tuple[str, ...] | None:
    info = CATALOGUE.get(entity)
    return None if info is None else info.fields


def check_path(path: Iterable[str],
               extra_fields: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """Why a catalogue entity's field path is unknown, or None when it is fine.

    ``path`` starts at a catalogue entity; relations may be followed to other entities.
    """
    parts = list(path)
    entity = parts[0]
    for name in parts[1:]:
        info = CATALOGUE.get(entity)
        if info is None:
            return None  # an entity outside the catalogue: fields are free from here on
        if name in info.relations and name in CATALOGUE:
            entity = name
            continue
        if name in info.fields or name in set((extra_fields or {}).get(entity, ())):
            return None  # what lies below a field (a list of dicts, say) is the data's own
        return f"unknown field {name!r} of {entity!r}"
    return None


def available_tags(entities: Iterable[str] = (), prefix: str = "", *,
                   enabled_links: Iterable[str] | None = None) -> list[str]:
    """The tags a ``#`` auto-complete offers for ``entities``, filtered by ``prefix``.

    The contact's tags and the dynamic links (the enabled ones, when ``enabled_links`` is
    given) are always offered; the unrestricted parameters are free text and not listed.
    """
    wanted = prefix.lstrip("#").lower()
    tags: set[str] = set()
    for entity in dict.fromkeys([CONTACT, *entities]):
        _collect(entity, entity, 0, tags)
    links = DYNAMIC_LINK_NAMES if enabled_links is None else [
        n for n in DYNAMIC_LINK_NAMES if n in set(enabled_links)]
    tags.update(f"{DYNAMIC_LINK}.{name}" for name in links)
    return sorted(f"#{t}" for t in tags if t.lower().startswith(wanted))


def _collect(entity: str, path: str, depth: int, out: set[str]) -> None:
    info = CATALOGUE.get(entity)
    if info is None:
        return
    out.update(f"{path}.{f}" for f in info.fields)
    if depth >= MAX_TAG_DEPTH:
        return
    for rel in info.relations:
        _collect(rel, f"{path}.{rel}", depth + 1, out)
