"""Attempts count sends: the Email Monitor's merge is not one of them.

With ``claims.max_attempts = N`` a merged email gets exactly N tries at the SMTP server, the
first retry waits the base delay, and the message that ends it counts N attempts.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.models import details_t
from tests.integration.documents_factory import details
from tests.integration.test_email_daemon import run_once
from tests.integration.test_email_monitor import run, seed

BASE = 600


def test_max_attempts_is_the_number_of_sends(db_url, smtp_server, make_engine_for):
    settings, engine = make_engine_for(
        db_url, COMMS_CLAIMS_MAX_ATTEMPTS="3", COMMS_CLAIMS_BACKOFF_BASE_SECONDS=str(BASE),
        COMMS_CLAIMS_BACKOFF_MAX_SECONDS="86400", **smtp_server.env())
    seed(engine)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-1", "amount": "€12.00"}})
    assert run(settings, engine, "monitor") == 1
    assert run(settings, engine, "email-monitor") == 1
    (merged,) = _all(engine)
    assert (merged["state"], merged["attempts"]) == ("awaiting_send", 0)

    refusals = ["451 4.3.0 Temporary lookup failure"] * 5
    smtp_server.handler.data_replies.extend(refusals)
    before = utcnow()
    run_once(settings, engine)
    row = details(engine, [merged["id"]])[merged["id"]]
    assert (row["state"], row["attempts"], row["error_code"]) == ("awaiting_send", 1, "451")
    wait = (row["next_attempt_at"] - before).total_seconds()
    assert BASE <= wait < 2 * BASE  # the first retry waits the base delay, not twice it

    for expected in (2, 3):
        _due_now(engine, merged["id"])
        run_once(settings, engine)
        row = details(engine, [merged["id"]])[merged["id"]]
        assert row["attempts"] == expected
    assert (row["state"], row["error_code"]) == ("rejected", "451")
    assert row["error_description"].endswith("(gave up after 3 attempts)")
    assert len(smtp_server.handler.data_replies) == len(refusals) - 3  # exactly 3 sends


def test_a_merged_email_delivered_first_time_counts_one_attempt(db_url, smtp_server,
                                                                 make_engine_for):
    settings, engine = make_engine_for(db_url, **smtp_server.env())
    seed(engine)
    trigger(engine, contact_ref="C-EN", template_code="RECEIPT",
            entities={"payment": {"number": "P-2", "amount": "€1.00"}})
    run(settings, engine, "monitor")
    run(settings, engine, "email-monitor")
    run_once(settings, engine)
    (row,) = _all(engine)
    assert (row["state"], row["attempts"]) == ("completed", 1)
    assert len(smtp_server.messages) == 1


def _all(engine) -> list[dict]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(details_t).order_by(details_t.c.id))]


def _due_now(engine, detail_id: int) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(update(details_t).where(details_t.c.id == detail_id)
                     .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
