"""The ``[notifications]`` section: where the business data lives and how big a batch is
(``COMMS_NOTIFICATIONS_*`` variables)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NotificationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    #: The business database that populations and SQL segments are read from; ``None`` means
    #: the comms database itself. ``{var}`` is replaced by the var folder.
    business_database_url: str | None = None
    #: Recipients written per transaction (one notification + one header each).
    batch_size: int = Field(1000, ge=1, le=100_000)
    #: Rows fetched per round trip from the server-side cursor of the population.
    stream_chunk: int = Field(5000, ge=1)
    #: Priority of the headers a run writes (3 = low: bulk runs give way to event-based and
    #: individual communications waiting in the same queue).
    priority: int = Field(3, ge=1, le=3)


def business_url(settings: Any) -> str:
    """The business database URL with ``{var}`` expanded (default: the comms database)."""
    url = settings.notifications.business_database_url
    if not url:
        return settings.database_url
    return url.replace("{var}", str(settings.var_dir))
