"""Request bodies are bounded and read only for a valid key, through a real ``comms api serve``
(uvicorn) on SQLite and PostgreSQL: a huge upload without a key is answered 401 while most
of it is still unsent and the server's memory does not grow; with a valid key a body over the
limit is answered 413 (declared or chunked) and nothing is stored."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from comms_pipeline.store.models import headers_t
from tests.factories import contact, sms_template
from tests.integration.web_support import bearer, client, role_key, with_sections
from tests.servers.smtp import free_port

MB = 1024 * 1024
GOOD = b'{"contact_ref": "C-1", "template_code": "HELLO"}'


def _stored(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(sql_select(func.count()).select_from(headers_t)).scalar_one()


@pytest.fixture
def ready(settings, engine):
    with engine.begin() as conn:
        contact(conn, ref="C-1")
        sms_template(conn, code="HELLO", text="Hello")
    return settings, engine


@pytest.fixture
def server(ready, tmp_path):
    settings, engine = ready
    # `comms api serve` is told its port and does not report one it bound as 0: a port first
    port = free_port()
    env = {**os.environ, "COMMS_DATABASE_URL": settings.database_url,
           "COMMS_PATHS_VAR": str(tmp_path / "var")}
    proc = subprocess.Popen([sys.executable, "-m", "comms_pipeline.cli.main", "api", "serve",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:  # wait until it answers (not a timed assertion: a start-up guard)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)
    yield proc, port, engine
    proc.terminate()
    proc.wait(timeout=30)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _upload(port: int, headers: dict[str, str], total: int, *, chunked: bool = False,
            chunk: int = 256 * 1024) -> tuple[int, bytes, int]:
    """POST ``total`` bytes to /v1/requests as fast as the server takes them, stopping as soon
    as an answer arrives: ``(status, answer body, bytes of the body sent)``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = ("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                 f"\r\n{framing}\r\n{head}\r\n".encode())
    piece = b"x" * chunk
    if chunked:
        piece = f"{chunk:x}\r\n".encode() + piece + b"\r\n"
    sent, answer = 0, b""
    try:
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if writable:
                sent += sock.send(piece)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        head_part, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head_part.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    finally:
        sock.close()
    return int(answer.split(b" ")[1]), body, sent


def test_a_huge_body_without_a_key_is_not_read(server):
    proc, port, engine = server
    before = _rss_kb(proc.pid)
    for headers in ({}, bearer("cp_000000000000_nope"), {"Authorization": "Basic eDp5"}):
        status, body, sent = _upload(port, headers, 400 * MB)
        assert status == 401, body
        assert b'"code":"unauthorized"' in body
        assert sent < 64 * MB, f"{sent / MB:.0f} MB were taken before the answer"
    grown = _rss_kb(proc.pid) - before
    assert grown < 20 * 1024, f"the server grew by {grown / 1024:.0f} MB"
    assert _stored(engine) == 0


def test_a_body_over_the_limit_is_refused_413_and_nothing_is_stored(server):
    proc, port, engine = server
    key = bearer(role_key(engine, "admin"))
    before = _rss_kb(proc.pid)
    status, body, sent = _upload(port, key, 100 * MB)
    assert status == 413 and b'"code":"too_large"' in body and b"1,048,576 bytes" in body
    assert sent < 64 * MB
    status, body, _ = _upload(port, key, 8 * MB, chunked=True)  # no Content-Length
    assert status == 413 and b'"code":"too_large"' in body, body
    assert _rss_kb(proc.pid) - before < 20 * 1024
    assert _stored(engine) == 0
    # A body within the limit is taken.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  + f"Authorization: {key['Authorization']}\r\n".encode()
                  + f"Content-Length: {len(GOOD)}\r\nConnection: close\r\n\r\n".encode() + GOOD)
        assert s.recv(64).startswith(b"HTTP/1.1 202")
    assert _stored(engine) == 1


def test_the_limit_is_configurable(ready):
    settings, engine = ready
    api = client(with_sections(settings, web={"max_body_bytes": 2048}), engine)
    key = bearer(role_key(engine, "admin"))
    padded = GOOD[:-1] + b', "params": {"p": "' + b"y" * 3000 + b'"}}'
    r = api.post("/v1/requests", headers={**key, "Content-Type": "application/json"},
                 content=padded)
    assert r.status_code == 413 and "2,048 bytes" in r.json()["message"]
    r = api.post("/v1/requests", headers={**key, "Content-Type": "application/json"},
                 content=iter([padded[:1500], padded[1500:]]))  # chunked
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    assert api.post("/v1/requests", headers={"Content-Type": "application/json"},
                    content=padded).status_code == 401
    assert _stored(engine) == 0
    r = api.post("/v1/requests", headers={**key, "Content-Type": "application/json"},
                 content=GOOD)
    assert r.status_code == 202 and _stored(engine) == 1
