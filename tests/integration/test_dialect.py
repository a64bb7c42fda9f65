"""store.dialect says the same thing on both backends: insert-unless-there, insert-or-update,
row locks, advisory locks and the run headers' JSON entities."""

from __future__ import annotations

import json
import threading

from sqlalchemy import select, text

from comms_pipeline.core.clock import utcnow
from comms_pipeline.queue.heartbeat import Heartbeat
from comms_pipeline.store.dialect import (
    advisory_unlock,
    entities_json_sql,
    insert_ignore,
    is_postgres,
    lock_rows,
    reading,
    try_advisory_lock,
    upsert,
)
from comms_pipeline.store.models import heartbeats_t, idempotency_t, keys_t


def _key(conn) -> int:
    return conn.execute(keys_t.insert().values(
        prefix="p1", key_hash="h", role="admin", name="test").returning(keys_t.c.id)
    ).scalar_one()


def test_insert_ignore_returns_the_new_id_then_none(make_engine_for, db_url):
    _, engine = make_engine_for(db_url)
    with engine.begin() as conn:
        key_id = _key(conn)
        row = {"api_key_id": key_id, "key": "k", "request_hash": "a", "status_code": 0,
               "response": None, "created_at": utcnow()}
        first = insert_ignore(conn, idempotency_t, row, ["api_key_id", "key"])
        again = insert_ignore(conn, idempotency_t, dict(row, request_hash="b"),
                              ["api_key_id", "key"])
        hashes = conn.execute(select(idempotency_t.c.request_hash)).scalars().all()
    assert isinstance(first, int)
    assert again is None
    assert hashes == ["a"]


def test_upsert_inserts_then_updates_only_the_given_columns(make_engine_for, db_url):
    _, engine = make_engine_for(db_url)
    now = utcnow()
    row = {"instance": "i1", "name": "sms", "host": "h", "pid": 1, "started_at": now,
           "beat_at": now, "stopped_at": None, "processed": 0}
    with engine.begin() as conn:
        upsert(conn, heartbeats_t, row, ["instance"], {"processed": 0})
        upsert(conn, heartbeats_t, dict(row, name="other", processed=9), ["instance"],
               {"processed": 7})
        found = conn.execute(select(heartbeats_t.c.name, heartbeats_t.c.processed)).all()
    assert [tuple(r) for r in found] == [("sms", 7)]


def test_a_heartbeat_beats_twice_into_one_row(make_engine_for, db_url):
    _, engine = make_engine_for(db_url)
    hb = Heartbeat(engine, "sms", every=0)
    hb.beat(force=True)
    hb.processed = 3
    hb.beat(force=True)
    with engine.connect() as conn:
        found = conn.execute(select(heartbeats_t.c.instance, heartbeats_t.c.processed)).all()
    assert [tuple(r) for r in found] == [(hb.instance, 3)]


def test_lock_rows_runs_in_a_transaction_on_both_backends(make_engine_for, db_url):
    _, engine = make_engine_for(db_url)
    with engine.begin() as conn:
        lock_rows(conn, select(heartbeats_t.c.instance))  # no error, nothing to return


def test_entities_json_sql_nests_the_object_members(make_engine_for, db_url):
    _, engine = make_engine_for(db_url)
    data = json.dumps({"order": {"id": 7}, "plain": 1})
    with engine.connect() as conn:
        sql = entities_json_sql(conn, "n.data")
        got = conn.execute(text(f"SELECT {sql} FROM (SELECT :d AS data) n"), {"d": data}
                           ).scalar_one()
    value = got if isinstance(got, dict) else json.loads(got)
    assert value == {"notification": {"order": {"id": 7}, "plain": 1}, "order": {"id": 7}}


def test_an_advisory_lock_is_held_by_one_session(make_engine_for, pg_url):
    _, engine = make_engine_for(pg_url)
    assert is_postgres(engine)
    with engine.connect() as a, engine.connect() as b:
        assert try_advisory_lock(a, "dialect-test", "k") is True
        assert try_advisory_lock(b, "dialect-test", "k") is False
        advisory_unlock(a, "dialect-test", "k")
        assert try_advisory_lock(b, "dialect-test", "k") is True
        advisory_unlock(b, "dialect-test", "k")


def test_a_read_neither_takes_nor_waits_for_the_write_lock(make_engine_for, db_url):
    """A daemon's reads between its sends (``reading``) go on while another connection is in
    the middle of a finishing transaction: they see the last commit. On SQLite every other
    transaction begins IMMEDIATE, which would wait for that writer (up to the 60 s busy
    timeout)."""
    _, engine = make_engine_for(db_url)
    def beat(instance: str) -> dict:
        now = utcnow()
        return {"name": "w", "instance": instance, "host": "h", "pid": 1, "started_at": now,
                "beat_at": now}

    with engine.begin() as conn:
        conn.execute(heartbeats_t.insert().values(beat("a")))
    seen: list[list[str]] = []
    with engine.begin() as writer:  # holds the write lock until the end of the block
        writer.execute(heartbeats_t.insert().values(beat("b")))

        def read() -> None:
            with reading(engine) as conn:
                seen.append(conn.execute(select(heartbeats_t.c.instance)).scalars().all())

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(20)  # a liveness bound: an IMMEDIATE begin would still be waiting
        assert not reader.is_alive(), "the read waited for the writer"
    assert seen == [["a"]]  # the last commit, not the writer's uncommitted row
