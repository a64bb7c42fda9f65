"""Which database errors mean "away for now", and how long a worker waits for it."""

from __future__ import annotations

import psycopg2.errors
import pytest
from sqlalchemy import exc as sa_exc

from comms_pipeline.store.outage import DatabaseUnavailable, DbWaiter, is_db_unavailable


def wrapped(cls, orig):  # type: ignore[no-untyped-def]
    return cls.instance("SELECT 1", {}, orig, Exception)


@pytest.mark.parametrize("error", [
    wrapped(sa_exc.OperationalError, psycopg2.errors.AdminShutdown(
        "terminating connection due to administrator command")),
    wrapped(sa_exc.OperationalError, psycopg2.OperationalError(
        "FATAL:  the database system is shutting down")),
    wrapped(sa_exc.OperationalError, psycopg2.OperationalError(
        'connection to server at "127.0.0.1", port 5 failed: Connection refused')),
    wrapped(sa_exc.InternalError, psycopg2.errors.ReadOnlySqlTransaction(
        "cannot execute UPDATE in a read-only transaction")),
    wrapped(sa_exc.OperationalError, __import__("sqlite3").OperationalError(
        "database is locked")),
])
def test_away_for_now(error):
    assert is_db_unavailable(error)


@pytest.mark.parametrize("error", [
    wrapped(sa_exc.ProgrammingError, psycopg2.errors.UndefinedTable("no such relation")),
    wrapped(sa_exc.IntegrityError, psycopg2.errors.UniqueViolation("duplicate key")),
    wrapped(sa_exc.OperationalError, __import__("sqlite3").OperationalError(
        "no such table: details")),
    ValueError("not a database error"),
])
def test_said_no(error):
    assert not is_db_unavailable(error)


def test_the_waiter_gives_up_after_its_limit_and_says_when_it_waits():
    seen = []
    waiter = DbWaiter("w", limit_seconds=0.2, base=0.05, cap=0.05, on_wait=seen.append)
    error = wrapped(sa_exc.OperationalError, psycopg2.OperationalError("Connection refused"))
    with pytest.raises(DatabaseUnavailable):
        for _ in range(1000):
            waiter.failed(error)
    assert seen == [True]
    waiter.recovered()
    assert seen == [True, False] and not waiter.waiting
