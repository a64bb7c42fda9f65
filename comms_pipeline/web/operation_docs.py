"""What each Web API operation does, for ``/docs`` and ``/redoc``: one place, so every
operation has a description (a test checks), without scattering prose through the routes.

A route's own ``description=`` (or docstring) wins; these fill in the rest.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("POST", "/feedback/ses"):
        "Amazon SES bounce and complaint notifications, as SNS posts them (no API key: the "
        "SNS signature and a topic listed in `[bounces] ses_topic_arns` authenticate it). A "
        "Permanent bounce turns its Completed email entry Rejected with the DSN status; "
        "subscription confirmations are confirmed. 403 for a bad signature or topic.",
    ("GET", "/health"):
        "Liveness: 200 when the process answers and the database answers `SELECT 1`, 503 "
        "otherwise. No key needed. See `/ready` for the schema check.",
    ("GET", "/v1/queue"):
        "The calling external system's own queue entries, Pending by default (filter by "
        "`state`), oldest first by priority, cursor-paged: pass `next_cursor` back as "
        "`cursor`. Other systems' entries are never listed.",
    ("GET", "/v1/queue/{entry_id}"):
        "One of your entries with its merged content (the text, or the email's HTML). "
        "Another system's entry answers 404.",
    ("GET", "/v1/queue/{entry_id}/document"):
        "The stored document of one of your entries: the email as `message/rfc822` or the "
        "letter as `application/pdf`. 404 when it has none (or is not yours); 409 while it "
        "is not stored yet.",
    ("POST", "/v1/queue/{entry_id}/complete"):
        "You delivered the entry: Pending becomes Completed. Only from Pending (409 "
        "otherwise); with an `Idempotency-Key` a repeated call answers as the first did.",
    ("POST", "/v1/queue/{entry_id}/reject"):
        "You could not deliver the entry: Pending becomes Rejected with your error code and "
        "description (shown to operators and agents). Only from Pending (409 otherwise).",
    ("POST", "/v1/queue/{entry_id}/remove"):
        "The entry is done and should leave your queue: Pending or Completed becomes "
        "Completed and Removed (409 from any other state).",
    ("POST", "/v1/requests"):
        "Trigger a communication for one contact: a `template_code`, or an `event` that the "
        "event rules expand. Checked at once (template, rule and contact exist: 422 "
        "otherwise); the rest (addresses, consent, language) is the Comms Monitor's, which "
        "records the request's fate (`GET /v1/requests/{id}`). Answers 202 with the request's "
        "number; a repeated `idempotency_key` answers the first request's number.",
    ("GET", "/v1/me"):
        "The calling key's name, role, prefix and external system: what a client checks "
        "after configuring its key.",
    ("GET", "/v1/contacts/{ref}/log"):
        "The contact's communications log (agents' interactions, the pipeline's sends and "
        "the follow-ups that refer to them), newest first: the same log as "
        "`comms communications list`. Agent and admin keys.",
    ("GET", "/v1/contacts/{ref}/communications"):
        "What was sent (or is pending, or was rejected) to the contact, newest first, with "
        "each entry's state, error, stored document and tracking counts; cursor-paged. Agent "
        "and admin keys; 404 for an unknown contact.",
    ("GET", "/v1/communications/{detail_id}/tracking"):
        "Every recorded open and click of one communication, oldest first (when tracking is "
        "on). Agent and admin keys.",
    ("GET", "/v1/documents/{document_id}"):
        "A stored email (`.eml`) or letter (`.pdf`), streamed from the storage backend. "
        "Agent and admin keys; reading it is not counted as an open.",
    ("GET", "/v1/documents/{document_id}/preview"):
        "A stored email read back for display: sender, recipients, date, subject, text and "
        "HTML with the open pixel removed. 409 for a letter (download it instead).",
    ("GET", "/v1/documents/{document_id}/link"):
        "A short-lived presigned URL of a document kept in S3 (for large letters); 409 when "
        "the storage backend cannot presign.",
    ("GET", "/v1/notification-runs/{run_id}/tracking"):
        "A notification run's tracking report: how many were sent, opened and clicked, and "
        "the opens and clicks per hour.",
    ("GET", "/t/o/{token}.gif"):
        "The open pixel of a tracked email: records one open and answers a 1×1 GIF. The "
        "token is signed; a bad token still answers the GIF and records nothing.",
    ("GET", "/t/c/{link_id}"):
        "A tracked link: records one click and redirects (302) to the URL recorded when the "
        "email was merged, never to a URL taken from the request. 404 for an unknown id.",
    ("GET", "/links/{name}"):
        "A dynamic link's confirmation page (opt in or out of marketing, accept a service "
        "request). Changes nothing: mail scanners follow links. 410 when the link expired.",
    ("POST", "/links/{name}"):
        "Perform a dynamic link's action once (the confirmation page's button, or an RFC "
        "8058 one-click unsubscribe from the mail client). Repeating it changes nothing.",
}


def describe_operations(app: FastAPI) -> None:
    """Fill in the OpenAPI document's missing descriptions from :data:`DESCRIPTIONS` (on the
    generated document, so it holds however the routers are included)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    text = DESCRIPTIONS.get((method.upper(), path))
                    if text and not operation.get("description"):
                        operation["description"] = text
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
