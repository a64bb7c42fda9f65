"""Answers of ``GET /v1/requests`` and ``GET /v1/requests/{id}``: a request's fate."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RequestSummary(BaseModel):
    id: int = Field(description="The request's number (as `POST /v1/requests` answered it)")
    contact_ref: str
    template_code: str | None = None
    event: str | None = None
    event_number: str | None = None
    rule_code: str | None = None
    media: str | None = Field(None, description="The media asked for (None: the template's)")
    status: str = Field(description="awaiting_processing, awaiting_event_resolution, "
                                    "processed, error, not_sent, opted_out, cancelled")
    status_code: str | None = Field(None, description="Why it was not sent, e.g. "
                                                      "UNKNOWN_CONTACT, OPTED_OUT, NO_ADDRESS")
    status_reason: str | None = Field(None, description="The same, in words")
    details_created: int = Field(description="Queue entries the request became")
    send_after: datetime | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    requested_by: str | None = Field(None, description="The external system that made it")
    is_test: bool = Field(False, description="Made with a test key: its entries were sent "
                                             "only to the simulator")


class RequestPage(BaseModel):
    items: list[RequestSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; "
                                                      "null on the last page")


class RequestEntry(BaseModel):
    id: int = Field(description="The queue entry's number")
    media: str
    state: str = Field(description="Pending, Rejected, Completed, Completed and Removed, "
                                   "Expired")
    address: str | None = None
    error_code: str | None = None
    error_description: str | None = None
    attempts: int = 0
    external_system: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None


class RequestEvent(BaseModel):
    what: str = Field(description="`request` or `entry`")
    id: int = Field(description="The request's or the entry's number")
    from_state: str | None = None
    to_state: str
    code: str | None = None
    actor: str | None = None
    at: datetime | None = None


class RequestFate(BaseModel):
    request: RequestSummary
    entries: list[RequestEntry]
    history: list[RequestEvent] = Field(description="Every state change, oldest first")


class UnsentItem(BaseModel):
    request_id: int
    entry_id: int | None = Field(None, description="The queue entry, when an entry (not the "
                                                   "whole request) was not sent")
    template_code: str | None = None
    media: str | None = None
    status: str
    code: str | None = None
    reason: str | None = None
    created_at: datetime | None = None


class UnsentPage(BaseModel):
    contact_ref: str
    items: list[UnsentItem]


class Readiness(BaseModel):
    status: str = Field(description="`ok` or `unavailable`")
    database: str = Field(description="`ok` or `unreachable`")
    schema_revision: str | None = Field(None, alias="schema",
                                        description="The database's migration revision")
    head: str | None = Field(None, description="The code's latest migration revision")

    model_config = {"populate_by_name": True}
