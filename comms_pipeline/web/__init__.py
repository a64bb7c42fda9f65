"""The Web API (FastAPI): the communication queue for external systems, triggers over HTTP,
agents' view of stored documents, tracking and dynamic links.

Importing this package imports nothing heavy: :mod:`comms_pipeline.web.app` needs the ``api``
extra (FastAPI, uvicorn); :mod:`comms_pipeline.settings.web` needs only pydantic.
"""
