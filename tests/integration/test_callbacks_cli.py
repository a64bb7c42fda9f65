"""``comms external-systems callbacks add|list|enable|remove``."""

from __future__ import annotations

import json

from click.testing import CliRunner

from comms_pipeline.cli.api import external_systems
from comms_pipeline.cli.common import AppContext
from tests.integration.web_support import add_system


def _run(args, settings, engine):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(external_systems, ["callbacks", *args],
                              obj=AppContext(_settings=settings, _engine=engine),
                              catch_exceptions=False)


def test_callbacks_add_list_enable_remove(settings, engine):
    add_system(engine, "PORTAL")
    added = _run(["add", "PORTAL", "https://portal.example/cb", "--events",
                  "rejected,bounced"], settings, engine)
    assert added.exit_code == 0, added.output
    assert "callback endpoint 1 added for PORTAL" in added.output
    assert "whsec_" in added.output

    listed = _run(["list"], settings, engine)
    assert "https://portal.example/cb" in listed.output
    assert "events: rejected,bounced" in listed.output and "whsec_" not in listed.output
    as_json = json.loads(_run(["list", "--json", "--system", "PORTAL"], settings,
                              engine).output)
    assert [(e["id"], e["enabled"], e["pending_events"]) for e in as_json] == [(1, True, 0)]

    bad = _run(["add", "PORTAL", "https://portal.example/cb", "--events", "sent"],
               settings, engine)
    assert bad.exit_code != 0 and "unknown callback event(s): sent" in bad.output
    nobody = _run(["add", "NOBODY", "https://portal.example/cb"], settings, engine)
    assert nobody.exit_code != 0 and "no external system" in nobody.output

    assert _run(["enable", "1"], settings, engine).exit_code == 0
    assert _run(["remove", "1"], settings, engine).exit_code == 0
    again = _run(["remove", "1"], settings, engine)
    assert again.exit_code != 0 and "no callback endpoint 1" in again.output
