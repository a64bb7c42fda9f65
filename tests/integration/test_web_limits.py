"""Rate limits and daily quotas hold across two Web API processes sharing one database.

Each API is a process of its own serving the app with uvicorn on a port the kernel chose;
the limits are counted only in the database, so two processes (or machines) together admit
exactly what one would.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.pipeline.quotas import seconds_to_midnight, set_limits, system_scope, usage
from comms_pipeline.store.models import headers_t
from tests.conftest import make_settings
from tests.integration.web_support import add_system, bearer, ensure_contact


def _serve(url: str, var: str, pipe) -> None:  # type: ignore[no-untyped-def]
    """One API process: the app on the test database, uvicorn on a port the kernel chose
    (sent back through ``pipe``), until the test ends the process."""
    import signal

    import uvicorn

    # Forked from pytest, the process inherits whatever handlers an earlier test installed
    # (a Runner's SIGTERM handler only sets an event): SIGTERM must end it, as it would a
    # server, or the session waits for it at exit.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)

    from comms_pipeline.store.db import make_engine
    from comms_pipeline.web.app import create_app

    settings = make_settings(url, Path(var), COMMS_WEB_LIMITS_REFRESH_SECONDS="0")
    app = create_app(settings, make_engine(settings.database_url))  # its own pool
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    pipe.send(server.servers[0].sockets[0].getsockname()[1] if server.started else None)
    thread.join()


@pytest.fixture
def two_apis(db_url, tmp_path):  # type: ignore[no-untyped-def]
    """Two API processes on the test database: yields their base URLs. They are forked from
    this one (which has imported the app already), so they start in a moment; each has its
    own connections and its own copy of the limits, and shares only the database."""
    ctx = multiprocessing.get_context("fork")
    procs, ports = [], []
    try:
        for i in range(2):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(db_url, str(tmp_path / f"var{i}"), theirs),
                               daemon=True)
            proc.start()
            procs.append(proc)
            assert ours.poll(60), "an API process did not start"
            ports.append(ours.recv())
        assert all(ports), "an API process did not start"
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _burst(bases: list[str], key: str, n: int) -> list[httpx.Response]:
    """``n`` calls alternating between the two processes, all within one wall-clock second
    (the rate window): a burst that straddles a second is made again."""
    with httpx.Client(timeout=20) as http:
        for _ in range(10):
            time.sleep(1 - time.time() % 1 + 0.02)  # just after a second begins
            start = int(time.time())
            out = [http.get(f"{bases[i % 2]}/v1/queue", headers=bearer(key))
                   for i in range(n)]
            if int(time.time()) == start:
                return out
    pytest.fail("no burst fitted in one second in ten tries (an overloaded machine?)")


def test_rate_and_daily_limits_hold_across_two_api_processes(engine, two_apis):
    _rate_limit_holds(engine, two_apis)
    _daily_quota_holds(engine, two_apis)


def _rate_limit_holds(engine, two_apis) -> None:  # type: ignore[no-untyped-def]
    system_id, key = add_system(engine, "RATED")
    _, free_key = add_system(engine, "FREE")
    with engine.begin() as conn:
        set_limits(conn, system_id=system_id, rate=3)

    responses = _burst(two_apis, key, 8)

    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 3, 429: 5}  # 3 per second in all, not 3 per process
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["code"] == "rate_limited"
    assert "RATED may make 3 request(s) per second" in refused.json()["message"]
    # A system with no limits is not counted at all.
    assert {r.status_code for r in _burst(two_apis, free_key, 8)} == {200}


def _daily_quota_holds(engine, two_apis) -> None:  # type: ignore[no-untyped-def]
    system_id, key = add_system(engine, "DAILY")
    ensure_contact(engine, "C-1")
    with engine.begin() as conn:
        save_template(conn, TemplateSpec("T-MAIL", "Mail", "email", variants=[
            VariantSpec("en", "Hi", "<p>Hi</p>", "Hi")]))
        set_limits(conn, system_id=system_id, daily={"email": 5, "letter": 20000})

    with httpx.Client(timeout=20) as http:
        responses = [http.post(f"{two_apis[i % 2]}/v1/requests", headers=bearer(key),
                               json={"contact_ref": "C-1", "template_code": "T-MAIL"})
                     for i in range(8)]
        answered = utcnow()

    assert [r.status_code for r in responses] == [202] * 5 + [429] * 3
    refused = responses[-1].json()
    assert refused["code"] == "quota_exceeded"
    assert refused["details"] == {"limit": 5, "media": "email", "per": "day",
                                  "scope": "external system DAILY"}
    # Retry-After: the seconds to the next UTC midnight, as the API process saw it just
    # before this clock reading (a call that crosses midnight gives a full day back).
    retry_after = int(responses[-1].headers["Retry-After"])
    until_midnight = seconds_to_midnight(answered)
    assert until_midnight <= retry_after <= until_midnight + 30 or retry_after >= 86400 - 30
    with engine.connect() as conn:
        assert usage(conn, [system_scope(system_id)])[system_scope(system_id)]["email"] == 5
        assert conn.execute(select(func.count()).select_from(headers_t)).scalar_one() == 5
