"""The ``[callbacks]`` section: status callbacks to client systems (their retry schedule).

Callbacks are sent through the webhook gateway (``[gateways.webhook]``: backend, timeout,
concurrency, loopback/private targets), signed with each endpoint's own secret.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CallbackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 60.0, 300.0, 1800.0, 7200.0, 18000.0],
        description="delay before each retry of an event (the last one repeats)")
    max_attempts: int = Field(12, ge=1, description="tries of one event before it is failed "
                              "and the next event of its entry goes (about 37 hours)")
    disable_after_failures: int = Field(20, ge=1, description="an endpoint is disabled after "
                                        "this many failed deliveries in a row")
