"""The Web API's request and response bodies (pydantic): what the OpenAPI document shows.

Times are answered in UTC with an explicit offset; times given without one are taken as UTC.
Strings that reach the database refuse NUL characters (PostgreSQL cannot store them) and
invalid Unicode (lone surrogates, which JSON's ``\ud800`` escapes make); entity data and
parameters refuse those anywhere inside, and NaN and infinities (see
:mod:`comms_pipeline.core.request_values`; the JSON parser refuses ``NaN`` too,
:mod:`.strict_json`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from comms_pipeline.core.request_values import InvalidValue, check, text_problem
from comms_pipeline.core.states import Media

NO_NUL = r"^[^\x00]*$"


def _valid_text(value: str) -> str:
    why = text_problem(value)
    if why:
        raise ValueError(f"the text {why}")
    return value


def _valid_data(value: Any) -> Any:
    """Entity data and parameters: valid text and finite numbers all the way down."""
    check(value)
    return value


ValidText = AfterValidator(_valid_text)
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL),
                 ValidText]
Text = Annotated[str, StringConstraints(max_length=2000, pattern=NO_NUL), ValidText]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


def as_utc(value: datetime | None) -> datetime | None:
    """Naive UTC (as stored) from any datetime: aware ones are converted, naive kept."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def utc_out(value: datetime | None) -> datetime | None:
    """A stored naive-UTC time, marked as UTC for the answer."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


UtcIn = Annotated[datetime, AfterValidator(as_utc)]
#: A stored (naive UTC) time in an answer: written with its offset, as the schema says.
UtcOut = Annotated[datetime, AfterValidator(utc_out)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class QueueState(StrEnum):
    """Life-cycle states an external system filters its entries by (Expired ones are gone)."""

    PENDING = "Pending"
    COMPLETED = "Completed"
    REJECTED = "Rejected"
    COMPLETED_REMOVED = "Completed and Removed"


class QueueEntry(_Out):
    id: int = Field(description="The entry's number")
    state: str = Field(description="Pending, Rejected, Completed, Completed and Removed, Expired")
    media: str
    external_system: str | None = None
    contact_ref: str | None = None
    address: str | None = None
    language: str | None = None
    subject: str | None = None
    priority: int
    error_code: str | None = None
    error_description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    removed: str | None = Field(None, description="Why the subject and body (and document) "
                                "are gone, e.g. 'removed by the retention policy on "
                                "2026-12-02'")


class DocumentRef(_Out):
    id: int
    kind: str
    content_type: str
    size: int


class QueueEntryContent(QueueEntry):
    """One entry with its merged content (and, for emails, the stored message's HTML)."""

    body: str | None = None
    html: str | None = None
    document: DocumentRef | None = None


class QueuePage(BaseModel):
    items: list[QueueEntry]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; "
                                                      "null on the last page")


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"code": "NO_SUCH_CUSTOMER", "description": "The CRM has no customer C-1001"}]})

    code: Code = Field(description="The external system's error code")
    description: Annotated[str, StringConstraints(min_length=1, max_length=2000,
                                                  pattern=NO_NUL), ValidText]


class BatchAction(StrEnum):
    COMPLETE = "complete"
    REJECT = "reject"
    REMOVE = "remove"


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    action: BatchAction
    code: Code | None = Field(None, description="Error code (reject only)")
    description: Annotated[str, StringConstraints(min_length=1, max_length=2000,
                                                  pattern=NO_NUL), ValidText] | None = None

    @model_validator(mode="after")
    def _reject_explained(self) -> BatchItem:
        if self.action == BatchAction.REJECT and not (self.code and self.description):
            raise ValueError("a reject needs code and description")
        return self


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"actions": [{"id": 101, "action": "complete"},
                     {"id": 102, "action": "reject", "code": "NO_SUCH_CUSTOMER",
                      "description": "The CRM has no customer C-1001"},
                     {"id": 103, "action": "remove"}]}]})

    actions: list[BatchItem] = Field(min_length=1, max_length=1000)


class BatchResult(BaseModel):
    id: int
    status: int = Field(description="200 done, 404 not found, 409 conflict")
    state: str | None = Field(None, description="The entry's state after the call")
    code: str | None = None
    message: str | None = None


class BatchOutcome(BaseModel):
    results: list[BatchResult]


class SendTo(StrEnum):
    ALL = "all"
    PRIMARY = "primary"
    TYPE = "type"


def _plain_values(value: dict[str, Any]) -> dict[str, Any]:
    """Parameters are plain values (no lists or objects), valid text and finite numbers."""
    for name, item in value.items():
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise InvalidValue(name, "is not a valid string, number, true/false or null: "
                                     "parameters are plain values")
    check(value)
    return value


class CommunicationRequest(BaseModel):
    """A communication request: what happened, for whom, and how to communicate it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"contact_ref": "C-1001", "template_code": "WELCOME_SMS",
         "params": {"first_name": "Maria"}, "idempotency_key": "crm-signup-1001"},
        {"contact_ref": "C-1001", "event": "INVOICE_ISSUED", "event_number": "INV-2024-0042",
         "entities": {"invoice": {"number": "INV-2024-0042", "amount": 42.5}},
         "send_after": "2024-06-01T08:00:00Z", "priority": 1}]})

    contact_ref: Code
    template_code: Code | None = None
    event: Code | None = None
    event_number: Code | None = None
    await_resolution: bool = Field(False, description=(
        "A workflow event created 'on create': the request waits in Awaiting Event Resolution "
        "until its event_number is resolved"))
    rule_code: Code | None = None
    override_consent: bool = Field(False, description=(
        "An important message: sent whatever the contact's marketing opt-outs (admin keys "
        "only)"))
    media: Media | None = Field(None, description="Override of the delivery method")
    send_to: SendTo = SendTo.PRIMARY
    address_type: Code | None = None
    language: Annotated[str, StringConstraints(min_length=2, max_length=16,
                                               pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
                        ] | None = None
    entities: dict[Code, Annotated[dict[str, Any], AfterValidator(_valid_data)]] | None = Field(
        None, description="Entity data by entity name, e.g. {\"subscription\": {\"number\": 1}}")
    params: Annotated[dict[Code, Any], AfterValidator(_plain_values)] | None = Field(
        None, description="Unrestricted parameters: values are data, never template code")
    send_after: UtcIn | None = None
    expires_at: UtcIn | None = None
    priority: int = Field(2, ge=1, le=3, description="1 high, 2 medium, 3 low")
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=160,
                                                      pattern=NO_NUL), ValidText] | None = Field(
        None, description="A repeated key creates no second request (the first one's id is "
                          "answered); an external system's keys are its own")

    @model_validator(mode="after")
    def _coherent(self) -> CommunicationRequest:
        if not self.template_code and not self.event:
            raise ValueError("name a template_code or an event (with an optional rule_code)")
        if self.await_resolution and not self.event_number:
            raise ValueError("await_resolution needs the event_number that will be resolved")
        if self.send_to == SendTo.TYPE and not self.address_type:
            raise ValueError("send_to 'type' needs address_type (e.g. 'work')")
        if self.send_after and self.expires_at and self.expires_at <= self.send_after:
            raise ValueError("expires_at must be after send_after")
        return self


class RequestAccepted(BaseModel):
    request_id: int = Field(description="The request header's id")
    idempotency_key: str | None = None
    warnings: list[str] = Field(default_factory=list)


class TrackingSummary(BaseModel):
    opens: int = 0
    clicks: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None


class Communication(QueueEntry):
    template_code: str | None = None
    document: DocumentRef | None = None
    tracking: TrackingSummary


class ContactRef(BaseModel):
    ref: str
    name: str


class CommunicationsPage(BaseModel):
    contact: ContactRef
    items: list[Communication]
    next_cursor: str | None = None


class LogEntry(BaseModel):
    """One interaction of the communications log: logged by an agent, or a pipeline send."""

    id: int = Field(description="The communication number")
    media: str
    direction: str
    category: str | None = None
    subject: str | None = None
    content: str | None = None
    status: str = Field(description="draft or completed")
    follow_up_of_id: int | None = Field(None, description="The communication it follows up")
    queue_entry_id: int | None = Field(None, description="The queue entry, for a send")
    created_by: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
    removed: str | None = Field(None, description="Why the subject and content are gone, "
                                "e.g. 'removed by the retention policy on 2026-12-02'")


class CommunicationsLog(BaseModel):
    contact_ref: str
    items: list[LogEntry]


class TrackingEventOut(BaseModel):
    kind: str
    at: datetime
    url: str | None = None
    user_agent: str | None = None


class EmailPreview(BaseModel):
    """A stored email, read back for an agent (the open pixel removed)."""

    document_id: int
    subject: str | None = None
    sender: str | None = None
    to: str | None = None
    date: str | None = None
    text: str | None = None
    html: str | None = None


class DocumentLink(BaseModel):
    url: str
    expires_in: int = Field(description="Seconds the link stays valid")


class Health(BaseModel):
    status: str
    database: str


class Me(BaseModel):
    name: str
    role: str
    key_prefix: str
    external_system: str | None = None
    #: ``test``: the communications this key requests reach only the simulator.
    kind: Literal["live", "test"] = "live"


class RunTrackingReport(BaseModel):
    """A notification run's tracking: communications made, sent, opened, clicked."""

    run_id: int
    communications: int
    sent: int
    opened: int
    clicked: int
