"""The names of the pipeline's stages: the batch jobs and the delivery daemons.

The registry (:mod:`comms_pipeline.runtime.registry`) maps each name to the class that works
it; the names live here so that the settings can check a ``[scheduler]`` table without
importing any stage.
"""

from __future__ import annotations

JOB_NAMES = ("monitor", "email-monitor", "letter-monitor", "expiry-sweep", "retention-sweep")
DAEMON_NAMES = ("sms", "email", "letter", "storage", "push-handset", "push-external",
                "bounces", "callbacks")
