"""Storage daemon: keeps a copy of every merged email (.eml) and letter (.pdf) for agents.

It claims documents that are not stored yet, writes each to the configured store under
``[prefix/]YYYY/MM/DD/HH/<document id>.<ext>`` (the hour the document was merged, so a
retried write lands on the same key), and records the backend, location and time on the
document row. The key carries the document's metadata where the store supports it (S3: the
detail id, the contact's reference, the kind and the SHA-256). The copy to send stays on the
row: the Email and Letter daemons may not have sent it yet.

When the store fails, the rest of the batch is not tried (the store is most likely down) and
every unsaved document is tried again later. Unlike a queue entry, a document has no Rejected
state to end in, and giving up would silently lose the copy to keep: so storage never gives
up (its work queue's retry policy is :class:`~comms_pipeline.queue.retry.NeverGiveUp`): it
backs off exponentially, capped, for as long as the store is away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import GatewayError
from comms_pipeline.pipeline.documents import make_document_store, storage_key
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.queue.retry import NeverGiveUp
from comms_pipeline.queue.work_queues import storage_queue
from comms_pipeline.store.dialect import reading
from comms_pipeline.store.models import contacts_t, details_t

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)


class StorageDaemon:
    name = "storage"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.queue = storage_queue(NeverGiveUp.from_settings(
            settings.claims, floor=settings.daemons.poll_interval))
        self.prefix = settings.gateways.storage.prefix
        self.store = make_document_store(settings)

    def _contact_refs(self, detail_ids: Sequence[int]) -> dict[int, str]:
        query = (select(details_t.c.id, contacts_t.c.ref)
                 .join(contacts_t, contacts_t.c.id == details_t.c.contact_id)
                 .where(details_t.c.id.in_(list(detail_ids))))
        with reading(self.engine) as conn:
            return {r.id: r.ref for r in conn.execute(query)}

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        refs = self._contact_refs([r.detail_id for r in rows])
        outcomes: list[Outcome] = []
        failure: GatewayError | None = None
        for row in rows:
            if ctx.stopping:
                break  # the rest is released by the runner
            if failure is None:
                failure = self._store(row, refs.get(row.detail_id), outcomes)
            else:  # the store is failing: the rest of the batch waits with the same reason
                outcomes.append(self._later(row, failure.code, failure.description))
            ctx.keep_alive()
        return outcomes

    def _store(self, row: Row, contact_ref: str | None,
               outcomes: list[Outcome]) -> GatewayError | None:
        if row.content is None:
            log.warning("storage.no_content", document_id=row.id, detail_id=row.detail_id)
            outcomes.append(self._later(row, "NO_CONTENT", "the document has no content to "
                                        "store (its copy to send was removed before storage)"))
            return None
        key = storage_key(self.prefix, row.id, row.kind, row.content_type, row.created_at)
        metadata = {"document-id": str(row.id), "detail-id": str(row.detail_id),
                    "contact-ref": contact_ref or "", "kind": row.kind, "sha256": row.sha256}
        try:
            location = self.store.put(key, bytes(row.content), row.content_type, metadata)
        except GatewayError as err:
            log.warning("storage.failed", document_id=row.id, backend=self.store.backend,
                        code=err.code, error=err.description, transient=err.transient)
            outcomes.append(self._later(row, err.code, err.description))
            return err
        log.info("storage.stored", document_id=row.id, detail_id=row.detail_id,
                 backend=self.store.backend, location=location)
        outcomes.append(Outcome.done(row.id, None, storage_backend=self.store.backend,
                                     location=location, stored_at=utcnow(), error_code=None,
                                     error_description=None))
        return None

    def _later(self, row: Row, code: str, description: str) -> Outcome:
        """Try this document again after a backoff, with the reason on the document (shown
        by ``comms status`` and ``comms documents list``); never spend its last attempt: a
        document to keep is never given up."""
        return Outcome.retry(row.id, code[:64], description)

    def close(self) -> None:
        self.store.close()
