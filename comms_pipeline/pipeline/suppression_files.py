"""The suppression list as CSV: exported for another system (or a backup), imported from one
(a list kept by a previous provider, an export of this one).

Columns: ``address, media, reason, scope, created_at, expires_at, created_by,
source_detail_id, description`` (``removed_at, removed_by, removal_reason`` too in an export
of removed rows). On import only ``address`` and ``media`` are required; ``reason`` defaults
to ``manual`` and ``scope`` to the reason's; times are ISO 8601 (UTC). Rows already removed
are not imported. Every row is checked first: one bad row imports nothing, and the error names
each bad line. Importing a file twice adds nothing the second time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, TextIO

from comms_pipeline.core.errors import CommsError
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline.suppressions import (
    DEFAULT_SCOPE,
    REASONS,
    SCOPE_ALL,
    SCOPES,
    Suppression,
    SuppressionError,
    add,
    address_key,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

COLUMNS = ["address", "media", "reason", "scope", "created_at", "expires_at", "created_by",
           "source_detail_id", "description"]
REMOVAL_COLUMNS = ["removed_at", "removed_by", "removal_reason"]
_SHOWN_ERRORS = 10


class ImportRefused(CommsError):
    """The file has rows that cannot be imported: nothing was imported."""


@dataclass
class ImportReport:
    added: int = 0
    already: int = 0
    skipped_removed: int = 0
    errors: list[str] = field(default_factory=list)


def _iso(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else ""


def write_csv(out: TextIO, rows: Iterable[Suppression], *, with_removal: bool = False) -> int:
    """Write ``rows`` as CSV (with a header line); return how many."""
    columns = COLUMNS + (REMOVAL_COLUMNS if with_removal else [])
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    n = 0
    for s in rows:
        data = s.as_dict()
        writer.writerow({c: _iso(data[c]) if c.endswith("_at")
                         else "" if data[c] is None else data[c] for c in columns})
        n += 1
    return n


def _time(value: str, what: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SuppressionError(f"{what}: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _row(raw: dict[str, Any], region: str) -> dict[str, Any] | None:
    """The keyword arguments of :func:`suppress` for one CSV row; None for a removed one."""
    get = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
    if get.get("removed_at"):
        return None
    media, address = get.get("media", ""), get.get("address", "")
    if not address or not media:
        raise SuppressionError("address and media are required")
    reason = get.get("reason") or "manual"
    if reason not in REASONS:
        raise SuppressionError(f"unknown reason {reason!r} (one of {', '.join(REASONS)})")
    scope = get.get("scope") or DEFAULT_SCOPE.get(reason, SCOPE_ALL)
    if scope not in SCOPES:
        raise SuppressionError(f"unknown scope {scope!r} (all or marketing)")
    detail = get.get("source_detail_id") or ""
    if detail and not detail.isdigit():
        raise SuppressionError(f"source_detail_id: not a number: {detail!r}")
    return {"address": address_key(media, address, region), "media": media,
            "reason": reason, "scope": scope,
            "created_at": _time(get.get("created_at", ""), "created_at"),
            "expires_at": _time(get.get("expires_at", ""), "expires_at"),
            "source_detail_id": int(detail) if detail else None,
            "description": get.get("description") or None,
            "created_by": get.get("created_by") or None}


def import_csv(conn: Connection, source: IO[str], *, actor: str, region: str = "GB"
               ) -> ImportReport:
    """Check every row, then (only if all are good) suppress each: :class:`ImportRefused`
    naming the bad lines otherwise."""
    report = ImportReport()
    reader = csv.DictReader(source)
    fields = {f.strip().lower() for f in reader.fieldnames or []}
    if not {"address", "media"} <= fields:
        raise ImportRefused("the CSV file needs a header line with at least the columns "
                            "address and media")
    rows = []
    for raw in reader:
        try:
            row = _row(raw, region)
        except SuppressionError as exc:
            report.errors.append(f"line {reader.line_num}: {exc}")
            continue
        if row is None:
            report.skipped_removed += 1
        else:
            rows.append(row)
    if report.errors:
        shown = "; ".join(report.errors[:_SHOWN_ERRORS])
        more = len(report.errors) - _SHOWN_ERRORS
        raise ImportRefused(f"{len(report.errors)} bad row(s), nothing imported: {shown}"
                            + (f"; and {more} more" if more > 0 else ""))
    for row in rows:
        by = row.pop("created_by")
        _, new = add(conn, actor=by or actor, region=region, **row)
        if new:
            report.added += 1
        else:
            report.already += 1
    # One entry for the import, by whoever ran it (the rows keep their own creators).
    audit.record(conn, actor=actor, action="suppression.import", target_kind="suppression",
                 change={"added": report.added, "already": report.already,
                         "skipped_removed": report.skipped_removed})
    return report
