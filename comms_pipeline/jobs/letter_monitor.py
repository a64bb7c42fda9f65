"""The Letter Monitor job: merges letter details into PDFs for the Letter daemon.

Each detail's template variant is rendered with its header's data (an HTML body, or the text
body as paragraphs) and laid into the letter frame (A4, window-envelope address block,
sender block, page numbers) by :mod:`comms_pipeline.rendering.pdf`, a batch at a time. Each letter's
PDF is stored as its detail's document and the detail moves on to Awaiting Send (or Awaiting
External) in the same transaction. A template error, a text over the media limit or a
letter WeasyPrint cannot render rejects that detail alone.

Options, in the ``[letters]`` section: ``processes`` (rendering processes, default 1),
``sender`` (the sender block's lines, its first line the PDF's author; default: the From name
of the email settings and the demo company's Nicosia address) and ``tagged`` (tagged PDFs for
screen readers, rendered one by one). The date and the reference number of the date block are
in the letter's language ("1 Δεκεμβρίου 2026", "Αριθμός αναφοράς: 11").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
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
from comms_pipeline.rendering.formatters import Formatters
from comms_pipeline.rendering.letter_words import reference_label
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

#: The demo company's address (Company ZX, a Cyprus company): configure ``[letters] sender``.
DEMO_SENDER_ADDRESS = ("28 Archbishop Makarios III Avenue", "1065 Nicosia", "Cyprus")


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
                               processes or settings.letters.processes, chunk_size,
                               tagged=settings.letters.tagged)

    def handle(self, rows: Sequence[Row], ctx: BatchContext) -> list[Outcome]:
        self.pool.start()  # rendering processes load while this batch is merged
        return super().handle(rows, ctx)

    def produce(self, merged: list[Merged], batch: MergeBatch,
                ctx: BatchContext) -> list[Outcome]:
        outcomes: list[Outcome] = []
        letters: list[LetterContent] = []
        items: list[Merged] = []
        today = utcnow().date()
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
                                         template_version=item.template_version,
                                         payload=document("letter", "application/pdf", pdf)))
        return outcomes

    def content(self, item: Merged, batch: MergeBatch, today: date) -> LetterContent:
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
                             language=item.language,
                             date=Formatters(item.language).date(today, "long"),
                             reference=f"{reference_label(item.language)}: {row.id}")

    def close(self) -> None:
        self.pool.close()
