"""The audit log on SQLite and PostgreSQL: every administrative change of a scripted ``comms``
session is recorded with its actor and what changed, secrets never; links and API keys are
actors too; the table refuses UPDATE and DELETE (a trigger, whatever the role)."""

from __future__ import annotations

import json
import uuid

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.pipeline import audit
from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.store.models import details_t, keys_t
from comms_pipeline.web.link_actions import perform
from tests import factories
from tests.integration.web_support import bearer, client, role_key

SECRET = "webhook-s3cret-value"


@pytest.fixture(autouse=True)
def _default_logging():
    """``comms`` configures structlog onto CliRunner's captured stderr: put it back."""
    yield
    structlog.reset_defaults()


def _comms(settings, *args: str, expect: int = 0) -> str:
    app = AppContext()
    app._settings = settings
    result = CliRunner().invoke(cli, list(args), obj=app)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result.output


def _template(root, text: str):
    folder = root / "audited"
    folder.mkdir(exist_ok=True)
    (folder / "template.toml").write_text('code = "AUDITED"\nname = "Audited"\nmedia = "sms"\n',
                                          encoding="utf-8")
    (folder / "en.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def test_every_change_of_a_scripted_session_is_in_the_log(engine, settings, tmp_path):
    with engine.begin() as conn:
        cid = factories.contact(conn, ref="C-9")
        factories.bulk_sms_details(conn, 2, cid)
        entries = list(conn.execute(select(details_t.c.id).order_by(details_t.c.id)).scalars())
    start = len(_entries(engine))
    folder = _template(tmp_path, "First text.")
    _comms(settings, "templates", "add", str(folder))
    _template(tmp_path, "Second text.")
    _comms(settings, "templates", "update", str(folder))
    _comms(settings, "templates", "publish", "AUDITED")
    _comms(settings, "templates", "publish", "AUDITED", "--version", "1")
    _comms(settings, "media", "set", "sms", "--max-chars", "300")
    _comms(settings, "external-systems", "add", "CRM", "--name", "CRM",
           "--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret", SECRET)
    _comms(settings, "external-systems", "rotate-key", "CRM")
    _comms(settings, "api-keys", "add", "ops", "--role", "admin")
    with engine.connect() as conn:
        ops = conn.execute(select(keys_t.c.prefix).where(keys_t.c.name == "ops")).scalar_one()
    _comms(settings, "api-keys", "revoke", ops)
    _comms(settings, "contacts", "update", "C-9", "--direct-marketing", "--name", "Private")
    _comms(settings, "queue", "cancel", str(entries[0]))
    _comms(settings, "queue", "retry", str(entries[0]))
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules.AUDIT_RULE]\nname = "Audit"\nentity = "wallet"\nevent = "low"\n'
                     'sms_template = "AUDITED"\n', encoding="utf-8")
    _comms(settings, "rules", "load", str(rules))
    rules.write_text(rules.read_text().replace('"Audit"', '"Audit (2)"'), encoding="utf-8")
    _comms(settings, "rules", "load", str(rules))
    _comms(settings, "rules", "load", str(rules))  # unchanged: nothing recorded
    _comms(settings, "external-systems", "disable", "CRM", "--reason", "audit test")

    listed = [json.loads(line) for line in
              _comms(settings, "audit", "list", "--json", "--limit", "1000").splitlines()]
    session = listed[start:]
    user = audit.cli_actor()
    assert {e["actor"] for e in session} == {user}
    assert [(e["action"], e["target_kind"]) for e in session] == [
        ("template.create", "template"), ("template.save", "template"),
        ("template.publish", "template"), ("template.publish", "template"),
        ("media.set", "media"),
        ("external_system.create", "external_system"), ("api_key.create", "api_key"),
        ("api_key.revoke", "api_key"), ("api_key.create", "api_key"),
        ("api_key.create", "api_key"), ("api_key.revoke", "api_key"),
        ("contact.consent", "contact"), ("contact.update", "contact"),
        ("queue.cancel", "queue_entry"), ("queue.retry", "queue_entry"),
        ("event_rule.create", "event_rule"), ("event_rule.update", "event_rule"),
        ("external_system.disable", "external_system"), ("api_key.revoke", "api_key")]
    by_action = {}
    for e in session:
        by_action.setdefault(e["action"], []).append(e)
    save = by_action["template.save"][0]["change"]
    assert (save["version"], save["draft"], save["parts"]) == (2, True, ["en.txt"])
    publishes = [e["change"] for e in by_action["template.publish"]]
    assert [p["live_version"] for p in publishes] == [{"before": 1, "after": 2},
                                                      {"before": 2, "after": 1}]
    assert [p["rollback"] for p in publishes] == [False, True]
    assert by_action["media.set"][0]["change"] == {"max_chars": {"before": None, "after": 300}}
    created = by_action["external_system.create"][0]["change"]
    assert created["webhook_secret"]["after"].startswith("sha256:")
    assert by_action["contact.consent"][0]["change"] == {
        "opt_in_direct_marketing": {"before": False, "after": True}}
    assert by_action["contact.update"][0]["change"] == {"fields": ["name"]}
    assert by_action["queue.cancel"][0]["target_id"] == str(entries[0])
    assert by_action["queue.retry"][0]["change"]["retried"] == [entries[0]]
    assert by_action["event_rule.update"][0]["change"] == {
        "name": {"before": "Audit", "after": "Audit (2)"}}
    dumped = json.dumps(listed)
    assert SECRET not in dumped and "Private" not in dumped and "C-9" not in dumped

    # The filters.
    only = _comms(settings, "audit", "list", "--json", "--target", "template:AUDITED")
    assert [json.loads(line)["action"] for line in only.splitlines()] == [
        "template.create", "template.save", "template.publish", "template.publish"]
    assert _comms(settings, "audit", "list", "--actor", "link:") == "no audit entries\n"
    assert len(_comms(settings, "audit", "list", "--since", "1h", "--actor", "cli:",
                      "--limit", "1000").splitlines()) >= len(session)


def _entries(engine):
    with engine.connect() as conn:
        return audit.list_entries(conn, limit=100_000)


def test_links_and_api_keys_are_actors(engine, settings):
    with engine.begin() as conn:
        factories.contact(conn, ref="C-5", direct_marketing=True)
        factories.sms_template(conn)
    builder = LinkBuilder.from_settings(settings)
    token = builder.token("opt_out_direct_marketing", "C-5")
    payload = builder.verify(token, "opt_out_direct_marketing")
    with engine.begin() as conn:
        perform(conn, settings, payload, token)
    (entry,) = [e for e in _entries(engine) if e["action"] == "contact.consent"]
    assert entry["actor"].startswith("link:") and token not in entry["actor"]
    assert entry["change"]["opt_in_direct_marketing"] == {"after": False}

    key = role_key(engine, "admin", "release-bot")
    api = client(settings, engine)
    with engine.begin() as conn:
        from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
        from comms_pipeline.pipeline.template_versions import save_version

        save_version(conn, TemplateSpec("SMS_HELLO", "SMS_HELLO", "sms",
                                        [VariantSpec("en", body_text="Hi again")]))
    answer = api.post("/v1/templates/SMS_HELLO/publish", headers=bearer(key), json={})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"code": "SMS_HELLO", "previous": 1, "live": 2}
    history = api.get("/v1/templates/SMS_HELLO/versions", headers=bearer(key)).json()
    assert [(v["version"], v["state"]) for v in history["versions"]] == [
        (1, "published before"), (2, "live")]
    page = api.get("/v1/audit", headers=bearer(key),
                   params={"target": "template:SMS_HELLO", "actor": "api-key:"}).json()
    assert [(e["action"], e["actor"].split(":")[2]) for e in page["entries"]] == [
        ("template.publish", "release-bot")]
    first = api.get("/v1/audit", headers=bearer(key),
                    params={"since": "2000-01-01T00:00:00+02:00", "limit": 1}).json()
    assert len(first["entries"]) == 1 and first["next_after_id"] == first["entries"][0]["id"]
    rest = api.get("/v1/audit", headers=bearer(key),
                   params={"after_id": first["next_after_id"], "limit": 1000}).json()
    assert rest["next_after_id"] is None
    assert [e["id"] for e in rest["entries"]][0] > first["next_after_id"]
    assert api.post("/v1/templates/NOPE/publish", headers=bearer(key),
                    json={"version": 1}).status_code == 404
    agent = role_key(engine, "agent", "agent-1")
    assert api.get("/v1/audit", headers=bearer(agent)).status_code == 403


def test_the_audit_log_refuses_update_and_delete(engine):
    with engine.begin() as conn:
        audit.record(conn, actor="cli:test", action="media.set", target_kind="media",
                     target_id="sms", change={"enabled": {"before": True, "after": False}})
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    if engine.dialect.name == "postgresql":
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
        # Another role, however privileged on the table, is refused too.
        role = f"comms_app_{uuid.uuid4().hex[:12]}"  # roles are the cluster's: one of ours
        with engine.begin() as conn:
            conn.execute(text(f"CREATE ROLE {role}"))
            conn.execute(text(f"GRANT ALL ON audit_log TO {role}"))
        try:
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(text(f"SET ROLE {role}"))
                conn.execute(text("DELETE FROM audit_log"))
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"REVOKE ALL ON audit_log FROM {role}"))
                conn.execute(text(f"DROP ROLE {role}"))
    with engine.connect() as conn:
        assert [e["actor"] for e in audit.list_entries(conn)] == ["cli:test"]


def test_limits_callback_endpoints_and_a_suppression_import_are_audited(settings, engine,
                                                                        tmp_path):
    """The admin changes of the service features: limits, callback endpoints (their secret
    as a fingerprint only), a suppression import by whoever ran it."""
    _comms(settings, "external-systems", "add", "PORTAL", "--name", "Customer portal")
    _comms(settings, "external-systems", "limits", "PORTAL", "--rate", "5", "--daily",
           "email=100")
    added = _comms(settings, "external-systems", "callbacks", "add", "PORTAL",
                   "https://portal.example/cb")
    with engine.connect() as conn:
        endpoint = str(conn.execute(text("SELECT max(id) FROM callback_endpoints")).scalar())
    _comms(settings, "external-systems", "callbacks", "enable", endpoint)
    _comms(settings, "external-systems", "callbacks", "remove", endpoint)
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("address,media,reason\nold@example.com,email,manual\n")
    _comms(settings, "suppressions", "import", str(csv_file), "--by", "migrator")

    with engine.connect() as conn:
        trail = {e["action"]: e for e in audit.list_entries(conn, limit=1000)}
    limits = trail["external_system.limits"]["change"]
    assert limits["rate_limit_per_second"] == {"before": None, "after": 5}
    assert limits["daily_limits"]["after"] == {"email": 100}
    add = trail["callback_endpoint.add"]["change"]
    assert add["url"] == "https://portal.example/cb" and add["secret"].startswith("sha256:")
    assert add["secret"][7:] not in added  # the secret itself is nowhere in the log
    assert {"callback_endpoint.enable", "callback_endpoint.remove"} <= set(trail)
    imported = trail["suppression.import"]
    assert imported["actor"] == "cli:migrator" and imported["change"]["added"] == 1
