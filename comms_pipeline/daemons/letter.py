"""Letter daemon: delivers merged letter PDFs to the print house drop, one batch per claim.

Each claimed batch becomes one drop batch with its own manifest, so what the print house
receives together is exactly what the queue moved together: either the whole batch is
Completed, or (transport failure) the whole batch is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.states import DetailState
from comms_pipeline.daemons.delivery import DeliveryHandler, outcome_for
from comms_pipeline.gateways.protocols import Letter, LetterDrop
from comms_pipeline.pipeline.documents import document_contents
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.store.dialect import reading

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

NO_DOCUMENT = "NO_DOCUMENT"
NOT_PDF = "NOT_PDF"


def make_letter_drop(settings: Settings) -> LetterDrop:
    cfg = settings.gateways.letter
    if cfg.backend == "local":
        from comms_pipeline.gateways.local_files import LocalLetterDrop

        return LocalLetterDrop(settings.var_dir / "out" / "letters")
    if cfg.backend == "sftp":
        from comms_pipeline.gateways.sftp import SftpLetterDrop

        return SftpLetterDrop(cfg)
    raise ConfigError(f"unknown letter backend {cfg.backend!r}")


class LetterDaemon(DeliveryHandler):
    media = "letter"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        self.drop = make_letter_drop(settings)

    def deliver(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        with reading(self.engine) as conn:
            contents = document_contents(conn, [r.id for r in rows])
        outcomes: list[Outcome] = []
        letters: list[Letter] = []
        for row in rows:
            pdf = contents.get(row.id)
            if not pdf:
                outcomes.append(Outcome.done(row.id, DetailState.REJECTED, NO_DOCUMENT,
                                             "no merged letter document for this entry",
                                             completed_at=utcnow()))
            elif not pdf.startswith(b"%PDF-"):
                outcomes.append(Outcome.done(row.id, DetailState.REJECTED, NOT_PDF,
                                             "the merged letter is not a PDF",
                                             completed_at=utcnow()))
            else:
                letters.append(Letter(row.id, f"{row.id}.pdf", pdf))
        if letters:
            results = self.drop.deliver(letters)
            outcomes.extend(outcome_for(letter.detail_id, res, self.media)
                            for letter, res in zip(letters, results, strict=True))
        ctx.keep_alive()
        return outcomes

    def close(self) -> None:
        self.drop.close()
