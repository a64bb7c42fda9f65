"""``comms contacts list|show|update|remove``: consent changes recorded with who and when;
a contact that was sent something is not removed."""

from __future__ import annotations

import pytest
import structlog
from click.testing import CliRunner

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from tests.integration.web_support import external_entries


@pytest.fixture(autouse=True)
def _default_logging():
    """``comms`` configures structlog onto CliRunner's captured stderr: put the defaults
    back, so later tests' logs are not written into a closed buffer."""
    yield
    structlog.reset_defaults()


def _invoke(settings, *args):
    app = AppContext()
    app._settings = settings
    return CliRunner().invoke(cli, list(args), obj=app)


def test_list_show_update_remove(engine, settings):
    assert _invoke(settings, "contacts", "add", "C-7", "--name", "Nikos", "--postal",
                   "3 Evagorou Street|1066 Nicosia").exit_code == 0
    external_entries(engine, None, 1, contact_ref="C-8")
    listing = _invoke(settings, "contacts", "list").output.splitlines()
    assert listing[0].split()[:2] == ["REF", "NAME"]
    assert [line.split()[0] for line in listing[1:]] == ["C-7", "C-8"]
    assert "C-8" in _invoke(settings, "contacts", "list", "--search", "8").output

    out = _invoke(settings, "contacts", "update", "C-7", "--direct-marketing", "--language",
                  "el", "--by", "care-desk").output
    assert "updated opt_in_direct_marketing, preferred_language" in out
    assert "nothing to change" in _invoke(settings, "contacts", "update", "C-7",
                                          "--direct-marketing").output
    shown = _invoke(settings, "contacts", "show", "C-7").output
    assert "direct marketing  opted in" in shown
    assert "3 Evagorou Street / 1066 Nicosia (primary)" in shown
    assert "DIRECT_MARKETING     opted_out -> opted_in  by cli:care-desk" in shown

    kept = _invoke(settings, "contacts", "remove", "C-8", "--yes")
    assert kept.exit_code != 0 and "1 queue entry" in str(kept.exception)
    assert _invoke(settings, "contacts", "remove", "C-7", "--yes").exit_code == 0
    gone = _invoke(settings, "contacts", "show", "C-7")
    assert gone.exit_code != 0
