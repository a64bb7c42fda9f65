"""The Email Monitor job: merges email details into RFC 5322 messages for the Email daemon.

Each detail waiting for its merge gets its template variant rendered with its header's data,
a text alternative (the template's text body, or one derived from the HTML), and a message
built by :mod:`comms_pipeline.rendering.mime`: From / Reply-To from the configuration, a Message-ID,
and on marketing List-Unsubscribe with a signed opt-out token. The .eml is stored as the
detail's document and the detail moves on to Awaiting Send (or Awaiting External) in the same
transaction. A template error, a text over the media's limit or an unusable address rejects
that detail alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.errors import ConfigError
from comms_pipeline.core.states import Classification, ErrorCode, Media
from comms_pipeline.pipeline.merge_data import (
    MergeBatch,
    Merged,
    MergeJob,
    MergeRejected,
    document,
    next_state,
    rejected,
)
from comms_pipeline.pipeline.tracking import Tracker, record_links
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.queue.claims import Outcome
from comms_pipeline.queue.work_queues import merge_queue
from comms_pipeline.rendering import TemplateError
from comms_pipeline.rendering.mime import (
    HeaderInjection,
    InvalidMessage,
    MessageSpec,
    build_message,
    html_to_text,
    parse_mailbox,
    unsubscribe_link,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from comms_pipeline.queue.runner import BatchContext
    from comms_pipeline.settings.config import Settings

log = structlog.get_logger(__name__)

#: List-Unsubscribe carries a token of the opt-out dynamic link (``links.verify_link(token,
#: UNSUBSCRIBE_ACTION, settings)`` gives back the contact, and the detail id as its subject).
UNSUBSCRIBE_ACTION = "opt_out_direct_marketing"


class EmailMonitorJob(MergeJob):
    name = "email-monitor"
    media = Media.EMAIL

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__(settings, engine)
        self.queue = merge_queue(Media.EMAIL)
        cfg = settings.email
        try:
            self.sender = parse_mailbox(cfg.from_address)
            self.reply_to = parse_mailbox(cfg.reply_to) if cfg.reply_to else None
            unsubscribe_link(cfg.unsubscribe_url, "check")
        except InvalidMessage as exc:
            raise ConfigError(f"email settings: {exc}") from None
        self.tracker = Tracker(settings)
        self._tracked: set[int] = set()
        #: With a bounce domain, each Message-ID carries its detail's signed id (bounces).
        self.verp = VerpAddresses.from_settings(settings)

    def produce(self, merged: list[Merged], batch: MergeBatch,
                ctx: BatchContext) -> list[Outcome]:
        outcomes = []
        if self.tracker.enabled:
            with self.engine.connect() as conn:
                self._tracked = self.tracker.tracked_ids(conn, [m.detail.id for m in merged])
        for item in merged:
            try:
                outcomes.append(self.build(item, batch))
            except MergeRejected as rej:
                outcomes.append(rejected(item.detail.id, rej.code, rej.description, self.media))
            ctx.keep_alive()
        return outcomes

    def build(self, item: Merged, batch: MergeBatch) -> Outcome:
        row = item.detail
        text = item.text if item.text is not None else html_to_text(item.html or "")
        limit = batch.limit(row)
        if len(text) > limit:
            raise MergeRejected(ErrorCode.TOO_LONG, f"the merged email text is {len(text)} "
                                f"characters; the limit is {limit}")
        try:
            to = parse_mailbox(row.address or "", item.contact.name)
        except InvalidMessage as exc:
            raise MergeRejected(ErrorCode.INVALID_ADDRESS, str(exc)) from None
        unsubscribe = None
        if row.classification == Classification.MARKETING:
            # The opt-out link's token, bound to the contact and to this communication.
            token = self.links.token(UNSUBSCRIBE_ACTION, item.contact.ref, str(row.id))
            unsubscribe = unsubscribe_link(self.settings.email.unsubscribe_url, token)
        html, links = item.html, []
        if html and row.id in self._tracked:  # links rewritten, pixel added (Web API tracking)
            try:
                tracked = self.tracker.rewrite(row.id, html)
            except TemplateError as exc:
                raise MergeRejected(ErrorCode.TEMPLATE_ERROR, str(exc)) from None
            html, links = tracked.html, [tracked]
        try:
            data, message_id = build_message(MessageSpec(
                sender=self.sender, reply_to=self.reply_to, to=to, subject=item.subject,
                text=text, html=html, message_id_domain=self.settings.email.message_id_domain,
                unsubscribe_url=unsubscribe,
                message_id_tag=self.verp.message_id_tag(row.id) if self.verp else None,
            ))
        except HeaderInjection as exc:  # a value that would have written a header of its own
            raise MergeRejected(ErrorCode.HEADER_INJECTION, f"{exc}; the email was not sent") \
                from None
        except InvalidMessage as exc:
            raise MergeRejected(ErrorCode.TEMPLATE_ERROR, str(exc)) from None
        log.info("email.merged", detail_id=row.id, message_id=message_id, size=len(data),
                 language=item.language)
        return Outcome.done(row.id, next_state(row), subject=item.subject, body=text,
                            language=item.language, template_version=item.template_version,
                            payload={**document("email", "message/rfc822", data),
                                     "tracking": links})

    def persist(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Documents as every merge job does, plus the tracking links of tracked emails."""
        record_links(conn, [t for o in outcomes if o.payload
                            for t in o.payload.pop("tracking", ())])
        super().persist(conn, outcomes)

