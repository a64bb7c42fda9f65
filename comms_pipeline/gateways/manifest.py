"""The manifest that closes a batch of letters at a print house drop.

A print house picks up a batch when its manifest appears, so the manifest is always written
after the PDFs (and under a temporary name first): a batch whose upload was interrupted has
no manifest and is never printed. The manifest lists, per letter, the file name, the queue
entry (detail id), the page count, the size and the SHA-256, so the print house can check
what it received.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Sequence

from comms_pipeline.core.clock import utcnow
from comms_pipeline.gateways.protocols import Letter

MANIFEST_NAME = "manifest.json"


def new_batch_name() -> str:
    """A sortable, unique batch name: ``YYYYMMDDTHHMMSS-<8 hex>``."""
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def count_pages(pdf: bytes) -> int | None:
    """Pages in the PDF, or None when pypdf is not installed or cannot read it."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        return None
    try:
        return len(PdfReader(io.BytesIO(pdf)).pages)
    except (PyPdfError, ValueError, KeyError):
        return None


def build_manifest(batch: str, letters: Sequence[Letter]) -> bytes:
    entries = [{
        "file": letter.name,
        "detail_id": letter.detail_id,
        "pages": count_pages(letter.pdf),
        "size": len(letter.pdf),
        "sha256": hashlib.sha256(letter.pdf).hexdigest(),
    } for letter in letters]
    doc = {"batch": batch, "created_at": utcnow().isoformat(timespec="seconds") + "Z",
           "count": len(entries), "letters": entries}
    return json.dumps(doc, indent=2).encode("utf-8")
