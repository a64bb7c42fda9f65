"""Removing content on purpose, shared by the retention sweep and erasure: the copies of
documents in their stores, and tracking data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, or_, update

from comms_pipeline.core.errors import GatewayError
from comms_pipeline.pipeline.documents import make_document_store
from comms_pipeline.store.models import tracking_events_t, tracking_links_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from comms_pipeline.gateways.protocols import DocumentStore
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)


def remove_tracking(conn: Connection, detail_ids: Sequence[int]) -> tuple[int, int]:
    """Delete the entries' tracked links and keep their opens and clicks as bare counts (kind
    and time: the reader's browser and the link go). Returns (links deleted, events
    anonymised)."""
    if not detail_ids:
        return 0, 0
    ids = list(detail_ids)
    e = tracking_events_t.c
    events = conn.execute(update(tracking_events_t)
                          .where(e.detail_id.in_(ids),
                                 or_(e.user_agent.isnot(None), e.link_id.isnot(None)))
                          .values(user_agent=None, link_id=None)).rowcount
    links = conn.execute(delete(tracking_links_t)
                         .where(tracking_links_t.c.detail_id.in_(ids))).rowcount
    return links, events


def delete_stored(stores: dict[str, DocumentStore], settings: Settings,
                  docs: Sequence[Any]) -> tuple[set[int], dict[str, GatewayError]]:
    """Remove each document's copy (rows with ``id``, ``storage_backend``, ``location``) from
    its store, opening each backend's store once into ``stores``. Returns the documents whose
    copy is gone (or never was) and the backends that failed, with why (their documents are
    not tried further)."""
    removed: set[int] = set()
    failed: dict[str, GatewayError] = {}
    for doc in docs:
        backend = doc.storage_backend
        if not (backend and doc.location):
            removed.add(doc.id)
            continue
        if backend in failed:
            continue
        try:
            store = stores.get(backend)
            if store is None:
                store = stores[backend] = make_document_store(settings, backend)
            store.delete(doc.location)
        except GatewayError as err:
            log.warning("documents.delete_failed", backend=backend, code=err.code,
                        error=err.description, document_id=doc.id)
            failed[backend] = err
            continue
        removed.add(doc.id)
    return removed, failed


def close_stores(stores: dict[str, DocumentStore]) -> None:
    for store in stores.values():
        store.close()
    stores.clear()
