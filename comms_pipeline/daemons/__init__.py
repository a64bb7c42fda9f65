"""Delivery daemons: each polls its own work with the shared claim mechanism.

Daemons are built by name (``comms daemon run NAME``) from this registry; modules are imported
lazily so that a daemon's optional libraries are needed only when it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from comms_pipeline.core.errors import UnknownNameError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from comms_pipeline.queue.runner import Handler
    from comms_pipeline.settings.config import Settings

DAEMONS: dict[str, str] = {
    "sms": "comms_pipeline.daemons.sms:SmsDaemon",
    "email": "comms_pipeline.daemons.email:EmailDaemon",
    "letter": "comms_pipeline.daemons.letter:LetterDaemon",
    "storage": "comms_pipeline.daemons.storage:StorageDaemon",
    "push-handset": "comms_pipeline.daemons.push_handset:PushHandsetDaemon",
    "push-external": "comms_pipeline.daemons.push_external:PushExternalDaemon",
}


def build_daemon(name: str, settings: Settings, engine: Engine) -> Handler:
    try:
        target = DAEMONS[name]
    except KeyError:
        raise UnknownNameError(
            f"no daemon named {name!r}; known: {', '.join(sorted(DAEMONS))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)(settings, engine)
