"""Prometheus metrics after a small pipeline run: the counters agree with the database;
``/ready`` says whether the schema is at head; ``--metrics-port`` serves a daemon's own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.admin_records import AddressSpec, add_contact
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import build_daemon
from comms_pipeline.runtime.run import run_job
from comms_pipeline.store.models import details_t
from tests.factories import sms_template
from tests.integration.web_support import client
from tests.servers.smtp import free_port


def _samples(body: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_match_the_database_after_a_run(settings, engine):
    with engine.begin() as conn:
        sms_template(conn, code="HELLO", text="Hello")
        add_contact(conn, "C-1", "Maria", addresses=[AddressSpec("phone", "+35799123456",
                                                                 is_primary=True)])
        add_contact(conn, "C-2", "Bad", addresses=[AddressSpec("phone", "12ab", is_primary=True)])
    api = client(settings, engine)
    before = _samples(api.get("/metrics").text)
    for _ in range(3):
        trigger(engine, contact_ref="C-1", template_code="HELLO")
    trigger(engine, contact_ref="C-2", template_code="HELLO")
    trigger(engine, contact_ref="C-404", template_code="HELLO")
    trigger(engine, contact_ref="C-1", template_code="HELLO",
            send_after=utcnow().replace(year=utcnow().year + 1))
    run_job("monitor", settings, engine)
    runner = Runner(settings, engine, build_daemon("sms", settings, engine), once=True)
    runner.run()
    assert runner.outcomes == {"completed": 3}  # what "handled" was made of

    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).where(details_t.c.state == "completed",
                                                       details_t.c.media == "sms")).scalar()
    assert sent == 3
    assert _value(after, "comms_queue_entries", media="sms", state="Completed") == sent
    delta = (_value(after, "comms_worker_outcomes_total", stage="sms", media="sms",
                    outcome="completed", code="")
             - _value(before, "comms_worker_outcomes_total", stage="sms", media="sms",
                      outcome="completed", code=""))
    assert delta == sent
    assert _value(after, "comms_requests", status="error") == 1
    assert _value(after, "comms_requests", status="processed") == 4
    # The invalid number: its entry is Rejected with the monitor's code.
    assert _value(after, "comms_queue_failed_entries", media="sms", state="Rejected",
                  code="INVALID_ADDRESS") == 1
    for outcome, code, count in (("processed", "", 4), ("error", "UNKNOWN_CONTACT", 1)):
        labels = {"stage": "monitor", "media": "", "outcome": outcome, "code": code}
        assert (_value(after, "comms_worker_outcomes_total", **labels)
                - _value(before, "comms_worker_outcomes_total", **labels)) == count
    # The request for next year is scheduled, not backlog.
    assert _value(after, "comms_backlog", stage="monitor") == 0
    assert _value(after, "comms_scheduled_later", stage="monitor") == 1
    assert _value(after, "comms_oldest_pending_age_seconds", stage="monitor") == 0
    assert _value(after, "comms_worker_batch_seconds_count", stage="sms") >= 1
    from comms_pipeline.queue.status import pipeline_status

    assert pipeline_status(engine)["sent_per_minute"]["sms"] == {"5m": 0.6, "60m": 0.05}
    assert _value(after, "comms_worker_claim_seconds_count", stage="monitor") >= 1


def test_ready_needs_the_schema_at_head(settings, engine):
    api = client(settings, engine)
    answer = api.get("/ready")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    answer = api.get("/ready")
    assert answer.status_code == 503 and answer.json()["schema"] == "0001"
    with engine.begin() as conn:  # a newer release migrated it (a rolling upgrade): serve on
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_newer'"))
    assert api.get("/ready").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/health", "/ready", "/metrics"} <= set(paths)


def _scrape_daemon(settings, tmp_path, port, args, **env_extra):
    """Start ``comms daemon run ARGS``, wait until ``port`` serves its claim histogram.

    The daemon is given its port (``--metrics-port`` or the config key): it does not report
    a port bound as 0, so the port is chosen before it starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    env.update(COMMS_DATABASE_URL=settings.database_url, COMMS_PATHS_VAR=str(tmp_path / "var"),
               COMMS_DAEMONS_POLL_INTERVAL="0.1", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "comms_pipeline.cli.main", "daemon", "run",
                             *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        for _ in range(300):  # until it listens (not a timed assertion: it only waits)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
                    body = answer.read().decode()
                if "comms_worker_claim_seconds_count" in body:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        assert body is not None and 'comms_worker_claim_seconds_count{stage="sms"}' in body
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_daemon_serves_its_metrics_on_its_port(settings, tmp_path):
    _scrape_daemon(settings, tmp_path, port := free_port(), ["sms", "--metrics-port", str(port)])


def test_the_config_key_alone_serves_the_metrics(settings, tmp_path):
    """``[daemons] metrics_port`` without the flag; copy 2 (``sms-2``) takes the next port."""
    port = free_port()
    _scrape_daemon(settings, tmp_path, port, ["sms"], COMMS_DAEMONS_METRICS_PORT=str(port))
    second = free_port()
    _scrape_daemon(settings, tmp_path, second, ["sms-2"],
                   COMMS_DAEMONS_METRICS_PORT=str(second - 1))


def test_a_taken_configured_port_does_not_stop_a_job(sqlite_url, make_engine_for):
    """The scheduler may start a job while another holds the configured port: the job runs,
    with a warning; asked for by --metrics-port, the same port is an error."""
    from click.testing import CliRunner

    from comms_pipeline.cli.common import AppContext
    from comms_pipeline.cli.main import cli

    try:
        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            port = taken.getsockname()[1]
            settings, _ = make_engine_for(sqlite_url, COMMS_DAEMONS_METRICS_PORT=str(port))

            def run(*extra):
                app = AppContext()
                app._settings = settings
                return CliRunner().invoke(cli, ["job", "run", "monitor", "--no-progress", *extra],
                                          obj=app, catch_exceptions=False)

            ok = run()
            assert ok.exit_code == 0, ok.output
            assert "metrics.port_unavailable" in ok.stderr and str(port) in ok.stderr
            refused = run("--metrics-port", str(port))
            assert refused.exit_code == 2 and "--metrics-port" in refused.output
    finally:
        structlog.reset_defaults()
