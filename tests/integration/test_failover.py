"""Failover-ready connections: a URL listing several hosts finds the one that is up and
writable (libpq's ``host=a,b`` with ``target_session_attrs=read-write``), and a claim that
reaches a read-only server (a standby, mid-failover) backs off instead of failing a batch."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.queue.runner import Runner
from comms_pipeline.store.db import make_engine
from comms_pipeline.store.models import details_t
from comms_pipeline.store.outage import DatabaseUnavailable
from tests.conftest import make_settings
from tests.integration.details_factory import add_details
from tests.servers.smtp import free_port


def _multi_host(url: str, *hosts: str) -> str:
    """``url`` with its host replaced by several (``?host=a:p&host=b:q``)."""
    parsed = make_url(url)
    return parsed.set(host=None, port=None, query={
        **parsed.query, "host": list(hosts),
        "target_session_attrs": "read-write"}).render_as_string(hide_password=False)


def test_the_writable_host_of_several_is_found(pg_url, pg_cluster, tmp_path):
    """First a host where nothing listens, then a read-only server (a standby, as libpq
    sees one), then the primary: the session lands on the primary."""
    from sqlalchemy import create_engine

    admin = create_engine(pg_cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{make_url(pg_url).database}"'))
        conn.execute(text("ALTER SYSTEM SET default_transaction_read_only = on"))
        conn.execute(text("SELECT pg_reload_conf()"))
    admin.dispose()
    primary = make_url(pg_url)
    standby_db = f"127.0.0.1:{pg_cluster.port}"
    # the first host is a port nothing listens on (a dead primary: no server to bind 0)
    url = _multi_host(pg_url, f"127.0.0.1:{free_port()}", standby_db,
                      f"{primary.host}:{primary.port}")
    settings = make_settings(url, tmp_path / "var")
    engine = make_engine(settings.database_url, database=settings.database)
    try:
        with engine.connect() as conn:
            port = conn.execute(text("SELECT inet_server_port()")).scalar_one()
            read_only = conn.execute(text("SHOW transaction_read_only")).scalar_one()
    finally:
        engine.dispose()
    assert (port, read_only) == (primary.port, "off")


def test_a_claim_on_a_read_only_server_backs_off_instead_of_failing(pg_url, tmp_path):
    settings = make_settings(pg_url, tmp_path / "var", COMMS_DATABASE_OUTAGE_WAIT_ONCE_SECONDS="1")
    engine = make_engine(settings.database_url, database=settings.database)
    ids = add_details(engine, "sms", [("+447700900001", "hi"), ("+447700900002", "ho")])
    name = make_url(pg_url).database
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    engine.dispose()  # new sessions: as if the server had become a standby
    try:
        runner = Runner(settings, engine, SmsDaemon(settings, engine), once=True)
        with pytest.raises(DatabaseUnavailable):
            runner.run()
        assert runner.failed_batches == 0
        with engine.connect() as conn:
            rows = conn.execute(select(details_t.c.state, details_t.c.attempts,
                                       details_t.c.error_code)
                                .where(details_t.c.id.in_(ids))).all()
        assert set(rows) == {("awaiting_send", 0, None)}  # untouched: nothing failed

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SET default_transaction_read_only = off"))
            conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
        engine.dispose()  # promoted: the next sessions can write
        assert Runner(settings, engine, SmsDaemon(settings, engine), once=True).run() == 2
    finally:
        engine.dispose()
