"""HTTP servers on loopback for the SMS gateway, the push provider and webhook receivers.

Each is a real ``http.server`` on 127.0.0.1 with a free port, records every request it gets
(method, path, headers, body) and answers as configured: ``fail_next(status, times)`` makes
the next requests fail with that status before the normal behaviour resumes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comms_pipeline.gateways.webhook import SignatureError, verify


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LoopbackHttpServer:
    """Base: records requests, answers with :meth:`answer` unless a failure is queued."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self._failures: list[tuple[int, Any]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length))
                status, body = owner._respond(req)
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def fail_next(self, status: int, times: int = 1, body: Any = None) -> None:
        with self._lock:
            self._failures.extend([(status, body if body is not None else
                                    {"details": f"induced failure {status}"})] * times)

    def _respond(self, req: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(req)
            if self._failures:
                return self._failures.pop(0)
        return self.answer(req)

    def answer(self, req: Request) -> tuple[int, Any]:
        return 200, {}


class SmsGatewayServer(LoopbackHttpServer):
    """A CM.com-style gateway: per-message Accepted / Rejected, keyed by reference."""

    def __init__(self, token: str = "test-product-token") -> None:
        super().__init__()
        self.token = token
        self.reject_numbers: dict[str, tuple[int, str]] = {}
        self.accepted: list[dict] = []

    def answer(self, req: Request) -> tuple[int, Any]:
        data = req.json()["messages"]
        if data["authentication"]["productToken"] != self.token:
            return 401, {"details": "No account found for the given authentication",
                         "errorCode": 101, "messages": []}
        answers, refused = [], False
        for msg in data["msg"]:
            number = msg["to"][0]["number"]
            if number in self.reject_numbers:
                code, text = self.reject_numbers[number]
                refused = True
                answers.append({"to": number, "status": "Rejected", "reference": msg["reference"],
                                "parts": 0, "messageDetails": text, "messageErrorCode": code})
                continue
            with self._lock:
                self.accepted.append(msg)
            answers.append({"to": number, "status": "Accepted", "reference": msg["reference"],
                            "parts": 1, "messageDetails": None, "messageErrorCode": 0})
        if refused:
            return 400, {"details": "There are messages with errors", "errorCode": 201,
                         "messages": answers}
        return 200, {"details": f"Created {len(answers)} message(s)", "errorCode": 0,
                     "messages": answers}


class FcmServer(LoopbackHttpServer):
    """FCM HTTP v1 ``messages:send`` with a Bearer token; some tokens are unregistered."""

    project = "comms-test"

    def __init__(self, access_token: str = "test-access-token") -> None:
        super().__init__()
        self.access_token = access_token
        self.unregistered: set[str] = set()
        self.sent: list[dict] = []

    @property
    def send_url(self) -> str:
        return f"{self.url}/v1/projects/{self.project}/messages:send"

    def answer(self, req: Request) -> tuple[int, Any]:
        if req.headers.get("authorization") != f"Bearer {self.access_token}":
            return 401, _fcm_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
        if not req.path.endswith("/messages:send"):
            return 404, _fcm_error(404, "NOT_FOUND", "no such method")
        message = req.json()["message"]
        if message["token"] in self.unregistered:
            return 404, _fcm_error(404, "NOT_FOUND", "Requested entity was not found.",
                                   "UNREGISTERED")
        with self._lock:
            self.sent.append(message)
            n = len(self.sent)
        return 200, {"name": f"projects/{self.project}/messages/0:{n}"}


def _fcm_error(code: int, status: str, message: str, error_code: str | None = None) -> dict:
    details = ([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                 "errorCode": error_code}] if error_code else [])
    return {"error": {"code": code, "message": message, "status": status, "details": details}}


class WebhookReceiver(LoopbackHttpServer):
    """Verifies each webhook's signature with :func:`verify`; keeps the authentic ones."""

    def __init__(self, secret: str, port: int = 0) -> None:
        super().__init__(port)
        self.secret = secret
        self.delivered: list[Request] = []
        self.forged = 0

    def answer(self, req: Request) -> tuple[int, Any]:
        try:
            verify(self.secret, req.headers, req.body)
        except SignatureError:
            self.forged += 1
            return 401, {"error": "bad signature"}
        with self._lock:
            self.delivered.append(req)
        return 204, b""


@pytest.fixture
def sms_gateway() -> Iterator[SmsGatewayServer]:
    server = SmsGatewayServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fcm_server() -> Iterator[FcmServer]:
    server = FcmServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    from comms_pipeline.gateways.webhook import new_secret

    server = WebhookReceiver(secret=new_secret())
    server.start()
    yield server
    server.stop()
