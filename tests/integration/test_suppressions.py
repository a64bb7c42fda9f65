"""The suppression list on SQLite and PostgreSQL: the Comms Monitor rejects suppressed targets
``SUPPRESSED`` with the reason and date; complaints stop marketing only; expiry and removal;
the soft-bounce threshold; the sources (FCM UNREGISTERED, SMPP destination errors); the CLI
and the admin Web API."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import event, select

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.core.clock import utcnow
from comms_pipeline.daemons.push_handset import PushHandsetDaemon
from comms_pipeline.daemons.sms import SmsDaemon
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline import suppressions as sup
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.run import run_job
from comms_pipeline.settings.suppressions import SuppressionSettings
from comms_pipeline.store.models import details_t, suppressions_t
from tests import factories
from tests.integration.details_factory import add_details, details
from tests.integration.web_support import bearer, client, role_key
from tests.servers.smpp import wait_for


@pytest.fixture(autouse=True)
def _default_logging():
    yield
    structlog.reset_defaults()


def _details(engine, header_id):
    with engine.connect() as conn:
        return conn.execute(select(details_t).where(details_t.c.header_id == header_id)
                            .order_by(details_t.c.id)).all()


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(suppressions_t).order_by(suppressions_t.c.id)).all()


def _setup(engine):
    with engine.begin() as conn:
        factories.contact(conn, direct_marketing=True)
        factories.contact(conn, ref="C-2", email="nikos@example.com", phone="+35799765432")
        factories.email_template(conn)
        factories.email_template(conn, code="PROMO", classification="marketing")
        factories.sms_template(conn)


def test_monitor_rejects_a_suppressed_target_with_reason_and_date(engine, settings):
    _setup(engine)
    with engine.begin() as conn:
        sup.suppress(conn, address="Maria@Example.COM", media="email", reason="hard_bounce",
                     source_detail_id=None, actor="feedback", description="5.1.1 user unknown")
    hit = trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    sms = trigger(engine, contact_ref="C-1", template_code="SMS_HELLO")
    other = trigger(engine, contact_ref="C-2", template_code="EMAIL_HELLO")
    assert run_job("monitor", settings, engine) == 3
    (d,) = _details(engine, hit)
    assert (d.state, d.error_code) == ("rejected", "SUPPRESSED")
    assert d.completed_at is not None
    today = f"{utcnow():%Y-%m-%d}"
    assert d.error_description == (f"maria@example.com is on the suppression list for email: "
                                   f"hard bounce on {today} (5.1.1 user unknown)")
    assert [x.state for x in _details(engine, sms)] == ["awaiting_send"]  # other media
    assert [x.state for x in _details(engine, other)] == ["awaiting_merge"]


def test_the_monitor_reads_the_list_once_per_batch(engine, settings):
    with engine.begin() as conn:
        for i in range(20):
            factories.contact(conn, ref=f"C-{i}", email=f"person{i}@example.com",
                              phone=f"+3579910{i:04d}")
            if i % 2:
                sup.suppress(conn, address=f"person{i}@example.com", media="email",
                             reason="hard_bounce", actor="test")
        factories.email_template(conn)
    headers = [trigger(engine, contact_ref=f"C-{i}", template_code="EMAIL_HELLO")
               for i in range(20)]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if "FROM suppressions" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert run_job("monitor", settings, engine) == 20
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1
    codes = [_details(engine, h)[0].error_code for h in headers]
    assert codes == [None, "SUPPRESSED"] * 10


def test_a_complaint_stops_marketing_but_not_a_service_message(engine, settings):
    _setup(engine)
    with engine.begin() as conn:
        s = sup.suppress(conn, address="maria@example.com", media="email", reason="complaint",
                         actor="feedback")
        assert s.scope == "marketing"
        assert sup.is_suppressed(conn, "maria@example.com", "email", "marketing", utcnow())
        assert sup.is_suppressed(conn, "maria@example.com", "email", "financial",
                                 utcnow()) is None
    promo = trigger(engine, contact_ref="C-1", template_code="PROMO")
    care = trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    run_job("monitor", settings, engine)
    (p,) = _details(engine, promo)
    assert (p.state, p.error_code) == ("rejected", "SUPPRESSED")
    assert "complaint (marked as spam)" in p.error_description
    assert "marketing only" in p.error_description
    assert [x.state for x in _details(engine, care)] == ["awaiting_merge"]


def test_expired_and_removed_suppressions_no_longer_apply(engine, settings):
    _setup(engine)
    past = utcnow() - timedelta(minutes=1)
    with engine.begin() as conn:
        sup.suppress(conn, address="maria@example.com", media="email", reason="manual",
                     actor="cli:ops", expires_at=past)
        sup.suppress(conn, address="+35799765432", media="sms", reason="smpp_permanent",
                     actor="sms")
        with pytest.raises(sup.SuppressionError):
            sup.remove(conn, address="+35799765432", media="sms", actor="cli:ops", why=" ")
        removed = sup.remove(conn, address="99765432", media="sms", actor="cli:ops",
                             why="number corrected by the customer", region="CY")
    assert [r.removed_by for r in removed] == ["cli:ops"]
    email = trigger(engine, contact_ref="C-1", template_code="EMAIL_HELLO")
    sms = trigger(engine, contact_ref="C-2", template_code="SMS_HELLO")
    run_job("monitor", settings, engine)
    assert [x.state for x in _details(engine, email)] == ["awaiting_merge"]
    assert [x.state for x in _details(engine, sms)] == ["awaiting_send"]
    rows = _rows(engine)
    assert len(rows) == 2  # removed rows are kept
    gone = rows[1]
    assert (gone.removed_by, gone.removal_reason) == ("cli:ops",
                                                      "number corrected by the customer")
    with engine.begin() as conn, pytest.raises(sup.NotSuppressed):
        sup.remove(conn, address="+35799765432", media="sms", actor="x", why="again")


def test_soft_bounces_suppress_after_the_threshold_within_the_window(engine):
    cfg = SuppressionSettings(soft_bounce_threshold=3, soft_bounce_window_days=7)
    now = utcnow()
    with engine.begin() as conn:
        def bounce(at, detail=None):  # type: ignore[no-untyped-def]
            return sup.record_soft_bounce(conn, address="full@example.com", media="email",
                                          source_detail_id=detail, now=at, settings=cfg,
                                          description="4.2.2 mailbox full")
        assert bounce(now - timedelta(days=9)) is None  # outside the window
        assert bounce(now - timedelta(days=2)) is None
        assert bounce(now - timedelta(days=1)) is None
        s = bounce(now, detail=77)
        assert s is not None and s.reason == "soft_bounce_threshold"
        assert s.source_detail_id == 77 and s.expires_at == now + timedelta(days=30)
        assert "3 soft bounces" in (s.description or "")
        assert bounce(now) is None and len(_rows_in(conn)) == 1  # counting starts again
        sup.remove(conn, address="full@example.com", media="email", actor="ops", why="emptied")
        assert bounce(now + timedelta(seconds=1)) is None  # not at once after a removal


def _rows_in(conn):
    return conn.execute(select(suppressions_t)).all()


@pytest.fixture
def push_env(db_url, make_engine_for, fcm_server):
    return make_engine_for(db_url, COMMS_GATEWAYS_PUSH_BACKEND="fcm",
                           COMMS_GATEWAYS_PUSH_URL=fcm_server.send_url,
                           COMMS_GATEWAYS_PUSH_ACCESS_TOKEN=fcm_server.access_token)


def test_an_unregistered_fcm_token_is_suppressed(fcm_server, push_env):
    settings, engine = push_env
    tokens = [f"token-{i}-" + "y" * 30 for i in range(3)]
    fcm_server.unregistered.add(tokens[1])
    ids = add_details(engine, "push", [(t, "Hello") for t in tokens], device_contact=True)

    Runner(settings, engine, PushHandsetDaemon(settings, engine), once=True).run()

    assert details(engine, ids)[ids[1]]["error_code"] == "UNREGISTERED"
    (row,) = _rows(engine)
    assert (row.address, row.media, row.reason, row.scope, row.source_detail_id,
            row.created_by) == (tokens[1], "push", "unregistered", "all", ids[1],
                                "push-handset")
    assert row.description.startswith("push provider: UNREGISTERED")
    with engine.connect() as conn:
        assert sup.is_suppressed(conn, tokens[1], "push", "financial", utcnow()) is not None


@pytest.fixture
def sms_env(db_url, make_engine_for, smsc):
    return make_engine_for(db_url, COMMS_GATEWAYS_SMS_BACKEND="smpp",
                           COMMS_GATEWAYS_SMS_PORT=str(smsc.port),
                           COMMS_GATEWAYS_SMS_TIMEOUT="5")


def test_smpp_destination_errors_suppress_the_number(smsc, sms_env):
    settings, engine = sms_env
    smsc.behaviour.reject = {"447700900001": 0x0B, "447700900002": 0x45}  # RINVDSTADR, RSUBMITFAIL
    smsc.behaviour.receipts = "after"
    smsc.behaviour.receipt_stats = {"447700900003": "UNDELIV"}  # err:001
    targets = [(f"+44770090000{i}", f"text {i}") for i in range(4)]
    ids = add_details(engine, "sms", targets)

    Runner(settings, engine, SmsDaemon(settings, engine), once=True).run()

    def reasons():  # type: ignore[no-untyped-def]
        return {r.address: (r.reason, r.source_detail_id) for r in _rows(engine)}
    wait_for(lambda: "+447700900003" in reasons(), what="the UNDELIV receipt's suppression")
    assert reasons() == {"+447700900001": ("smpp_permanent", ids[1]),
                         "+447700900003": ("smpp_permanent", ids[3])}
    rows = {r.address: r for r in _rows(engine)}
    assert "ESME_RINVDSTADR" in rows["+447700900001"].description
    assert rows["+447700900003"].description == "delivery receipt UNDELIV err:001"
    assert rows["+447700900001"].created_by == "sms"
    assert details(engine, ids)[ids[2]]["state"] == "rejected"  # refused, not about the number


def _invoke(settings, *args):
    app = AppContext()
    app._settings = settings
    return CliRunner().invoke(cli, list(args), obj=app)


def test_cli_add_list_remove_export_import_round_trip(engine, settings, tmp_path):
    out = _invoke(settings, "suppressions", "add", "Bad@Example.com", "--media", "email",
                  "--reason", "hard_bounce", "--note", "5.1.1", "--by", "ops")
    assert out.exit_code == 0, out.output
    assert "suppressed: bad@example.com (email, hard_bounce, scope all" in out.output
    assert "already suppressed" in _invoke(settings, "suppressions", "add", "bad@example.com",
                                           "--media", "email", "--reason",
                                           "hard_bounce").output
    assert _invoke(settings, "suppressions", "add", "99111222", "--media", "sms",
                   "--scope", "marketing", "--expires", "30d").exit_code == 0
    assert _invoke(settings, "suppressions", "add", "gone@example.com", "--media",
                   "email").exit_code == 0
    removed = _invoke(settings, "suppressions", "remove", "gone@example.com", "--media",
                      "email", "--why", "typo fixed", "--by", "ops")
    assert removed.exit_code == 0 and "removed 1 suppression(s)" in removed.output
    listing = _invoke(settings, "suppressions", "list").output.splitlines()
    assert listing[0].split()[:3] == ["ID", "MEDIA", "ADDRESS"]
    assert [line.split()[2] for line in listing[1:]] == ["+35799111222", "bad@example.com"]
    assert "removed" in _invoke(settings, "suppressions", "list", "--all").output
    with engine.connect() as conn:  # operators' changes are audited, without the address
        trail = [(e["actor"], e["action"], e["change"]) for e in
                 audit.list_entries(conn, target="suppression")]
    assert [(a, act) for a, act, _ in trail][-4:] == [
        ("cli:ops", "suppression.add"), (trail[-3][0], "suppression.add"),
        (trail[-2][0], "suppression.add"), ("cli:ops", "suppression.remove")]
    assert trail[-1][2]["why"] == "typo fixed"
    assert "example.com" not in repr(trail)
    bad = _invoke(settings, "suppressions", "add", "not-an-address", "--media", "email")
    assert bad.exit_code != 0 and "malformed email address" in str(bad.exception)

    path = tmp_path / "list.csv"
    assert _invoke(settings, "suppressions", "export", str(path), "--all").exit_code == 0
    text = path.read_text()
    assert text.splitlines()[0].startswith("address,media,reason,scope,created_at")
    assert len(text.splitlines()) == 4

    with engine.begin() as conn:  # as if into another database
        conn.execute(suppressions_t.delete())
    imported = _invoke(settings, "suppressions", "import", str(path), "--by", "migrator")
    assert imported.exit_code == 0, imported.output
    assert "imported 2, already suppressed 0, skipped (removed) 1" in imported.output
    again = _invoke(settings, "suppressions", "import", str(path))
    assert "imported 0, already suppressed 2" in again.output
    second = tmp_path / "again.csv"
    assert _invoke(settings, "suppressions", "export", str(second)).exit_code == 0
    first_rows = [r[:9] for r in csv.reader(io.StringIO(text)) if "typo fixed" not in r]
    assert list(csv.reader(io.StringIO(second.read_text()))) == first_rows

    broken = tmp_path / "broken.csv"
    broken.write_text("address,media\nok@example.com,email\nnope,email\n,sms\n")
    refused = _invoke(settings, "suppressions", "import", str(broken))
    assert refused.exit_code != 0
    assert "2 bad row(s), nothing imported: line 3:" in str(refused.exception)


def test_api_lists_adds_and_removes_with_an_admin_key_only(engine, settings):
    api = client(settings, engine)
    admin, agent = role_key(engine, "admin", "ops-admin"), role_key(engine, "agent")
    body = {"address": "Maria@example.com", "media": "email", "reason": "hard_bounce",
            "description": "5.1.1"}
    assert api.get("/v1/suppressions").status_code == 401
    assert api.post("/v1/suppressions", json=body, headers=bearer(agent)).status_code == 403
    made = api.post("/v1/suppressions", json=body, headers=bearer(admin))
    assert made.status_code == 201, made.text
    assert made.json()["address"] == "maria@example.com"
    assert made.json()["created_by"] == "api:ops-admin" and made.json()["active"] is True
    assert api.post("/v1/suppressions", json=body, headers=bearer(admin)).status_code == 200
    bad = api.post("/v1/suppressions", json={**body, "address": "nope"}, headers=bearer(admin))
    assert bad.status_code == 422 and "malformed email" in bad.json()["message"]
    listed = api.get("/v1/suppressions", headers=bearer(admin)).json()["items"]
    assert [i["address"] for i in listed] == ["maria@example.com"]
    assert api.get("/v1/suppressions", headers=bearer(agent)).status_code == 403
    removal = {"address": "maria@example.com", "media": "email", "why": "address corrected"}
    assert api.post("/v1/suppressions/remove", json=removal,
                    headers=bearer(agent)).status_code == 403
    gone = api.post("/v1/suppressions/remove", json=removal, headers=bearer(admin))
    assert gone.status_code == 200
    (item,) = gone.json()["items"]
    assert (item["removed_by"], item["removal_reason"], item["active"]) == (
        "api:ops-admin", "address corrected", False)
    assert api.get("/v1/suppressions", headers=bearer(admin)).json()["items"] == []
    assert len(api.get("/v1/suppressions", headers=bearer(admin),
                       params={"include_inactive": "true"}).json()["items"]) == 1
    assert api.post("/v1/suppressions/remove", json=removal,
                    headers=bearer(admin)).status_code == 404


def test_smpp_statuses_are_read_as_numbers():
    cfg = SuppressionSettings(smpp_destination_statuses=["11", "0x45"])
    assert cfg.smpp_destination_statuses == ["0x0000000B", "0x00000045"]
    with pytest.raises(ValueError, match="not an SMPP command_status number"):
        SuppressionSettings(smpp_destination_statuses=["ESME_RINVDSTADR"])
