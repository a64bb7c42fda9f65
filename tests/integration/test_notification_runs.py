"""Notification runs on SQLite and PostgreSQL: the seeds' examples over the demo business
schema, consent and conditions recorded per recipient, dry runs, and a run killed midway
(SIGKILL) or failing midway that finishes without duplicates when started again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from decimal import Decimal

import pytest
import structlog
import structlog.testing
from sqlalchemy import func, select, text

from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications
from comms_pipeline.notifications.types import (
    DefinitionError,
    Definitions,
    SegmentDef,
    TypeDef,
    load_builtin_notifications,
    save_definitions,
)
from comms_pipeline.pipeline.entity_sources import load_demo_business
from comms_pipeline.pipeline.template_files import load_builtin_templates
from comms_pipeline.runtime.run import run_job
from comms_pipeline.settings.notifications import NotificationSettings
from comms_pipeline.store.models import (
    NotificationType,
    details_t,
    headers_t,
    notifications_t,
    runs_t,
    skipped_t,
    types_t,
)
from tests import factories

FIRST_OF_NOVEMBER = date(2024, 11, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WithNotifications:
    """Settings with a ``notifications`` section (until the main settings carry one)."""

    def __init__(self, settings, **values) -> None:
        self._settings = settings
        self.notifications = NotificationSettings(**values)

    def __getattr__(self, name):
        return getattr(self._settings, name)


def company_zx(engine, settings, db_url) -> None:
    load_demo_business(db_url)
    with engine.begin() as conn:
        load_builtin_templates(conn, settings)
        load_builtin_notifications(conn)
        for i in range(1, 7):
            factories.contact(conn, ref=f"C-100{i}", name=f"Customer {i}",
                              email=f"c{i}@example.com", phone=f"+3579910000{i}")


def scalar(engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


def test_unsettled_subscriptions_over_the_demo_business(engine, settings, db_url):
    company_zx(engine, settings, db_url)
    summary = run_notifications(settings, engine, "UNSETTLED_SUBSCRIPTIONS",
                                today=FIRST_OF_NOVEMBER)
    assert (summary["created"], summary["skipped_condition"], summary["skipped_consent"],
            summary["errors"]) == (3, 3, 0, 0)
    with engine.connect() as conn:
        run = conn.execute(select(runs_t)).one()
        headers = {h.contact_ref: h for h in conn.execute(select(headers_t))}
        notes = {n.id: n for n in conn.execute(select(notifications_t))}
        skipped = conn.execute(select(skipped_t).order_by(skipped_t.c.contact_ref)).all()
    assert run.status == "finished" and run.created == 3 and run.finished_at is not None
    assert run.summary["skip_reasons"] == {"CONDITION_NOT_MET": 3}
    assert sorted(headers) == ["C-1002", "C-1004", "C-1005"]
    h = headers["C-1002"]
    tags = h.entities["notification"]
    assert notes[h.notification_id].number == tags["number"]
    assert tags["type"] == "UNSETTLED_SUBSCRIPTIONS"
    assert Decimal(str(tags["total_notified_amount"])) == Decimal("118.20")
    assert tags["accounts_receivable"]["number"] == "AR-1002"
    assert [b["number"] for b in tags["bills_notified_amount"]] == ["B-2024-0901"]
    assert h.template_code == "ACCOUNT_BALANCE" and h.status == "awaiting_processing"
    assert h.idempotency_key == f"notif-{run.id}-2"
    # A week from the run's start, so at most a week from the header's own creation (it was
    # written a moment after the run started).
    assert timedelta(hours=167) < h.expires_at - h.created_at <= timedelta(hours=168)
    # Counted from the run's start: every communication of the run expires together.
    assert {x.expires_at for x in headers.values()} == {
        run.started_at + timedelta(hours=168)}
    assert [(s.contact_ref, s.reason_code) for s in skipped] == [
        ("C-1001", "CONDITION_NOT_MET"), ("C-1003", "CONDITION_NOT_MET"),
        ("C-1006", "CONDITION_NOT_MET")]
    assert "due_date is missing" in skipped[0].reason
    # The headers go through the pipeline like any other: merged by the email monitor.
    run_job("monitor", settings, engine)
    run_job("email-monitor", settings, engine)
    with engine.connect() as conn:
        detail = conn.execute(select(details_t).where(
            details_t.c.header_id == h.id)).one()
    assert detail.state == "awaiting_send"
    assert "AR-1002" in (detail.body or "") and tags["number"] in (detail.body or "")


def test_low_wallet_balance_and_a_second_run(engine, settings, db_url):
    company_zx(engine, settings, db_url)
    first = run_notifications(settings, engine, "LOW_WALLET_BALANCE")
    assert (first["created"], first["skipped_condition"]) == (2, 1)
    assert first["run_key"] == f"{date.today():%Y-%m-%d}"  # a daily type: the day
    # The same period again is refused: nobody is notified twice for one day.
    with pytest.raises(RunAlreadyDoneError, match=f"run {first['run_id']} for "):
        run_notifications(settings, engine, "LOW_WALLET_BALANCE")
    second = run_notifications(settings, engine, "LOW_WALLET_BALANCE", run_key="again")
    assert second["run_id"] != first["run_id"] and second["created"] == 2
    assert second["run_key"] == "again"
    run_job("monitor", settings, engine)
    with engine.connect() as conn:
        bodies = conn.execute(select(details_t.c.body).order_by(details_t.c.id)).scalars().all()
    assert len(bodies) == 4 and "W-1003" in bodies[0] and "W-1006" in bodies[1]


def test_dry_run_counts_without_writing(engine, settings, db_url):
    company_zx(engine, settings, db_url)
    summary = run_notifications(settings, engine, "UNSETTLED_SUBSCRIPTIONS", dry_run=True,
                                today=FIRST_OF_NOVEMBER)
    assert (summary["created"], summary["skipped_condition"], summary["run_id"]) == (3, 3, None)
    for table in (runs_t, notifications_t, headers_t, skipped_t):
        assert scalar(engine, select(func.count()).select_from(table)) == 0


def marketing_setup(engine, apply_data_protection=True, respect=None):
    with engine.begin() as conn:
        factories.email_template(conn, code="OFFER", classification="marketing")
        for ref, direct, affiliate in (("C-1", True, False), ("C-2", False, True),
                                       ("C-3", True, True)):
            factories.contact(conn, ref=ref, direct_marketing=direct,
                              affiliate_marketing=affiliate)
        save_definitions(conn, Definitions({}, {"OFFERS": TypeDef(
            name="Offers", classification="marketing", entity="contact_information",
            template="OFFER", apply_data_protection=apply_data_protection,
            respect_consent=respect,
            population_query="SELECT ref AS recipient_key, ref AS contact_ref, name "
                             "FROM contacts")}, {}))


@pytest.mark.parametrize(("apply", "respect", "notified"), [
    (True, None, ["C-1", "C-3"]),
    (True, "affiliate", ["C-2", "C-3"]),
    (True, "both", ["C-3"]),
    (False, "both", ["C-1", "C-2", "C-3"]),
])
def test_marketing_runs_respect_consent_as_the_type_says(engine, settings, apply, respect,
                                                         notified):
    marketing_setup(engine, apply, respect)
    summary = run_notifications(settings, engine, "OFFERS")
    with engine.connect() as conn:
        refs = conn.execute(select(headers_t.c.contact_ref).order_by(headers_t.c.contact_ref)
                            ).scalars().all()
        skipped = conn.execute(select(skipped_t.c.contact_ref, skipped_t.c.reason_code)
                               ).all()
    assert refs == notified
    assert summary["skipped_consent"] == 3 - len(notified)
    assert {code for _, code in skipped} <= {"OPTED_OUT"}
    assert sorted(ref for ref, _ in skipped) == sorted({"C-1", "C-2", "C-3"} - set(notified))


def test_an_opt_out_after_the_run_is_respected_by_the_type_not_just_the_template(
        engine, settings):
    """A marketing type sending a customer-care template: the run checks the stricter
    classification, and so does the monitor when the contact opted out in between."""
    from comms_pipeline.store.models import Contact

    with engine.begin() as conn:
        factories.email_template(conn, code="CARE_NEWS", classification="customer_care")
        factories.contact(conn, ref="C-1", direct_marketing=True)
        save_definitions(conn, Definitions({}, {"NEWS": TypeDef(
            name="News", classification="marketing", entity="contact_information",
            template="CARE_NEWS",
            population_query="SELECT ref AS recipient_key, ref AS contact_ref, name "
                             "FROM contacts")}, {}))
    assert run_notifications(settings, engine, "NEWS")["created"] == 1
    with engine.begin() as conn:
        conn.execute(Contact.__table__.update().values(opt_in_direct_marketing=False))
    run_job("monitor", settings, engine)
    with engine.connect() as conn:
        header = conn.execute(select(headers_t.c.status, headers_t.c.status_code)).one()
    assert tuple(header) == ("opted_out", "OPTED_OUT")


def test_unknown_contacts_are_errors_and_a_missing_template_stops_before_writing(
        engine, settings):
    with engine.begin() as conn:
        factories.sms_template(conn)
        factories.contact(conn, ref="C-1")
        save_definitions(conn, Definitions({}, {
            "HELLO": TypeDef(name="Hello", classification="customer_care",
                             entity="contact_information", template="SMS_HELLO",
                             population_query="SELECT 1 AS recipient_key, 'C-1' AS contact_ref "
                                              "UNION ALL SELECT 2, 'C-404'"),
            "BROKEN": TypeDef(name="Broken", classification="customer_care",
                              entity="contact_information", template="NO_SUCH",
                              population_query="SELECT 1 AS recipient_key, "
                                               "'C-1' AS contact_ref")}, {}))
    summary = run_notifications(settings, engine, "HELLO")
    assert (summary["created"], summary["errors"]) == (1, 1)
    assert summary["skip_reasons"] == {"UNKNOWN_CONTACT": 1}
    with pytest.raises(DefinitionError, match="no active template 'NO_SUCH'"):
        run_notifications(settings, engine, "BROKEN")
    assert scalar(engine, select(func.count()).select_from(runs_t)) == 1


# -- a population of thousands, killed midway ----------------------------------------------------

MASS = 2400
MASS_BATCH = 100


def mass_setup(engine) -> int:
    """MASS accounts in a business table; every 7th has nothing outstanding."""
    pg = engine.dialect.name == "postgresql"
    series = (f"generate_series(1, {MASS}) AS s(i)" if pg else
              f"(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
              f"WHERE i < {MASS}) SELECT i FROM r) AS s")
    with engine.begin() as conn:
        factories.sms_template(conn, code="SMS_DUE", text="#notification.number due")
        conn.execute(text(f"CREATE TABLE mass_accounts AS SELECT i AS id, 'M-' || i AS ref, "
                          f"(i % 7) * 10 AS outstanding FROM {series}"))
        conn.execute(text("INSERT INTO contacts (ref, name, opt_in_direct_marketing, "
                          "opt_in_affiliate_marketing, created_at) SELECT ref, 'Mass ' || id, "
                          "false, false, CURRENT_TIMESTAMP FROM mass_accounts"))
        save_definitions(conn, Definitions({}, {"MASS_DUE": TypeDef(
            name="Mass", classification="financial", entity="accounts_receivable",
            template="SMS_DUE", conditions=[{"field": "total_notified_amount",
                                             "op": "more_than", "value": 1}],
            population_query="SELECT id AS recipient_key, ref AS contact_ref, "
                             "outstanding AS total_notified_amount FROM mass_accounts")}, {}))
    return MASS - MASS // 7


def assert_complete_without_duplicates(engine, expected: int) -> None:
    with engine.connect() as conn:
        run = conn.execute(select(runs_t)).one()
        n_notes, n_keys = conn.execute(select(
            func.count(), func.count(notifications_t.c.recipient_key.distinct()))).one()
        n_headers = conn.execute(select(func.count()).select_from(headers_t)
                                 .where(headers_t.c.notification_id.isnot(None))).scalar_one()
        n_skipped, n_skipped_keys = conn.execute(select(
            func.count(), func.count(skipped_t.c.recipient_key.distinct()))).one()
    assert run.status == "finished"
    assert n_notes == n_keys == n_headers == run.created == expected
    assert n_skipped == n_skipped_keys == run.skipped_condition == MASS - expected
    assert run.summary["resumed"] == 1


CHILD = textwrap.dedent("""
    import os, signal, sys
    from comms_pipeline.settings.config import load_settings
    from comms_pipeline.store.db import make_engine
    from comms_pipeline.notifications.runs import RunAlreadyDoneError, run_notifications

    settings = load_settings(path=None, environ={"COMMS_DATABASE_URL": sys.argv[1],
                                                 "COMMS_PATHS_VAR": sys.argv[2]})
    engine = make_engine(settings.database_url)

    def die(batches):
        if batches == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    run_notifications(settings, engine, "MASS_DUE", batch_size=int(sys.argv[3]), on_batch=die)
""")


def test_a_run_killed_midway_resumes_without_duplicates(engine, settings, tmp_path):
    expected = mass_setup(engine)
    child = subprocess.run([sys.executable, "-c", CHILD, settings.database_url,
                            str(tmp_path / "var"), str(MASS_BATCH)], cwd=ROOT,
                           capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    with engine.connect() as conn:
        run = conn.execute(select(runs_t)).one()
    assert run.status == "running" and run.resume_after == str(5 * MASS_BATCH)
    assert 0 < run.created < expected
    summary = run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH)
    assert summary["seen_this_time"] == MASS - 5 * MASS_BATCH
    assert_complete_without_duplicates(engine, expected)


def test_a_run_failing_midway_is_interrupted_then_resumed(engine, settings):
    expected = mass_setup(engine)

    def fail(batches):
        if batches == 3:
            raise ConnectionError("database went away")

    with pytest.raises(ConnectionError):
        run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH * 2,
                          on_batch=fail)
    with engine.connect() as conn:
        run = conn.execute(select(runs_t)).one()
    assert run.status == "interrupted" and "database went away" in run.summary["error"]
    # A dry run now counts what the resumed run will do, and writes nothing.
    dry = run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH * 2,
                            dry_run=True)
    assert dry["resumes_run"] == run.id and dry["run_id"] is None
    assert dry["created"] + run.created == expected
    with engine.connect() as conn:
        assert conn.execute(select(runs_t.c.status, runs_t.c.created)).one() == (
            "interrupted", run.created)
    run_notifications(settings, engine, "MASS_DUE", batch_size=MASS_BATCH * 2)
    assert_complete_without_duplicates(engine, expected)


def test_a_separate_business_database_and_a_list_segment(engine, settings, tmp_path):
    business = f"sqlite:///{tmp_path / 'business.db'}"
    load_demo_business(business)
    with engine.begin() as conn:
        load_builtin_templates(conn, settings)
        for i in (3, 6):
            factories.contact(conn, ref=f"C-100{i}", phone=f"+3579910000{i}")
        defs = Definitions({"VIP": SegmentDef(name="VIP", kind="list", members=["C-1006"])},
                           {"LOW_WALLET_VIP": TypeDef(
            name="Low wallet, VIP only", classification="financial", entity="wallet",
            template="WALLET_LOW_BALANCE_SMS", segment="VIP",
            population_query="SELECT w.id AS recipient_key, ar.contact_ref AS contact_ref, "
                             "w.number AS \"wallet.number\" FROM wallets w JOIN "
                             "accounts_receivable ar ON ar.id = w.accounts_receivable_id")}, {})
        save_definitions(conn, defs)
    wrapped = WithNotifications(settings, business_database_url=business, batch_size=2)
    summary = run_notifications(wrapped, engine, "LOW_WALLET_VIP")
    assert (summary["created"], summary["skipped_condition"]) == (1, 2)
    assert summary["skip_reasons"] == {"NOT_IN_SEGMENT": 2}
    with engine.connect() as conn:
        (h,) = conn.execute(select(headers_t)).all()
    assert h.contact_ref == "C-1006" and h.entities["wallet"] == {"number": "W-1006"}


def test_the_cli_loads_runs_and_shows(engine, settings, db_url, tmp_path):
    from click.testing import CliRunner

    from comms_pipeline.cli.common import AppContext
    from comms_pipeline.cli.notifications import notifications, rules

    load_demo_business(db_url)
    with engine.begin() as conn:
        load_builtin_templates(conn, settings)
        for i in (3, 6):
            factories.contact(conn, ref=f"C-100{i}", phone=f"+3579910000{i}")
    app = AppContext(None, settings, engine)

    def run(group, *args):
        result = CliRunner().invoke(group, list(args), obj=app, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    loaded = run(notifications, "load-builtin")
    assert "types: LOW_WALLET_BALANCE, UNSETTLED_SUBSCRIPTIONS" in loaded
    assert "LOW_WALLET_BALANCE" in run(notifications, "list")
    dry = run(notifications, "run", "LOW_WALLET_BALANCE", "--dry-run")
    assert "dry run: created 2" in dry
    out = run(notifications, "run", "LOW_WALLET_BALANCE", "--batch-size", "1")
    assert "created 2, skipped by consent 0, skipped by condition 1, errors 0" in out
    assert "CONDITION_NOT_MET: 1" in out
    run_id = re.search(r"LOW_WALLET_BALANCE run (\d+):", out).group(1)
    assert "finished" in run(notifications, "runs", "LOW_WALLET_BALANCE")
    shown = run(notifications, "show-run", run_id)
    assert "C-1001" in shown and "wallets_available_amount is" in shown
    # Nothing merged yet (the monitor has not run): the chart says so rather than guessing.
    assert re.search(r"tracking .*\n  communications +0 +0\.0%", shown), shown
    extra = tmp_path / "extra.toml"
    extra.write_text('[rules.SR_RESPONSE]\nname = "Service request answered"\n'
                     'entity = "service_request"\nevent = "responded"\n'
                     'email_template = "SERVICE_REQUEST_RESPONSE"\n', encoding="utf-8")
    assert "rules: SR_RESPONSE" in run(rules, "load", str(extra))
    assert "SR_RESPONSE" in run(rules, "list")
    assert "0 request(s) of event WF-1" in run(rules, "resolve", "WF-1")


def test_types_with_a_cron_are_scheduled(engine, settings, db_url):
    from apscheduler.schedulers.background import BackgroundScheduler

    from comms_pipeline.notifications.schedule import add_notification_jobs, run_scheduled

    company_zx(engine, settings, db_url)
    scheduler = BackgroundScheduler(timezone="UTC")
    ids = add_notification_jobs(scheduler, settings, engine)
    assert ids == ["notifications:LOW_WALLET_BALANCE", "notifications:UNSETTLED_SUBSCRIPTIONS"]
    monthly = scheduler.get_job("notifications:UNSETTLED_SUBSCRIPTIONS").trigger
    fields = {f.name: str(f) for f in monthly.fields}
    assert (fields["day"], fields["hour"], fields["minute"]) == ("1", "8", "0")
    run_scheduled("LOW_WALLET_BALANCE", settings, engine)  # what the scheduler calls
    with engine.connect() as conn:
        assert conn.execute(select(runs_t.c.status, runs_t.c.created)).one() == ("finished", 2)


def test_two_runs_started_at_once_share_one_run(engine, settings, db_url):
    """Two `notifications run` started together for one type open one run, not two."""
    import threading

    from comms_pipeline.notifications.runs import _open_run

    company_zx(engine, settings, db_url)
    type_id = scalar(engine, select(NotificationType.__table__.c.id).where(
        NotificationType.__table__.c.code == "LOW_WALLET_BALANCE"))
    barrier, opened = threading.Barrier(2), []

    def open_one():
        barrier.wait()
        opened.append(_open_run(engine, type_id, "LOW_WALLET_BALANCE", False).run_id)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 2 and opened[0] == opened[1]
    assert scalar(engine, select(func.count()).select_from(runs_t)) == 1


def test_a_saved_bad_cron_is_skipped_and_the_other_jobs_still_run(engine, settings, db_url):
    """A type saved before its cron was checked (or written in SQL) cannot stop the scheduler:
    it is left out with an error naming it, and everything else is scheduled."""
    from comms_pipeline.runtime.scheduler import build_scheduler

    company_zx(engine, settings, db_url)
    with engine.begin() as conn:
        conn.execute(NotificationType.__table__.update()
                     .where(NotificationType.__table__.c.code == "LOW_WALLET_BALANCE")
                     .values(cron="61 * * * *"))
    with structlog.testing.capture_logs() as logs:  # whatever logging an earlier test set up
        scheduler = build_scheduler(settings, engine)
    ids = {job.id for job in scheduler.get_jobs()}
    assert "notifications:UNSETTLED_SUBSCRIPTIONS" in ids and "monitor" in ids
    assert "notifications:LOW_WALLET_BALANCE" not in ids
    assert any(e["event"] == "scheduler.bad_cron" and "LOW_WALLET_BALANCE" in str(e)
               for e in logs), logs


def test_a_running_scheduler_follows_the_types_as_they_change(engine, settings, db_url):
    """Deactivated types are dropped, re-timed ones rescheduled, without a restart."""
    from comms_pipeline.notifications.schedule import REFRESH_JOB, add_notification_jobs
    from comms_pipeline.runtime.scheduler import build_scheduler

    company_zx(engine, settings, db_url)
    scheduler = build_scheduler(settings, engine)
    assert scheduler.get_job(REFRESH_JOB) is not None
    types = types_t
    with engine.begin() as conn:
        conn.execute(types.update().where(types.c.code == "LOW_WALLET_BALANCE")
                     .values(active=False))
        conn.execute(types.update().where(types.c.code == "UNSETTLED_SUBSCRIPTIONS")
                     .values(cron="30 9 2 * *"))
    add_notification_jobs(scheduler, settings, engine)  # what the refresh job runs
    assert scheduler.get_job("notifications:LOW_WALLET_BALANCE") is None
    monthly = scheduler.get_job("notifications:UNSETTLED_SUBSCRIPTIONS").trigger
    fields = {f.name: str(f) for f in monthly.fields}
    assert (fields["day"], fields["hour"], fields["minute"]) == ("2", "9", "30")
