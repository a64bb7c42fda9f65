"""The suppression list: addresses no communication goes to, and why.

An address is added by what found it dead (a hard bounce or a complaint from the feedback
loop, an unregistered push token, an SMSC saying the number does not exist, soft bounces past
a threshold) or by an operator; the Comms Monitor rejects a target on the list ``SUPPRESSED``
with the reason and the date (:func:`load_active` once per batch, :func:`applicable` per
target). A complaint suppresses marketing only (``scope`` ``marketing``: the classifications
a contact can opt out of, marketing and reward); everything else suppresses every
classification, since the address cannot receive. An expired suppression no longer applies.
Removing one (an operator corrected the address) keeps the row, with who removed it and why.

Addresses are kept in their media's normal form (:func:`address_key`): email addresses as
email-validator normalises them, then lower-cased (mailbox names are case-blind in practice,
and a bounce may spell one differently from the contact record); phone numbers in E.164;
device tokens as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, func, insert, or_, select, update

from comms_pipeline.core.addressing import InvalidAddress, normalise
from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import CommsError
from comms_pipeline.core.states import ADDRESS_KIND, Classification, Media
from comms_pipeline.pipeline import audit
from comms_pipeline.settings.suppressions import SuppressionSettings
from comms_pipeline.store.models import soft_bounces_t, suppressions_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

log = structlog.get_logger(__name__)

#: Why an address is on the list, and how the reason reads.
REASONS = {
    "hard_bounce": "hard bounce",
    "complaint": "complaint (marked as spam)",
    "unregistered": "device token unregistered with the push provider",
    "smpp_permanent": "the SMSC refused the number as invalid",
    "soft_bounce_threshold": "repeated soft bounces",
    "manual": "added by an operator",
}
SCOPE_ALL = "all"
SCOPE_MARKETING = "marketing"
SCOPES = (SCOPE_ALL, SCOPE_MARKETING)
#: A complaint is about unwanted mail, not a dead address: service messages still go.
DEFAULT_SCOPE = {"complaint": SCOPE_MARKETING}
#: The classifications a ``marketing`` suppression covers (those a contact can opt out of).
MARKETING = frozenset({Classification.MARKETING, Classification.REWARD})
#: Media whose targets are addresses that can be suppressed.
SUPPRESSIBLE = (Media.EMAIL, Media.SMS, Media.PUSH)
_CHUNK = 2000
_FORM = {Media.EMAIL: "name@example.com", Media.SMS: "an international number, +35799123456",
         Media.PUSH: "the device token, without spaces"}
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class SuppressionError(CommsError):
    """The suppression cannot be recorded."""


class NotSuppressed(CommsError):
    """The address is not on the suppression list."""


@dataclass(frozen=True)
class Suppression:
    id: int
    address: str
    media: str
    reason: str
    scope: str
    description: str | None
    source_detail_id: int | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    removed_at: datetime | None = None
    removed_by: str | None = None
    removal_reason: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Suppression:
        return cls(**row._mapping)  # the table's columns are the fields

    def active(self, now: datetime) -> bool:
        return self.removed_at is None and (self.expires_at is None or self.expires_at > now)

    def applies_to(self, classification: str | None) -> bool:
        """Whether it stops a communication of ``classification`` (None: not marketing)."""
        return self.scope == SCOPE_ALL or classification in MARKETING

    def explanation(self) -> str:
        """One readable line: the reason, the date, what it covers and until when."""
        text = f"{REASONS.get(self.reason, self.reason)} on {self.created_at:%Y-%m-%d}"
        if self.description:
            text += f" ({self.description})"
        if self.source_detail_id is not None:
            text += f", queue entry {self.source_detail_id}"
        if self.scope == SCOPE_MARKETING:
            text += "; marketing only"
        if self.expires_at is not None:
            text += f"; until {self.expires_at:%Y-%m-%d %H:%M} UTC"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def check_media(media: str) -> str:
    if media not in SUPPRESSIBLE:
        raise SuppressionError(f"media {media!r} has no addresses to suppress: use one of "
                               f"{', '.join(SUPPRESSIBLE)}")
    return str(media)


def address_key(media: str, address: str, region: str = "GB") -> str:
    """``address`` as the list keeps it for ``media`` (:class:`SuppressionError` if it is
    not a usable address of that media)."""
    check_media(media)
    try:
        value = normalise(ADDRESS_KIND[Media(media)], address, region)
    except InvalidAddress as exc:
        # A number already in E.164 that phonenumbers' ranges do not know (a new range, a
        # test range) is what the gateway was given: it is kept as it is.
        if media == Media.SMS and _E164.fullmatch(address or ""):
            return address
        form = _FORM[Media(media)]
        raise SuppressionError(f"{exc}: not suppressed (write it as {form})") from None
    return value.lower() if media == Media.EMAIL else value


def _active_where(now: datetime) -> Any:
    t = suppressions_t.c
    return and_(t.removed_at.is_(None), or_(t.expires_at.is_(None), t.expires_at > now))


def suppress(conn: Connection, *, address: str, media: str, reason: str,
             scope: str | None = None, source_detail_id: int | None = None,
             expires_at: datetime | None = None, actor: str,
             description: str | None = None, created_at: datetime | None = None,
             region: str = "GB") -> Suppression:
    """Put ``address`` on the list for ``media``; return its suppression.

    ``scope`` defaults to the reason's (``marketing`` for complaints, else ``all``). The same
    address suppressed again for the same reason and scope while that suppression is in
    force is not added twice: the one there is kept (and lasts as long as the longer of the
    two), so a bounce reported twice, or a list imported twice, changes nothing.
    """
    return add(conn, address=address, media=media, reason=reason, scope=scope,
               source_detail_id=source_detail_id, expires_at=expires_at, actor=actor,
               description=description, created_at=created_at, region=region)[0]


def add(conn: Connection, *, address: str, media: str, reason: str, scope: str | None,
        source_detail_id: int | None, expires_at: datetime | None, actor: str,
        description: str | None, created_at: datetime | None, region: str
        ) -> tuple[Suppression, bool]:
    """:func:`suppress`, and whether a new row was added (False: one was in force)."""
    if reason not in REASONS:
        raise SuppressionError(f"unknown suppression reason {reason!r}: use one of "
                               f"{', '.join(REASONS)}")
    scope = scope or DEFAULT_SCOPE.get(reason, SCOPE_ALL)
    if scope not in SCOPES:
        raise SuppressionError(f"unknown suppression scope {scope!r}: use all or marketing")
    key = address_key(media, address, region)
    now = utcnow()
    t = suppressions_t
    same = conn.execute(select(t).where(
        t.c.address == key, t.c.media == media, t.c.reason == reason, t.c.scope == scope,
        _active_where(now)).order_by(t.c.id).limit(1)).first()
    if same is not None:
        found = Suppression.from_row(same)
        if found.expires_at is not None and (expires_at is None or expires_at > found.expires_at):
            conn.execute(update(t).where(t.c.id == found.id).values(expires_at=expires_at))
            found = Suppression(**{**found.as_dict(), "expires_at": expires_at})
        return found, False
    values: dict[str, Any] = {
        "address": key, "media": str(media), "reason": reason, "scope": scope,
        "description": (description or None) and description[:1000],
        "source_detail_id": source_detail_id, "created_at": created_at or now,
        "created_by": actor[:128], "expires_at": expires_at}
    new_id = conn.execute(insert(t).values(values).returning(t.c.id)).scalar_one()
    log.info("suppression.added", suppression_id=new_id, media=media, reason=reason,
             scope=scope, detail_id=source_detail_id, actor=actor)
    if _by_operator(actor):  # the feedback loop's own suppressions are not admin changes
        audit.record(conn, actor=actor, action="suppression.add", target_kind="suppression",
                     target_id=str(new_id), change={"media": str(media), "reason": reason,
                                                    "scope": scope, "expires_at": expires_at})
    return Suppression(id=new_id, **values), True


def record_soft_bounce(conn: Connection, *, address: str, media: str,
                       source_detail_id: int | None, now: datetime,
                       settings: SuppressionSettings | None = None,
                       description: str | None = None, actor: str = "feedback",
                       region: str = "GB") -> Suppression | None:
    """Count a soft bounce; the one that reaches ``soft_bounce_threshold`` within
    ``soft_bounce_window_days`` suppresses the address (for ``soft_bounce_suppress_days``)
    and is returned. Bounces from before the address's last suppression was added or
    removed do not count again."""
    cfg = settings or SuppressionSettings()
    key = address_key(media, address, region)
    b, s = soft_bounces_t, suppressions_t
    conn.execute(insert(b).values(address=key, media=str(media),
                                  source_detail_id=source_detail_id, at=now))
    since = now - timedelta(days=cfg.soft_bounce_window_days)
    last = conn.execute(select(func.max(s.c.created_at), func.max(s.c.removed_at)).where(
        s.c.address == key, s.c.media == media, s.c.reason == "soft_bounce_threshold")).one()
    since = max([since, *(d for d in last if d is not None)])
    count = conn.execute(select(func.count()).select_from(b).where(
        b.c.address == key, b.c.media == media, b.c.at >= since)).scalar_one()
    if count < cfg.soft_bounce_threshold:
        return None
    days = cfg.soft_bounce_suppress_days
    why = f"{count} soft bounces since {since:%Y-%m-%d}"
    return suppress(conn, address=key, media=media, reason="soft_bounce_threshold",
                    source_detail_id=source_detail_id, actor=actor,
                    expires_at=now + timedelta(days=days) if days else None,
                    description=f"{why}; last: {description}" if description else why,
                    created_at=now, region=region)


def load_active(conn: Connection, targets: Iterable[tuple[str, str]], now: datetime
                ) -> dict[tuple[str, str], list[Suppression]]:
    """The suppressions in force of ``(media, key)`` targets, by target: one query per
    2,000 addresses (the Comms Monitor asks once per batch)."""
    wanted = set(targets)
    keys = sorted({key for _, key in wanted})
    found: dict[tuple[str, str], list[Suppression]] = {}
    t = suppressions_t
    for i in range(0, len(keys), _CHUNK):
        q = (select(t).where(t.c.address.in_(keys[i:i + _CHUNK]), _active_where(now))
             .order_by(t.c.id))
        for row in conn.execute(q):
            if (row.media, row.address) in wanted:
                found.setdefault((row.media, row.address), []).append(Suppression.from_row(row))
    return found


def applicable(found: Sequence[Suppression], classification: str | None
               ) -> Suppression | None:
    """Of a target's suppressions in force, the one that stops ``classification``: the
    widest and longest-lasting first, then the oldest."""
    hits = [s for s in found if s.applies_to(classification)]
    if not hits:
        return None
    return min(hits, key=lambda s: (s.scope != SCOPE_ALL, s.expires_at is not None,
                                    -s.expires_at.timestamp() if s.expires_at else 0.0,
                                    s.id))


def is_suppressed(conn: Connection, address: str, media: str, classification: str | None,
                  now: datetime, region: str = "GB") -> Suppression | None:
    """The suppression that stops a communication of ``classification`` to ``address``."""
    try:
        key = address_key(media, address, region)
    except SuppressionError:
        return None
    return applicable(load_active(conn, [(media, key)], now).get((media, key), []),
                      classification)


def remove(conn: Connection, *, address: str, media: str, actor: str, why: str,
           region: str = "GB") -> list[Suppression]:
    """Take ``address`` off the list for ``media`` (every suppression not yet removed,
    expired ones included), recording who and why; the rows are kept. An operator who
    corrected a hard-bounced address does this. :class:`NotSuppressed` when none is there."""
    if not why or not why.strip():
        raise SuppressionError("say why the suppression is removed (it is recorded)")
    key = address_key(media, address, region)
    t = suppressions_t
    rows = conn.execute(select(t).where(t.c.address == key, t.c.media == media,
                                        t.c.removed_at.is_(None)).order_by(t.c.id)).all()
    if not rows:
        raise NotSuppressed(f"{key} is not on the suppression list for {media} (see `comms "
                            f"suppressions list --all --media {media}`)")
    now = utcnow()
    values = {"removed_at": now, "removed_by": actor[:128], "removal_reason": why.strip()}
    conn.execute(update(t).where(t.c.id.in_([r.id for r in rows])).values(values))
    log.info("suppression.removed", media=media, count=len(rows), actor=actor)
    for r in rows:  # the address stays out of the audit log (no personal data there)
        audit.record(conn, actor=actor, action="suppression.remove", target_kind="suppression",
                     target_id=str(r.id), change={"media": str(media), "reason": r.reason,
                                                  "why": why.strip()})
    return [Suppression(**{**Suppression.from_row(r).as_dict(), **values}) for r in rows]


def _by_operator(actor: str) -> bool:
    """An operator's change (the CLI, an API key), not the pipeline's own."""
    return actor.startswith(("cli:", "api:", "api-key:"))


def list_suppressions(conn: Connection, *, now: datetime, address: str | None = None,
                      media: str | None = None, include_inactive: bool = False,
                      limit: int | None = 100, before_id: int | None = None,
                      region: str = "GB") -> list[Suppression]:
    """Suppressions newest first: those in force, or with ``include_inactive`` also the
    expired and removed ones; ``address`` needs ``media`` (it is normalised for it)."""
    t = suppressions_t
    q = select(t).order_by(t.c.id.desc())
    if media is not None:
        q = q.where(t.c.media == check_media(media))
    if address is not None:
        if media is None:
            raise SuppressionError("an address filter needs its media (--media)")
        q = q.where(t.c.address == address_key(media, address, region))
    if not include_inactive:
        q = q.where(_active_where(now))
    if before_id is not None:
        q = q.where(t.c.id < before_id)
    if limit is not None:
        q = q.limit(limit)
    return [Suppression.from_row(r) for r in conn.execute(q)]


_MEDIA_OF_KIND = {kind: media for media, kind in ADDRESS_KIND.items() if media in SUPPRESSIBLE}


class SuppressionLookup:
    """The Comms Monitor's view of the list: the suppressions in force of every address of
    a batch's contacts, read in one query per batch, then looked up per target."""

    def __init__(self, region: str = "GB") -> None:
        self.region = region
        self.found: dict[tuple[str, str], list[Suppression]] = {}

    def prepare(self, conn: Connection, contacts: Iterable[Any], now: datetime) -> None:
        """Read the suppressions of the addresses of ``contacts`` (ContactInfo-like: each
        has ``addresses`` with ``kind``, ``value`` and ``invalid_reason``)."""
        targets = set()
        for contact in contacts:
            for a in getattr(contact, "addresses", ()):
                media = _MEDIA_OF_KIND.get(a.kind)
                if media is None or a.invalid_reason:
                    continue
                try:
                    targets.add((str(media), address_key(media, a.value, self.region)))
                except SuppressionError:
                    continue  # the monitor rejects it INVALID_ADDRESS
        self.found = load_active(conn, targets, now) if targets else {}

    def find(self, media: str, address: str, classification: str | None
             ) -> Suppression | None:
        """The suppression stopping ``address`` (in its media's normal form), if any."""
        if media not in SUPPRESSIBLE or not self.found:
            return None
        key = address.lower() if media == Media.EMAIL else address
        return applicable(self.found.get((media, key), []), classification)


@dataclass(frozen=True)
class DeadTarget:
    """An address a gateway called dead, to suppress with the entry's outcome."""

    address: str
    media: str
    reason: str
    description: str


def suppress_dead(conn: Connection, found: Iterable[tuple[int, DeadTarget]], actor: str
                  ) -> int:
    """Suppress ``(detail id, target)`` pairs (a daemon's persist hook, in the transaction
    that rejects the entries); an address the list cannot take is logged and skipped."""
    n = 0
    for detail_id, target in found:
        try:
            suppress(conn, address=target.address, media=target.media, reason=target.reason,
                     source_detail_id=detail_id, actor=actor, description=target.description)
            n += 1
        except SuppressionError as exc:
            log.warning("suppression.skipped", detail_id=detail_id, error=str(exc))
    return n
