"""The schema, as SQLAlchemy 2 declarative models.

The same models serve SQLite (embedded default) and PostgreSQL. Timestamps are naive UTC,
always computed in Python (``db.utcnow``) except the server defaults that let a workflow system
insert a header with plain SQL. Bulk paths use ``Model.__table__`` with SQLAlchemy Core.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Integer primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
NOW = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ClaimColumns:
    """Columns of the shared claim mechanism (:mod:`comms_pipeline.queue.claims`)."""

    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    preferred_language: Mapped[str | None] = mapped_column(String(16))
    opt_in_direct_marketing: Mapped[bool] = mapped_column(Boolean, default=False,
                                                          server_default=text("false"))
    opt_in_affiliate_marketing: Mapped[bool] = mapped_column(Boolean, default=False,
                                                             server_default=text("false"))
    data: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class ContactAddress(Base):
    __tablename__ = "contact_addresses"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(16))
    address_type: Mapped[str] = mapped_column(String(32), default="home")
    value: Mapped[str] = mapped_column(Text)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False,
                                             server_default=text("false"))
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class ExternalSystem(Base):
    __tablename__ = "external_systems"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    max_chars: Mapped[int | None] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class MediaSetting(Base):
    """Per-media switches; a media without a row is enabled with SPEC's default limit."""

    __tablename__ = "media_settings"
    media: Mapped[str] = mapped_column(String(16), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    max_chars: Mapped[int | None] = mapped_column(Integer)


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    media: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16), default="outgoing")
    category: Mapped[str | None] = mapped_column(String(64))
    classification: Mapped[str] = mapped_column(String(32), default="customer_care")
    referring_entities: Mapped[list] = mapped_column(JSON, default=list)
    unrestricted_params: Mapped[list] = mapped_column(JSON, default=list)
    external_system_id: Mapped[int | None] = mapped_column(ForeignKey("external_systems.id"))
    default_language: Mapped[str] = mapped_column(String(16), default="en")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class TemplateVariant(Base):
    __tablename__ = "template_variants"
    __table_args__ = (UniqueConstraint("template_id", "language"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)


class RequestHeader(ClaimColumns, Base):
    """One communication request, as written by a trigger (see README for the plain SQL)."""

    __tablename__ = "request_headers"
    __table_args__ = (Index("ix_request_headers_work", "status", "priority", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    event: Mapped[str | None] = mapped_column(String(64))
    event_number: Mapped[str | None] = mapped_column(String(64))
    template_code: Mapped[str | None] = mapped_column(String(64))
    rule_code: Mapped[str | None] = mapped_column(String(64))
    contact_ref: Mapped[str] = mapped_column(String(64))
    media: Mapped[str | None] = mapped_column(String(16))
    send_to: Mapped[str] = mapped_column(String(16), default="primary",
                                         server_default="primary")
    address_type: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(16))
    entities: Mapped[dict | None] = mapped_column(JSON)
    params: Mapped[dict | None] = mapped_column(JSON)
    send_after: Mapped[datetime | None] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    priority: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    copy_of_id: Mapped[int | None] = mapped_column(ForeignKey("request_headers.id"), index=True)
    override_consent: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=text("false"))
    #: The external system whose key made the request over the Web API (None: SQL, the CLI,
    #: an admin key): it alone may read the request's fate besides admins.
    requested_by_system_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("external_systems.id"), index=True)
    notification_id: Mapped[int | None] = mapped_column(ForeignKey("notifications.id"),
                                                        index=True)
    status: Mapped[str] = mapped_column(String(32), default="awaiting_processing",
                                        server_default="awaiting_processing")
    status_code: Mapped[str | None] = mapped_column(String(64))
    status_reason: Mapped[str | None] = mapped_column(Text)
    details_created: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class RequestDetail(ClaimColumns, Base):
    """One communication to one target address in one media: the queue entry."""

    __tablename__ = "request_details"
    __table_args__ = (
        Index("ix_request_details_work", "state", "media", "priority", "id"),
        # An external system's page of its queue (Web API): 10 ms -> 0.14 ms at 20,000 entries.
        Index("ix_request_details_external", "external_system_id", "state", "priority", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    header_id: Mapped[int] = mapped_column(ForeignKey("request_headers.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"))
    media: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16), default="outgoing")
    classification: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(Text)
    address_type: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(16))
    external_system_id: Mapped[int | None] = mapped_column(ForeignKey("external_systems.id"),
                                                           index=True)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    parts: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_description: Mapped[str | None] = mapped_column(Text)
    gateway_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    gateway_status: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: When and why (``retention`` or ``erasure``) the content was removed on purpose.
    purged_at: Mapped[datetime | None] = mapped_column(DateTime)
    purged_by: Mapped[str | None] = mapped_column(String(16))


class Document(ClaimColumns, Base):
    """A merged document (an .eml or a .pdf): one copy to send, kept until stored."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_storage", "stored_at", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    detail_id: Mapped[int] = mapped_column(ForeignKey("request_details.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_backend: Mapped[str | None] = mapped_column(String(16))
    location: Mapped[str | None] = mapped_column(Text)
    stored_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Why the last attempt to store it failed (kept until it is stored).
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    #: When and why (``retention`` or ``erasure``) the content was removed on purpose.
    purged_at: Mapped[datetime | None] = mapped_column(DateTime)
    purged_by: Mapped[str | None] = mapped_column(String(16))


class SmsPart(Base):
    """One part of an SMS as the SMSC took it: its message id in full, for the receipts.

    A detail's ``gateway_ref`` holds at most 128 characters of its joined part ids (enough
    for three UUIDs); receipts are matched here. A message sent again (a lost link, a retry)
    has parts from each sending.
    """

    __tablename__ = "sms_parts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    detail_id: Mapped[int] = mapped_column(ForeignKey("request_details.id"), index=True)
    part_no: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str] = mapped_column(String(128), index=True)
    receipt_state: Mapped[str | None] = mapped_column(String(16))
    receipt_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SmsReceipt(Base):
    """A delivery receipt taken from the SMSC and not yet matched to its part.

    Written before the receipt is acknowledged, so that one arriving just before a crash (or
    ahead of its own submit_sm_resp) is matched later, by whichever SMS daemon runs next.
    """

    __tablename__ = "sms_receipts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), index=True)
    stat: Mapped[str] = mapped_column(String(16))
    err: Mapped[str | None] = mapped_column(String(32))
    done_date: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(DateTime)


class StateTransition(Base):
    """Every state change of a header, detail or document, with its time and its cause."""

    __tablename__ = "state_transitions"
    __table_args__ = (Index("ix_state_transitions_row", "kind", "row_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    row_id: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(128))
    code: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)


class DaemonHeartbeat(Base):
    __tablename__ = "daemon_heartbeats"
    instance: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    beat_at: Mapped[datetime] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)
    processed: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    """A Web API credential: shown once, stored hashed, found by its prefix, rotatable.

    Role ``external`` belongs to one external system and sees only its entries; ``agent``
    reads contacts' communications and documents; ``admin`` may do everything.
    """

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    external_system_id: Mapped[int | None] = mapped_column(ForeignKey("external_systems.id"),
                                                           index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class IdempotencyRecord(Base):
    """The stored answer to a Web API call made with an ``Idempotency-Key``."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class TrackingLink(Base):
    """A link recorded when a message was merged; clicks redirect only to these URLs."""

    __tablename__ = "tracking_links"
    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    detail_id: Mapped[int] = mapped_column(ForeignKey("request_details.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class TrackingEvent(Base):
    __tablename__ = "tracking_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    detail_id: Mapped[int] = mapped_column(ForeignKey("request_details.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    link_id: Mapped[str | None] = mapped_column(ForeignKey("tracking_links.id"))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(DateTime)


class LinkAction(Base):
    """A dynamic link followed: the action it performed, once per token."""

    __tablename__ = "link_actions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    action: Mapped[str] = mapped_column(String(64))
    detail_id: Mapped[int | None] = mapped_column(ForeignKey("request_details.id"))
    data: Mapped[dict | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime)


class Segment(Base):
    """A population: a SQL query against the business database, or a stored list."""

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    query: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class SegmentMember(Base):
    __tablename__ = "segment_members"
    __table_args__ = (UniqueConstraint("segment_id", "member_ref"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    member_ref: Mapped[str] = mapped_column(String(64))


class EventRule(Base):
    __tablename__ = "event_rules"
    __table_args__ = (Index("ix_event_rules_match", "entity", "event", "active"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    entity: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    email_template: Mapped[str | None] = mapped_column(String(64))
    sms_template: Mapped[str | None] = mapped_column(String(64))
    send_to: Mapped[str] = mapped_column(String(16), default="primary")
    address_type: Mapped[str | None] = mapped_column(String(32))
    consider_presentment_preferences: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"))
    conditions: Mapped[list | None] = mapped_column(JSON)
    respect_consent: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class NotificationType(Base):
    __tablename__ = "notification_types"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    classification: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(64))
    template_code: Mapped[str] = mapped_column(String(64))
    population_query: Mapped[str | None] = mapped_column(Text)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"))
    conditions: Mapped[list | None] = mapped_column(JSON)
    apply_data_protection: Mapped[bool] = mapped_column(Boolean, default=True,
                                                        server_default=text("true"))
    respect_consent: Mapped[str | None] = mapped_column(String(16))
    expiry_hours: Mapped[int | None] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class NotificationRun(Base):
    """One run of a type over the period its run key names (a day, a month, an explicit key):
    unique per type and key, so a period is never run twice."""

    __tablename__ = "notification_runs"
    __table_args__ = (Index("ux_notification_runs_type_run_key", "type_id", "run_key",
                            unique=True),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("notification_types.id"), index=True)
    #: The period the run covers (NULL for runs made before run keys).
    run_key: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    resume_after: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped_consent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped_condition: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    errors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    summary: Mapped[dict | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Notification(Base):
    """One recipient of a notification run; unique per run so a restart makes no duplicate,
    and unique per type, run key and recipient so that no second process, past any lock,
    notifies a recipient twice for one period."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("run_id", "recipient_key"),
                      Index("ux_notifications_type_run_key_recipient", "type_id", "run_key",
                            "recipient_key", unique=True))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("notification_runs.id"), index=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("notification_types.id"))
    run_key: Mapped[str | None] = mapped_column(String(100))
    number: Mapped[str] = mapped_column(String(64), unique=True)
    recipient_key: Mapped[str] = mapped_column(String(200))
    contact_ref: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SkippedRecipient(Base):
    """A recipient a run or rule did not communicate with, and why (SPEC's not-sent reasons)."""

    __tablename__ = "skipped_recipients"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("notification_runs.id"), index=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("event_rules.id"))
    contact_ref: Mapped[str] = mapped_column(String(64))
    recipient_key: Mapped[str | None] = mapped_column(String(200))
    reason_code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)


class Communication(Base):
    """The communications log: interactions of any media and direction, logged or sent."""

    __tablename__ = "communications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    media: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("communications.id"))
    detail_id: Mapped[int | None] = mapped_column(ForeignKey("request_details.id"), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: When and why (``retention`` or ``erasure``) the content was removed on purpose.
    purged_at: Mapped[datetime | None] = mapped_column(DateTime)
    purged_by: Mapped[str | None] = mapped_column(String(16))


class Erasure(Base):
    """One person's personal data erased: the pseudonym that replaced the reference, when,
    by whom and how many rows of each kind were touched (``comms contacts erase``)."""

    __tablename__ = "erasures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime)
    erased_by: Mapped[str] = mapped_column(String(128))
    counts: Mapped[dict | None] = mapped_column(JSON)


def _table(model: type[Base]) -> Table:
    """A model's table, typed as a Table (SQLAlchemy types ``__table__`` as a FromClause)."""
    return cast(Table, model.__table__)


#: Every table's alias, defined here once; the rest of the package imports these.
contacts_t = _table(Contact)
addresses_t = _table(ContactAddress)
systems_t = _table(ExternalSystem)
media_settings_t = _table(MediaSetting)
templates_t = _table(Template)
variants_t = _table(TemplateVariant)
headers_t = _table(RequestHeader)
details_t = _table(RequestDetail)
documents_t = _table(Document)
transitions_t = _table(StateTransition)
heartbeats_t = _table(DaemonHeartbeat)
keys_t = _table(ApiKey)
idempotency_t = _table(IdempotencyRecord)
tracking_links_t = _table(TrackingLink)
tracking_events_t = _table(TrackingEvent)
link_actions_t = _table(LinkAction)
segments_t = _table(Segment)
members_t = _table(SegmentMember)
rules_t = _table(EventRule)
types_t = _table(NotificationType)
runs_t = _table(NotificationRun)
notifications_t = _table(Notification)
skipped_t = _table(SkippedRecipient)
comms_t = _table(Communication)
sms_parts_t = _table(SmsPart)
sms_receipts_t = _table(SmsReceipt)
erasures_t = _table(Erasure)
