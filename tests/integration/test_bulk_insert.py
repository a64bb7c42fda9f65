"""dialect.bulk_insert (COPY on PostgreSQL) keeps every value exactly, on both backends."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from comms_pipeline.store.dialect import bulk_insert
from comms_pipeline.store.models import headers_t

AWKWARD = ["", "tab\there", "line\nbreak\r\n", "back\\slash \\N", "quote \" and ' and ,",
           "Γεια σας €", None]


def test_values_survive_exactly(engine):
    at = datetime(2026, 11, 23, 7, 39, 1, 123456)
    rows = [{"contact_ref": f"C-{i}", "template_code": text, "event": None,
             "entities": {"x": {"v": text, "n": i}}, "override_consent": i % 2 == 0,
             "priority": 1 + i % 3, "status": "awaiting_processing", "created_at": at}
            for i, text in enumerate(AWKWARD)]
    with engine.begin() as conn:
        bulk_insert(conn, headers_t, rows)
    with engine.connect() as conn:
        got = conn.execute(select(headers_t.c.template_code, headers_t.c.event,
                                  headers_t.c.entities, headers_t.c.override_consent,
                                  headers_t.c.priority, headers_t.c.created_at)
                           .order_by(headers_t.c.id)).all()
    assert [g.template_code for g in got] == AWKWARD
    assert all(g.event is None for g in got)
    assert [g.entities for g in got] == [r["entities"] for r in rows]
    assert [g.override_consent for g in got] == [r["override_consent"] for r in rows]
    assert [g.priority for g in got] == [r["priority"] for r in rows]
    assert {g.created_at for g in got} == {at}


def test_return_ids_come_back_in_the_order_of_the_rows(engine):
    rows = [{"contact_ref": f"C-{i}", "template_code": "T", "entities": {}, "priority": 2,
             "status": "awaiting_processing", "created_at": datetime(2026, 12, 1)}
            for i in range(5)]
    with engine.begin() as conn:
        first = bulk_insert(conn, headers_t, rows[:2], return_ids=True)
        ids = bulk_insert(conn, headers_t, rows[2:], return_ids=True)
    assert len(set(first + ids)) == 5
    with engine.connect() as conn:
        refs = dict(conn.execute(select(headers_t.c.id, headers_t.c.contact_ref)).all())
    assert [refs[i] for i in first + ids] == [r["contact_ref"] for r in rows]
