"""The Web API's commands: external systems and their keys, agents' and admins' keys."""

from __future__ import annotations

import re

from click.testing import CliRunner

from comms_pipeline.cli.api import api_keys, external_systems
from comms_pipeline.cli.common import AppContext
from tests.integration.web_support import bearer, client, detail, external_entries

KEY = re.compile(r"cp_[0-9a-f]{12}_\S+")


def _run(group, args, settings, engine):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(group, args, obj=AppContext(_settings=settings, _engine=engine),
                                catch_exceptions=False)
    return result


def test_external_systems_add_list_rotate_disable(settings, engine):
    api = client(settings, engine)
    added = _run(external_systems, ["add", "PORTAL", "--name", "Customer portal"],
                 settings, engine)
    assert added.exit_code == 0, added.output
    key = KEY.search(added.output).group(0)
    assert api.get("/v1/me", headers=bearer(key)).json()["external_system"] == "PORTAL"
    again = _run(external_systems, ["add", "PORTAL", "--name", "x"], settings, engine)
    assert again.exit_code != 0 and "already exists" in again.output

    listed = _run(external_systems, ["list"], settings, engine).output
    assert "PORTAL" in listed and key.split("_")[1] in listed and key not in listed

    rotated = _run(external_systems, ["rotate-key", "PORTAL"], settings, engine)
    new_key = KEY.search(rotated.output).group(0)
    assert api.get("/v1/me", headers=bearer(key)).status_code == 401
    assert api.get("/v1/me", headers=bearer(new_key)).status_code == 200

    disabled = _run(external_systems, ["disable", "PORTAL"], settings, engine)
    assert disabled.exit_code == 0 and "1 key(s) revoked" in disabled.output
    assert api.get("/v1/me", headers=bearer(new_key)).status_code == 401
    assert "disabled by an operator" in _run(external_systems, ["list"], settings,
                                             engine).output
    assert _run(external_systems, ["rotate-key", "NOPE"], settings, engine).exit_code != 0


def test_api_keys_for_agents_and_admins(settings, engine):
    api = client(settings, engine)
    made = _run(api_keys, ["add", "Anna", "--role", "agent"], settings, engine)
    key = KEY.search(made.output).group(0)
    assert api.get("/v1/me", headers=bearer(key)).json()["role"] == "agent"
    listed = _run(api_keys, ["list"], settings, engine).output
    assert "Anna" in listed and "agent" in listed and key not in listed
    assert _run(api_keys, ["revoke", key.split("_")[1]], settings, engine).exit_code == 0
    assert api.get("/v1/me", headers=bearer(key)).status_code == 401
    assert _run(api_keys, ["add", "X", "--role", "root"], settings, engine).exit_code != 0


def test_apply_status_from_the_command_line(settings, engine, tmp_path):
    added = _run(external_systems, ["add", "CAS", "--name", "CA system"], settings, engine)
    assert added.exit_code == 0
    from comms_pipeline.pipeline.apikeys import system_id

    with engine.connect() as conn:
        sid = system_id(conn, "CAS")
    e1, e2 = external_entries(engine, sid, 2)
    path = tmp_path / "ack.csv"
    path.write_text(f"entry_id,status,error_code,error_description\n{e1},Sent,,\n"
                    f"{e1},Sent,,\n{e2},Error,E7,refused\n")
    result = _run(external_systems, ["apply-status", str(path), "--system", "CAS"],
                  settings, engine)
    assert result.exit_code == 1
    assert "2 entries updated, 1 refused" in result.output and "line 3" in result.output
    assert detail(engine, e1)["state"] == "completed"
    assert detail(engine, e2)["error_code"] == "E7"
    # A file names its system: without --system nothing is read, whoever's entries it names.
    unnamed = _run(external_systems, ["apply-status", str(path)], settings, engine)
    assert unnamed.exit_code == 2 and "--system" in unnamed.output


def test_limits_test_keys_and_usage_from_the_command_line(settings, engine):
    from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
    from comms_pipeline.pipeline.admin_records import save_template
    from tests.integration.web_support import ensure_contact

    api = client(settings, engine)
    live = KEY.search(_run(external_systems, ["add", "SHOP", "--name", "Shop"], settings,
                           engine).output).group(0)
    made = _run(external_systems, ["test-key", "SHOP"], settings, engine)
    assert made.exit_code == 0 and "test: simulated sends only" in made.output
    test = KEY.search(made.output).group(0)
    assert api.get("/v1/me", headers=bearer(test)).json()["kind"] == "test"
    assert api.get("/v1/me", headers=bearer(live)).json()["kind"] == "live"
    admin = _run(api_keys, ["add", "Dev", "--role", "admin", "--test"], settings, engine)
    assert admin.exit_code == 0 and ", test)" in admin.output
    assert " test " in _run(api_keys, ["list"], settings, engine).output

    limited = _run(external_systems, ["limits", "SHOP", "--rate", "50", "--daily",
                                      "email=2", "--daily", "letter=20000"], settings, engine)
    assert limited.exit_code == 0, limited.output
    assert "50/s, email 2/day, letter 20,000/day" in limited.output
    bad = _run(external_systems, ["limits", "SHOP", "--daily", "fax=3"], settings, engine)
    assert bad.exit_code != 0 and "MEDIA=N" in bad.output

    ensure_contact(engine, "C-1")
    with engine.begin() as conn:
        save_template(conn, TemplateSpec("T-MAIL", "Mail", "email", variants=[
            VariantSpec("en", "Hi", "<p>Hi</p>", "Hi")]))
    body = {"contact_ref": "C-1", "template_code": "T-MAIL"}
    api = client(settings, engine)  # limits are read again after web.limits_refresh_seconds
    assert api.post("/v1/requests", headers=bearer(live), json=body).status_code == 202
    assert api.post("/v1/requests", headers=bearer(test), json=body).status_code == 202
    shown = _run(external_systems, ["show", "SHOP"], settings, engine)
    assert shown.exit_code == 0, shown.output
    assert "limits       50/s, email 2/day, letter 20,000/day" in shown.output
    assert "email 1 of 2" in shown.output  # the test key's request is not counted
    assert live.split("_")[1] in shown.output and test.split("_")[1] in shown.output
    assert "unlimited" in shown.output  # the keys' own limits

    cleared = _run(external_systems, ["limits", "SHOP", "--no-rate", "--daily", "email=off",
                                      "--daily", "letter=off"], settings, engine)
    assert "SHOP: unlimited" in cleared.output
    key_limits = _run(api_keys, ["limits", live.split("_")[1], "--rate", "5"], settings, engine)
    assert key_limits.exit_code == 0 and "5/s" in key_limits.output
    assert _run(external_systems, ["show", "NOPE"], settings, engine).exit_code != 0
