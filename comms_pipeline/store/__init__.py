"""Persistence: the models (every table alias defined once), the engine, migrations and
the dialect helpers (upsert, COPY, ANALYZE, locking).
"""
