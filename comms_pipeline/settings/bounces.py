"""The ``[bounces]`` section: the VERP envelope sender and the bounce receiver's address."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BounceSettings(BaseModel):
    """Where bounces and complaints come back.

    With no ``domain`` (the default) outgoing mail keeps ``email.from_address`` as its envelope
    sender, as before; with one, each message is sent ``MAIL FROM:<prefix+ID.SIG@domain>``
    (VERP, signed with the link secret) and ``comms daemon run bounces`` accepts mail for that
    domain only.
    """

    model_config = ConfigDict(extra="forbid")

    domain: str | None = Field(None, description="the bounce domain (VERP); unset: no VERP")
    local_prefix: str = Field("bounces", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(2525, ge=0, le=65535)
    #: A returned report is cut at this many bytes (a DSN returns the original's headers).
    max_message_bytes: int = Field(1_048_576, ge=4096)
    #: The SNS topics whose SES notifications ``POST /feedback/ses`` takes (signature
    #: checked); empty: the endpoint answers 404.
    ses_topic_arns: list[str] = Field(default_factory=list)
    #: Confirm an SNS subscription to one of those topics by fetching its SubscribeURL.
    ses_confirm_subscriptions: bool = True
