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
    Double,
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
    #: Requests per second on the Web API, and per-media daily limits (``{"email": 250000}``);
    #: NULL is unlimited (see :mod:`comms_pipeline.pipeline.quotas`).
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    daily_limits: Mapped[dict | None] = mapped_column(JSON)
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
    #: The published version, whose content this row and its variants hold (None: none yet).
    live_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class TemplateVersion(Base):
    """Every saved version of a template, draft or published; ``content`` is the whole
    template (settings and variants), so that publishing any version restores it exactly."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    template_code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str | None] = mapped_column(String(200))
    #: When it was last made the live version (None: a draft never published).
    published_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEntry(Base):
    """One administrative change: who, when, what, and the changed fields before and after.

    Append-only: the migration's triggers refuse UPDATE and DELETE for every role.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_kind", "target_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(200))
    change: Mapped[dict | None] = mapped_column(JSON)


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
    __table_args__ = (
        Index("ix_request_headers_work", "status", "priority", "id"),
        # Fair claims: each external system's next headers (queue.lanes).
        Index("ix_request_headers_lanes", "status", "requested_by_system_id", "priority", "id"),
    )
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
    #: Caused by a test API key: sent only to the simulator, left out of reports and quotas.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class RequestDetail(ClaimColumns, Base):
    """One communication to one target address in one media: the queue entry."""

    __tablename__ = "request_details"
    __table_args__ = (
        Index("ix_request_details_work", "state", "media", "priority", "id"),
        # An external system's page of its queue (Web API): 10 ms -> 0.14 ms at 20,000 entries.
        Index("ix_request_details_external", "external_system_id", "state", "priority", "id"),
        # Fair claims: each requesting system's next entries (queue.lanes).
        Index("ix_request_details_lanes", "state", "media", "requested_by_system_id",
              "priority", "id"),
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
    #: The system whose request made this entry (its header's): the claims' fairness lane.
    requested_by_system_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("external_systems.id"))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    parts: Mapped[int | None] = mapped_column(Integer)
    #: The template version the communication was rendered with (None: not merged yet).
    template_version: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_description: Mapped[str | None] = mapped_column(Text)
    gateway_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    gateway_status: Mapped[str | None] = mapped_column(String(64))
    #: The gateway (by its configured name) that took the message, or refused it for good.
    gateway: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Caused by a test API key: sent only to the simulator, left out of reports and quotas.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
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


class GatewayRate(Base):
    """One gateway's token bucket, shared by every copy of its daemon (PostgreSQL only).

    Times are seconds since the epoch on the database server's clock, so that copies on
    machines whose clocks differ share one timeline (``comms_pipeline.store.gateway_rates``).
    """

    __tablename__ = "gateway_rates"
    #: ``media:name``, e.g. ``sms:smpp``.
    gateway: Mapped[str] = mapped_column(String(80), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    refilled_at: Mapped[float] = mapped_column(Double)
    #: Tokens the last lease took.
    granted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The rate while an SMSC's throttling holds (until ``slow_until``).
    slow_rate: Mapped[float | None] = mapped_column(Double)
    slow_until: Mapped[float] = mapped_column(Double, default=0, server_default="0")
    slowed_at: Mapped[float] = mapped_column(Double, default=0, server_default="0")


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
    #: ``live`` or ``test`` (its communications reach only the simulator gateways).
    kind: Mapped[str] = mapped_column(String(8), default="live", server_default="live")
    #: Requests per second on the Web API, and per-media daily limits (``{"email": 250000}``);
    #: NULL is unlimited (see :mod:`comms_pipeline.pipeline.quotas`).
    rate_limit_per_second: Mapped[int | None] = mapped_column(Integer)
    daily_limits: Mapped[dict | None] = mapped_column(JSON)


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


class Suppression(Base):
    """An address no communication goes to (a hard bounce, a complaint, a dead token ...).

    ``address`` is the media's normal form (see :mod:`comms_pipeline.pipeline.suppressions`);
    ``scope`` is ``all`` or ``marketing``. Removed rows are kept, with who removed them and
    why: the list is also the record of why an address was not written to.
    """

    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_lookup", "address", "media"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(Text)
    media: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    #: The queue entry whose failure caused it (no foreign key: erasing old entries must
    #: not be blocked by the list, nor the list lose its rows).
    source_detail_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime)
    removed_by: Mapped[str | None] = mapped_column(String(128))
    removal_reason: Mapped[str | None] = mapped_column(Text)


class SoftBounce(Base):
    """A soft bounce of an address, counted towards its suppression."""

    __tablename__ = "soft_bounces"
    __table_args__ = (Index("ix_soft_bounces_lookup", "address", "media", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(Text)
    media: Mapped[str] = mapped_column(String(16))
    source_detail_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime)


class FeedbackReport(Base):
    """A bounce (DSN) or complaint (ARF) that came back, or a provider's event about one.

    Matched reports name their detail (its history of what came back after the send);
    unmatched or malformed ones are kept too, with why (``problem``) and the report itself
    (``raw``, cut), so that nothing that came back is lost unexplained.
    """

    __tablename__ = "feedback_reports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    detail_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    #: What it did to the entry: rejected, recorded (no state change), unmatched, malformed.
    outcome: Mapped[str] = mapped_column(String(16))
    problem: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(DateTime)


class CallbackEndpoint(Base):
    """A client system's callback URL: the status events of its communications it wants."""

    __tablename__ = "callback_endpoints"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    system_id: Mapped[int] = mapped_column(ForeignKey("external_systems.id"), index=True)
    #: The API key that registered it (None: an operator, through the CLI).
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    #: The events wanted, comma-separated (``accepted,rejected,...``).
    events: Mapped[str] = mapped_column(String(400))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=NOW)


class CallbackEvent(ClaimColumns, Base):
    """The callback outbox: one status event for one endpoint, written in the transaction
    that changed the state, delivered (at least once, in ``seq`` order per entry) by the
    callbacks daemon."""

    __tablename__ = "callback_outbox"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "entry_kind", "entry_id", "seq"),
        Index("ix_callback_outbox_work", "state", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: No foreign key: an endpoint removed while a change is being written must not make
    #: that change fail (its stray events are never claimed: see ``queue.callbacks``).
    endpoint_id: Mapped[int] = mapped_column(BigInteger)
    #: The entry whose events are ordered: a ``detail`` or (a request's own fate) a ``header``.
    entry_kind: Mapped[str] = mapped_column(String(8))
    entry_id: Mapped[int] = mapped_column(BigInteger)
    header_id: Mapped[int | None] = mapped_column(BigInteger)
    detail_id: Mapped[int | None] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(16))
    #: The entry's state after the change (a detail's public state, a header's status).
    entry_state: Mapped[str | None] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))
    #: Extra fields of the event (ids, codes, timestamps only).
    payload: Mapped[dict | None] = mapped_column(JSON)
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending",
                                       server_default="pending")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)


class UsageCounter(Base):
    """A count of one scope's use in one period: Web API requests in the current second
    (period ``second``, one row that moves with the clock) or communications of one media on
    one UTC day (period ``YYYY-MM-DD``, kept as the usage history). Scope ``system:<id>`` or
    ``key:<id>``."""

    __tablename__ = "usage_counters"
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime)
    count: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


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
template_versions_t = _table(TemplateVersion)
audit_t = _table(AuditEntry)
headers_t = _table(RequestHeader)
details_t = _table(RequestDetail)
documents_t = _table(Document)
transitions_t = _table(StateTransition)
heartbeats_t = _table(DaemonHeartbeat)
gateway_rates_t = _table(GatewayRate)
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
suppressions_t = _table(Suppression)
soft_bounces_t = _table(SoftBounce)
feedback_t = _table(FeedbackReport)
callback_endpoints_t = _table(CallbackEndpoint)
callback_outbox_t = _table(CallbackEvent)
usage_t = _table(UsageCounter)
erasures_t = _table(Erasure)
