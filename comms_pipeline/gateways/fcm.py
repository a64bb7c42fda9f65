"""Push to handsets through an HTTP push provider in the FCM HTTP v1 message format.

One ``POST <url>`` (``.../v1/projects/<project>/messages:send``) per message, with a Bearer
access token and ``{"message": {"token", "notification": {"title", "body"}, "data"}}``;
``concurrency`` requests run at once because the v1 API has no batch call. The answer's
``name`` is the message's reference.

Errors use FCM's own code (``details[].errorCode``, else ``error.status``). A token the
provider no longer knows (``UNREGISTERED``) raises :class:`UnregisteredToken` so that the
daemon can flag the device address (a bare 404 is a wrong endpoint: transient); 401, 429,
5xx and timeouts are transient (an expired access token is an operations problem, not the
message's); other 4xx reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from comms_pipeline.core.errors import (
    ConfigError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)
from comms_pipeline.gateways.deadline import http_timeout
from comms_pipeline.gateways.protocols import Outcome, PushMessage, SendResult

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import PushGateway

TRANSIENT_STATUSES = frozenset({401, 408, 429})


class UnregisteredToken(PermanentGatewayError):
    """The device token is no longer registered with the push provider."""


def fcm_body(m: PushMessage) -> dict[str, Any]:
    notification = {"body": m.body}
    if m.title:
        notification["title"] = m.title
    message: dict[str, Any] = {"token": m.token, "notification": notification}
    if m.data:
        message["data"] = {str(k): str(v) for k, v in m.data.items()}
    return {"message": message}


def classify(status: int, payload: Any) -> PermanentGatewayError | TransientGatewayError:
    """An FCM error answer as our exception."""
    error = payload.get("error", {}) if isinstance(payload, dict) else {}
    error = error if isinstance(error, dict) else {}
    codes: list[Any] = [d.get("errorCode") for d in error.get("details") or []
             if isinstance(d, dict) and d.get("errorCode")]
    code = codes[0] if codes else str(error.get("status") or f"HTTP {status}")
    text = f"HTTP {status}: {error.get('message') or 'no message'}"[:300]
    if code == "UNREGISTERED":
        # Only the provider's word about the token: a bare 404 (a wrong URL or project)
        # says nothing about any device and must not flag every contact's address.
        return UnregisteredToken(code, text)
    if status == 404:
        return TransientGatewayError(code, f"{text} (is the push endpoint or project right?)")
    if status >= 500 or status in TRANSIENT_STATUSES or code in ("UNAVAILABLE", "INTERNAL",
                                                                 "QUOTA_EXCEEDED"):
        return TransientGatewayError(code, text)
    return PermanentGatewayError(code, text)


class FcmPushSender:
    """:class:`~comms_pipeline.gateways.protocols.PushSender` for the FCM HTTP v1 API."""

    def __init__(self, cfg: PushGateway) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingExtraError("httpx", "api") from None
        if not cfg.url or not cfg.access_token:
            raise ConfigError("gateways.push.url and gateways.push.access_token are required "
                              "for the fcm push backend")
        self.cfg = cfg
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {cfg.access_token or ''}"}
        limits = httpx.Limits(max_connections=cfg.concurrency,
                              max_keepalive_connections=cfg.concurrency)
        self.client = httpx.Client(timeout=http_timeout(httpx, cfg), headers=headers, limits=limits)
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="fcm")

    def send_many(self, messages: Sequence[PushMessage]) -> list[Outcome]:
        return list(self._pool.map(self._send, messages))

    def _send(self, m: PushMessage) -> Outcome:
        try:
            resp = self.client.post(self.cfg.url, json=fcm_body(m))
        except self._httpx.TimeoutException:
            return TransientGatewayError("HTTP_TIMEOUT", f"no answer within {self.cfg.timeout}s")
        except self._httpx.HTTPError as exc:
            return TransientGatewayError("HTTP_ERROR", f"{type(exc).__name__}: {exc}"[:300])
        try:
            payload = resp.json()
        except ValueError:
            payload = {}
        if 200 <= resp.status_code < 300:
            name = payload.get("name") if isinstance(payload, dict) else None
            return SendResult(ref=str(name)[:128] if name else None, reply="sent")
        return classify(resp.status_code, payload)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
