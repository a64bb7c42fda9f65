"""The Letter Monitor job: merges letter details into PDFs for the Letter daemon.

Each detail's template variant is rendered with its header's data (an HTML body, or the text
body as paragraphs) and laid into the letter frame (A4, window-envelope address block,
sender block, page numbers) by :mod:`comms_pipeline.rendering.pdf`, a batch at a time. Each letter's
PDF is stored as its detail's document and the detail moves on to Awaiting Send (or Awaiting
External) in the same transaction. A template error, a text over the media limit or a
letter WeasyPrint cannot render rejects that detail alone.

Options, in the ``[letters]`` section: ``processes`` (rendering processes, default 1) and
``sender`` (the sender block's lines; default: the From name of the email settings and a demo
address).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.states import ErrorCode, Media
from comms_pipeline.pipeline.merge_data import (
    MergeBatch,
    Merged,
    MergeJob,
    MergeRejected,
    document,
    next_state,
    rejected,
)
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.queue.work_queues import merge_queue
from comms_pipeline.rendering.mime import InvalidMessage, html_to_text, parse_mailbox, text_to_html
from comms_pipeline.rendering.pdf import (
    DEFAULT_CHUNK,
    LetterContent,
    LetterError,
    LetterPool,
    RendererCrashed,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

DEMO_SENDER_ADDRESS = ("1 Example Street", "London", "EC1A 1AA")


def sender_lines(settings: Settings) -> list[str]:
    if settings.letters.sender:
        return list(settings.letters.sender)
    try:
        name = parse_mailbox(settings.email.from_address).display_name
    except InvalidMessage:
        name = ""
    return [name or "Comms", *DEMO_SENDER_ADDRESS]


class LetterMonitorJob(MergeJob):
    name = "letter-monitor"
    media = Media.LETTER

    def __init__(self, settings: Settings, engine: Engine, *, processes: int | None = None,
                 sender: Sequence[str] | None = None, chunk_size: int = DEFAULT_CHUNK) -> None:
        super().__init__(settings, engine)
        self.queue = merge_queue(Media.LETTER)
        self.pool = LetterPool(sender or sender_lines(settings),
                               processes or settings.letters.processes, chunk_size)

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        self.pool.start()  # rendering processes load while this batch is merged
        return super().handle(rows, ctx)

    def produce(self, merged: list[Merged], batch: MergeBatch,
                ctx: BatchContext) -> list[Outcome]:
        outcomes: list[Outcome] = []
        letters: list[LetterContent] = []
        items: list[Merged] = []
        today = utcnow().date().isoformat()
        for item in merged:
            try:
                letters.append(self.content(item, batch, today))
                items.append(item)
            except MergeRejected as rej:
                outcomes.append(rejected(item.detail.id, rej.code, rej.description, self.media))
        try:
            pdfs = self.pool.render(letters, keep_alive=ctx.keep_alive)
        except RendererCrashed as exc:  # not the letters' fault: try them again later
            return outcomes + [Outcome.retry(item.detail.id, ErrorCode.RENDERER_CRASHED, str(exc))
                               for item in items]
        for item, pdf in zip(items, pdfs, strict=True):
            row = item.detail
            if isinstance(pdf, LetterError):
                outcomes.append(rejected(row.id, ErrorCode.TEMPLATE_ERROR, str(pdf), self.media))
                continue
            log.info("letter.merged", detail_id=row.id, size=len(pdf), language=item.language)
            outcomes.append(Outcome.done(row.id, next_state(row), subject=item.subject,
                                         language=item.language,
                                         payload=document("letter", "application/pdf", pdf)))
        return outcomes

    def content(self, item: Merged, batch: MergeBatch, today: str) -> LetterContent:
        row = item.detail
        body_html = item.html if item.html is not None else text_to_html(item.text or "")
        text = item.text if item.text is not None else html_to_text(body_html)
        limit = batch.limit(row)
        if len(text) > limit:
            raise MergeRejected(ErrorCode.TOO_LONG, f"the merged letter text is {len(text)} "
                                f"characters; the limit is {limit}")
        if not (row.address or "").strip():
            raise MergeRejected(ErrorCode.NO_ADDRESS, "the letter has no postal address")
        return LetterContent(key=row.id, recipient=item.contact.name, address=row.address,
                             subject=item.subject, body_html=body_html,
                             language=item.language, date=today, reference=f"No. {row.id}")

    def close(self) -> None:
        self.pool.close()
