"""Segment membership: which of some contacts or accounts belong to a segment.

A ``list`` segment's members are stored in ``segment_members`` (the comms database); an
``sql`` segment is a query against the business database selecting a ``member_ref`` column
(contact references or account numbers, as text). A recipient belongs to a segment when its
contact reference or its own key is a member. Candidates are looked up in chunks with an
expanding ``IN``, so a batch of recipients costs one query, not one per recipient.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError

from comms_pipeline.core.errors import CommsError
from comms_pipeline.store.models import members_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.notifications.types import SegmentInfo

CHUNK = 900


class SegmentError(CommsError):
    """A segment's query failed."""


def members_among(segment: SegmentInfo, candidates: Iterable[str | None], *,
                  comms: Connection, business: Connection | None) -> set[str]:
    """The candidates that are members of ``segment``."""
    refs = sorted({str(c) for c in candidates if c is not None and str(c)})
    found: set[str] = set()
    for start in range(0, len(refs), CHUNK):
        part = refs[start:start + CHUNK]
        if segment.kind == "list":
            q = select(members_t.c.member_ref).where(members_t.c.segment_id == segment.id,
                                                     members_t.c.member_ref.in_(part))
            found.update(comms.execute(q).scalars())
            continue
        if business is None:
            raise SegmentError(f"segment {segment.code}: no business database connection")
        query = (segment.query or "").strip().rstrip(";")
        stmt = text(f"SELECT s.member_ref FROM ({query}) s WHERE s.member_ref IN :refs"
                    ).bindparams(bindparam("refs", expanding=True))
        try:
            found.update(str(v) for v in business.execute(stmt, {"refs": part}).scalars())
        except DBAPIError as exc:
            raise SegmentError(f"segment {segment.code}: query failed "
                               f"({type(exc.orig).__name__}: {str(exc.orig).strip()[:200]})"
                               ) from None
    return found


def describe(segment: SegmentInfo) -> str:
    return f"not a member of segment {segment.code}"
