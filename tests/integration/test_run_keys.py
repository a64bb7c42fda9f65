"""No duplicate runs (issue 10 item 5): a notification run covers one period (its run key),
two processes running one type at once notify each recipient once, and the database refuses
a second notification of a recipient for one period even past the lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from comms_pipeline.notifications.run_keys import period_key, period_of
from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications
from comms_pipeline.store.models import types_t
from tests.integration.test_notification_runs import (
    MASS_BATCH,
    ROOT,
    headers_t,
    mass_setup,
    notifications_t,
    runs_t,
    scalar,
)

RACER = textwrap.dedent("""
    import json, os, sys, time
    from comms_pipeline.settings.config import load_settings
    from comms_pipeline.store.db import make_engine
    from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications

    url, var, go, batch = sys.argv[1:5]
    settings = load_settings(path=None, environ={"COMMS_DATABASE_URL": url,
                                                 "COMMS_PATHS_VAR": var})
    engine = make_engine(settings.database_url)
    while not os.path.exists(go):  # both start together
        time.sleep(0.005)
    try:
        summary = run_notifications(settings, engine, "MASS_DUE", batch_size=int(batch))
        print(json.dumps({"created": summary["created"], "run_id": summary["run_id"],
                          "resumed": summary.get("resumed", 0)}))
    except RunAlreadyDoneError as exc:
        print(json.dumps({"refused": exc.run_id}))
""")


def test_two_processes_started_together_notify_each_recipient_once(engine, settings, db_url,
                                                                    tmp_path):
    expected = mass_setup(engine)
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, settings.database_url,
                                str(settings.var_dir), str(go), str(MASS_BATCH)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    time.sleep(0.5)  # both are waiting at the start line (imports done or nearly)
    go.write_text("go")
    results = []
    for proc in racers:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    with engine.connect() as conn:
        runs = conn.execute(select(runs_t)).all()
        n_notes, n_keys = conn.execute(select(
            func.count(), func.count(notifications_t.c.recipient_key.distinct()))).one()
        n_headers = conn.execute(select(func.count()).select_from(headers_t)
                                 .where(headers_t.c.notification_id.isnot(None))).scalar_one()
    assert len(runs) == 1 and runs[0].status == "finished"
    assert n_notes == n_keys == n_headers == expected
    # One did the run; the other waited for the lock and then found the period done.
    assert sorted(results, key=str) == sorted(
        [{"created": expected, "run_id": runs[0].id, "resumed": 0},
         {"refused": runs[0].id}], key=str)


def test_a_second_run_of_a_period_is_refused_and_an_explicit_key_runs_again(engine, settings):
    expected = mass_setup(engine)
    first = run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH * 10)
    assert first["created"] == expected
    with pytest.raises(RunAlreadyDoneError, match=rf"run {first['run_id']} for "
                                                  rf"{first['run_key']} already finished"):
        run_notifications(settings, engine, "MASS_DUE")
    with pytest.raises(RunAlreadyDoneError):  # a dry run says what a real run would do
        run_notifications(settings, engine, "MASS_DUE", dry_run=True)
    with pytest.raises(RunAlreadyDoneError):  # the period named explicitly: the same
        run_notifications(settings, engine, "MASS_DUE", run_key=first["run_key"])
    again = run_notifications(settings, engine, "MASS_DUE", run_key="reissue-1",
                              batch_size=MASS_BATCH * 10)
    assert again["created"] == expected and again["run_id"] != first["run_id"]
    assert scalar(engine, select(func.count()).select_from(notifications_t)) == 2 * expected


def test_the_database_refuses_a_second_notification_for_one_period(engine, settings):
    """Past any lock (a process without it, a bug): UNIQUE(type, run key, recipient)."""
    mass_setup(engine)
    run = run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH * 10)
    with engine.connect() as conn:
        note = conn.execute(select(notifications_t).limit(1)).one()
        type_id = conn.execute(select(types_t.c.id)
                               .where(types_t.c.code == "MASS_DUE")).scalar_one()
    with engine.begin() as conn:  # a second run row of another key is fine...
        other = conn.execute(insert(runs_t).values(
            type_id=type_id, run_key="other", status="running", dry_run=False,
            started_at=datetime(2026, 1, 1)).returning(runs_t.c.id)).scalar_one()
    with pytest.raises(IntegrityError), engine.begin() as conn:  # ...a recipient again is not
        conn.execute(insert(notifications_t).values(
            run_id=other, type_id=type_id, run_key=run["run_key"], number="N-dup",
            recipient_key=note.recipient_key, contact_ref=note.contact_ref,
            created_at=datetime(2026, 1, 1)))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # and a period runs once
        conn.execute(insert(runs_t).values(
            type_id=type_id, run_key=run["run_key"], status="running", dry_run=False,
            started_at=datetime(2026, 1, 1)))


@pytest.mark.parametrize(("cron", "period", "key"), [
    (None, "day", "2026-12-01"),
    ("0 9 * * *", "day", "2026-12-01"),
    ("0 8 1 * *", "month", "2026-12"),
    ("30 7 * * 1", "week", "2026-W49"),
    ("0 */4 * * *", "hour", "2026-12-01T09"),
    ("*/15 * * * *", "minute", "2026-12-01T09:45"),
])
def test_the_run_key_is_the_period_the_cron_implies(cron, period, key):
    assert period_of(cron) == period
    assert period_key(cron, datetime(2026, 12, 1, 9, 45)) == key
