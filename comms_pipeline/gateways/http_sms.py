"""SMS through a JSON-over-HTTPS gateway in the CM.com style (the "CM. Gateway" of the seeds).

One POST carries up to ``http_batch_size`` messages::

    {"messages": {"authentication": {"productToken": "..."},
                  "msg": [{"from": "Comms", "to": [{"number": "+447700900123"}],
                           "body": {"type": "auto", "content": "..."},
                           "reference": "comms-42", "maximumNumberOfMessageParts": 8}]}}

and the gateway answers per message (``status`` Accepted / Rejected, ``messageErrorCode``,
``messageDetails``, keyed by our ``reference``). Classification: a timeout, a connection
failure, 5xx, 408 and 429 are transient; another 4xx rejects the messages it concerns with the
HTTP status and the gateway's own message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from comms_pipeline.core.errors import (
    ConfigError,
    GatewayError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)
from comms_pipeline.gateways.deadline import http_timeout
from comms_pipeline.gateways.protocols import Outcome, SendResult, SmsMessage

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import SmsGateway

log = structlog.get_logger(__name__)

#: Retried: timeouts and rate limits, and refused credentials (401/403), which are the
#: operator's to fix, not the messages' (as for SMTP AUTH and FCM): kept for a retry.
RETRYABLE_4XX = frozenset({401, 403, 408, 425, 429})


def reference(detail_id: int) -> str:
    return f"comms-{detail_id}"


class HttpSmsSender:
    """:class:`~comms_pipeline.gateways.protocols.SmsSender` over the HTTP gateway."""

    def __init__(self, cfg: SmsGateway) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingExtraError("httpx", "api") from None
        if not cfg.url:
            raise ConfigError("gateways.sms.url is required for the http SMS backend")
        self.cfg = cfg
        self._httpx = httpx
        self.client = httpx.Client(timeout=http_timeout(httpx, cfg))

    def send_many(self, messages: Sequence[SmsMessage]) -> list[Outcome]:
        out: list[Outcome] = []
        step = self.cfg.http_batch_size
        for i in range(0, len(messages), step):
            out.extend(self._post(messages[i:i + step]))
        return out

    def _body(self, messages: Sequence[SmsMessage]) -> dict[str, Any]:
        return {"messages": {
            "authentication": {"productToken": self.cfg.api_key or ""},
            "msg": [{"from": m.sender or self.cfg.source_addr, "to": [{"number": m.to}],
                     "body": {"type": "auto", "content": m.text},
                     "reference": reference(m.detail_id),
                     "minimumNumberOfMessageParts": 1,
                     "maximumNumberOfMessageParts": self.cfg.max_parts} for m in messages]}}

    def _post(self, messages: Sequence[SmsMessage]) -> list[Outcome]:
        headers = {"X-CM-PRODUCTTOKEN": self.cfg.api_key or ""}
        try:
            resp = self.client.post(self.cfg.url, json=self._body(messages), headers=headers)
        except self._httpx.TimeoutException:
            err = TransientGatewayError("HTTP_TIMEOUT", f"no answer within {self.cfg.timeout}s")
            return [err] * len(messages)
        except self._httpx.HTTPError as exc:
            err = TransientGatewayError("HTTP_ERROR", f"{type(exc).__name__}: {exc}"[:300])
            return [err] * len(messages)
        status = resp.status_code
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        details = str(data.get("details") or resp.text.strip()[:300] or resp.reason_phrase)
        code = f"HTTP {status}"
        if status >= 500 or status in RETRYABLE_4XX:
            return [TransientGatewayError(code, details)] * len(messages)
        answers = {str(a.get("reference")): a for a in data.get("messages") or []
                   if isinstance(a, dict)}
        return [self._outcome(m, answers.get(reference(m.detail_id)), status, details)
                for m in messages]

    def _outcome(self, m: SmsMessage, answer: dict | None, status: int,
                 details: str) -> Outcome:
        if answer is None:
            if status >= 400:
                return PermanentGatewayError(f"HTTP {status}", details)
            return TransientGatewayError("HTTP_NO_ANSWER",
                                         "the gateway did not report on this message")
        if str(answer.get("status", "")).lower() == "accepted":
            return SendResult(ref=reference(m.detail_id), reply="Accepted")
        return _rejected(answer, status, details)

    def close(self) -> None:
        self.client.close()


def _rejected(answer: dict, status: int, details: str) -> GatewayError:
    text = str(answer.get("messageDetails") or details)
    error = answer.get("messageErrorCode")
    code = f"HTTP {status}" + (f" / {error}" if error else "")
    return PermanentGatewayError(code, text)
