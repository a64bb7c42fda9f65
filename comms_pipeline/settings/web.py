"""The ``[web]`` section: where the Web API listens, its public address, and tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: The API's public address: the open pixel and click links in emails point here.
    base_url: str = "http://127.0.0.1:8000"
    #: ``off``, ``all`` communications, or ``notification_runs`` only (SPEC "Tracking").
    tracking: Literal["off", "all", "notification_runs"] = "off"
    #: Where pixel and click URLs point, when not at ``base_url`` (e.g. a tracking domain).
    tracking_base_url: str | None = None
    #: The external system (code) that receives customers' service-request acceptances.
    service_request_system: str | None = None
    page_size: int = Field(100, ge=1, le=1000)
    max_page_size: int = Field(1000, ge=1, le=10000)
    #: Lifetime of a presigned S3 link to a stored document.
    presign_seconds: int = Field(300, ge=10, le=7 * 86400)
    #: The largest request body accepted (413 above it), read only after the key is checked.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    #: How long each API process keeps its copy of which keys and systems have rate and daily
    #: limits (0: read them on every call); a changed limit applies within this long.
    limits_refresh_seconds: float = Field(5.0, ge=0, le=3600)

    @field_validator("base_url", "tracking_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value

    @property
    def tracking_url(self) -> str:
        return self.tracking_base_url or self.base_url
