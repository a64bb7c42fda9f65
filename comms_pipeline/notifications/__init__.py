"""Notifications and event-based communications (SPEC "Event-based communications and
notifications", "Consent and data protection", "Communications log").

* :mod:`.types` — notification types, event rules and segments (TOML files -> database)
* :mod:`.runs` — notification runs over populations of any size, resumable
* :mod:`.event_rules` — triggers naming an event, expanded by the matching rules
* :mod:`.consent` — who may receive what (direct / affiliate marketing opt-ins, overrides)
* :mod:`.conditions`, :mod:`.segments`, :mod:`.population` — who is in a population
* :mod:`.log` — the communications log (interactions, follow-ups, pipeline sends)
* :mod:`.schedule` — notification types with a cron expression, for ``comms scheduler run``
"""
