"""Webhooks to external systems, signed the Standard Webhooks way, over HTTP(S) with httpx.

Each request carries ``webhook-id`` (the same on every retry of one queue entry, so the
receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, keyed with the
external system's secret (``whsec_<base64 key>``). :func:`verify` is the receiver's side, for
external systems' developers, the docs and the tests.

Targets are checked with :mod:`.netguard` and the request is sent to the checked address.
Any 2xx is success; anything else (a status, a timeout, a refused connection) is transient:
the daemon retries on its schedule and counts failures against the endpoint. A refused
target (``TARGET_REFUSED``) or an unusable secret (``BAD_SECRET``) is the endpoint's fault,
not the message's: the daemon disables the endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from comms_pipeline.core.errors import (
    CommsError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)
from comms_pipeline.gateways.deadline import http_timeout
from comms_pipeline.gateways.netguard import TargetRefused, TargetUnresolved, check_target
from comms_pipeline.gateways.protocols import Outcome, SendResult, WebhookMessage

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import WebhookGateway

log = structlog.get_logger(__name__)

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
TARGET_REFUSED = "TARGET_REFUSED"
BAD_SECRET = "BAD_SECRET"
#: Errors of the endpoint's configuration, not of one delivery: the endpoint is disabled.
ENDPOINT_ERRORS = frozenset({TARGET_REFUSED, BAD_SECRET})


class SignatureError(CommsError):
    """The webhook signature does not verify."""


def new_secret() -> str:
    """A fresh signing secret for an external system."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise SignatureError("the secret is not whsec_<base64>") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes,
                   timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
            "content-type": "application/json"}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance: int = TOLERANCE_SECONDS, now: float | None = None) -> None:
    """Receiver side: raise :class:`SignatureError` unless the request is authentic and fresh.

    ``headers`` may use any case. The signature header may list several space-separated
    signatures (during a secret rotation); one valid ``v1`` signature is enough.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        raise SignatureError("missing or malformed webhook headers") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError("the webhook timestamp is outside the tolerance")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures if s.startswith("v1,")):
        raise SignatureError()


class HttpWebhookSender:
    """:class:`~comms_pipeline.gateways.protocols.WebhookSender` over httpx, ``concurrency``
    requests at a time."""

    def __init__(self, cfg: WebhookGateway) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingExtraError("httpx", "api") from None
        self.cfg = cfg
        self._httpx = httpx
        # No proxies from the environment: the request must go to the address we checked.
        self.client = httpx.Client(timeout=http_timeout(httpx, cfg), trust_env=False,
                                   follow_redirects=False)
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="webhook")

    def send_many(self, messages: Sequence[WebhookMessage]) -> list[Outcome]:
        return list(self._pool.map(self._send, messages))

    def _send(self, m: WebhookMessage) -> Outcome:
        try:
            target = check_target(m.url, allow_private=self.cfg.allow_private_targets,
                                  allow_loopback=self.cfg.allow_loopback_targets)
        except TargetRefused as exc:
            return PermanentGatewayError(TARGET_REFUSED, str(exc))
        except TargetUnresolved as exc:  # a resolver hiccup must not disable the endpoint
            return TransientGatewayError("DNS", str(exc))
        try:
            headers = signed_headers(m.secret, m.event_id, m.payload)
        except SignatureError as exc:
            return PermanentGatewayError(BAD_SECRET, str(exc))
        headers["host"] = target.host_header
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            resp = self.client.post(target.pinned_url, content=m.payload, headers=headers,
                                    extensions=extensions)
        except self._httpx.TimeoutException:
            return TransientGatewayError("HTTP_TIMEOUT", f"no answer within {self.cfg.timeout}s")
        except self._httpx.HTTPError as exc:
            return TransientGatewayError("HTTP_ERROR", f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= resp.status_code < 300:
            return SendResult(ref=m.event_id, reply=f"HTTP {resp.status_code}")
        text = resp.text.strip()[:300] or resp.reason_phrase
        return TransientGatewayError(f"HTTP {resp.status_code}", text)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
