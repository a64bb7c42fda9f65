"""Merged documents (sent emails as .eml, letters as .pdf): reading them back, and where
they are kept.

The Email and Letter Monitors write one ``documents`` row per email or letter entry (the copy
to send); the Storage daemon puts a copy to keep into long-term storage and records the
backend and location on the row. Agents list a contact's documents and fetch one from
wherever it is kept — the configured store, or the database while it is not yet stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from comms_pipeline.core.errors import CommsError, ConfigError
from comms_pipeline.core.retention import removal_notice
from comms_pipeline.store.models import contacts_t, details_t, documents_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.gateways.protocols import DocumentStore
    from comms_pipeline.settings.config import Settings

EXTENSIONS = {"email": "eml", "letter": "pdf"}
_BY_TYPE = {"message/rfc822": "eml", "application/pdf": "pdf"}


class UnknownDocumentError(CommsError):
    """No such document."""


class DocumentUnavailableError(CommsError):
    """The document is neither in storage nor in the database."""


class DocumentRemovedError(DocumentUnavailableError):
    """The document was removed on purpose (the retention policy, an erasure)."""


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    detail_id: int
    kind: str
    content_type: str
    size: int
    sha256: str
    storage_backend: str | None
    location: str | None
    stored_at: datetime | None
    created_at: datetime
    state: str
    address: str | None
    subject: str | None


def extension(kind: str, content_type: str = "") -> str:
    return EXTENSIONS.get(kind) or _BY_TYPE.get(content_type, "bin")


def storage_key(prefix: str, document_id: int, kind: str, content_type: str,
                created_at: datetime) -> str:
    """``[prefix/]YYYY/MM/DD/HH/<id>.<ext>`` — the time-based layout of SPEC."""
    key = f"{created_at:%Y/%m/%d/%H}/{document_id}.{extension(kind, content_type)}"
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def document_contents(conn: Connection, detail_ids: Sequence[int]) -> dict[int, bytes]:
    """The copy to send of each listed detail's document, in one query."""
    if not detail_ids:
        return {}
    rows = conn.execute(select(documents_t.c.detail_id, documents_t.c.content)
                        .where(documents_t.c.detail_id.in_(list(detail_ids))))
    return {r.detail_id: bytes(r.content) for r in rows if r.content is not None}


def make_document_store(settings: Settings, backend: str | None = None) -> DocumentStore:
    """The store of ``backend`` (default: the configured one), built from the settings."""
    cfg = settings.gateways.storage
    backend = backend or cfg.backend
    if backend == "local":
        from comms_pipeline.gateways.local_files import LocalDocumentStore

        return LocalDocumentStore(settings.var_dir / "store")
    if backend == "s3":
        from comms_pipeline.gateways.s3 import S3DocumentStore

        return S3DocumentStore(cfg)
    if backend == "sftp":
        from comms_pipeline.gateways.sftp import SftpDocumentStore

        return SftpDocumentStore(cfg)
    raise ConfigError(f"unknown storage backend {backend!r}")


def _info_query():
    d = documents_t.c
    return (select(d.id, d.detail_id, d.kind, d.content_type, d.size, d.sha256,
                   d.storage_backend, d.location, d.stored_at, d.created_at,
                   details_t.c.state, details_t.c.address, details_t.c.subject)
            .join(details_t, details_t.c.id == d.detail_id))


def list_documents(engine: Engine, contact_ref: str) -> list[DocumentInfo]:
    """Every document sent (or to be sent) to the contact, newest first."""
    query = (_info_query()
             .join(contacts_t, contacts_t.c.id == details_t.c.contact_id)
             .where(contacts_t.c.ref == contact_ref)
             .order_by(documents_t.c.created_at.desc(), documents_t.c.id.desc()))
    with engine.connect() as conn:
        return [DocumentInfo(**r._mapping) for r in conn.execute(query)]


def contact_exists(engine: Engine, contact_ref: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(contacts_t.c.id).where(contacts_t.c.ref == contact_ref)
                            ).first() is not None


def fetch_document(settings: Settings, engine: Engine,
                   document_id: int) -> tuple[DocumentInfo, bytes]:
    """A document's bytes from its store (or the database if not stored yet), checked
    against the SHA-256 recorded when it was merged."""
    with engine.connect() as conn:
        row = conn.execute(_info_query().add_columns(documents_t.c.content,
                                                     documents_t.c.purged_at,
                                                     documents_t.c.purged_by)
                           .where(documents_t.c.id == document_id)).first()
    if row is None:
        raise UnknownDocumentError(f"no document with id {document_id}")
    fields = dict(row._mapping)
    content = fields.pop("content")
    removed = removal_notice(fields.pop("purged_at"), fields.pop("purged_by"))
    if removed:
        raise DocumentRemovedError(f"document {document_id} was {removed}")
    info = DocumentInfo(**fields)
    if info.location and info.storage_backend:
        store = make_document_store(settings, info.storage_backend)
        try:
            data = store.get(info.location)
        finally:
            store.close()
    elif content is not None:
        data = bytes(content)
    else:
        raise DocumentUnavailableError(f"document {document_id} is not stored anywhere")
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise DocumentUnavailableError(
            f"document {document_id}: the copy at {info.location or 'the database'} does not "
            "match its recorded SHA-256")
    return info, data


def storage_place(conn: Connection, document_id: int) -> Any | None:
    """Where the document is kept (``storage_backend``, ``location``, and ``removed``: why it
    is not kept any more, or None); None: no such document."""
    row = conn.execute(select(documents_t.c.storage_backend, documents_t.c.location,
                              documents_t.c.purged_at, documents_t.c.purged_by)
                       .where(documents_t.c.id == document_id)).first()
    if row is None:
        return None
    return SimpleNamespace(storage_backend=row.storage_backend, location=row.location,
                           removed=removal_notice(row.purged_at, row.purged_by))
