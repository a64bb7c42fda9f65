"""SPEC's processing rules for queue entries, with their exact messages (seed 000)."""

from __future__ import annotations

from comms_pipeline.core.states import (
    Direction,
    ErrorCode,
    incoming_not_supported,
    server_not_enabled,
)


def processing_refusal(media: str, direction: str, enabled: bool,
                       server: str | None = None) -> tuple[str, str] | None:
    """Why an entry cannot be processed by the pipeline, as (code, message), or None.

    An incoming entry is refused whatever the settings; an outgoing one when the server
    that would send it (``server``: the daemon's media, by default the entry's) is not
    enabled. Gateway errors come later, from the gateway itself.
    """
    if direction == Direction.INCOMING:
        return ErrorCode.INCOMING_NOT_SUPPORTED, incoming_not_supported(media)
    if not enabled:
        return ErrorCode.SERVER_NOT_ENABLED, server_not_enabled(server or media)
    return None
