"""``comms job run monitor`` in batch mode runs the Email and Letter Monitor jobs when it has
finished, as the seeds' process flow says ([monitor] then_merge, on by default), on both
backends; switched off, the merge waits for its own run."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from comms_pipeline.cli.common import AppContext
from comms_pipeline.cli.main import cli
from comms_pipeline.pipeline.triggers import trigger
from comms_pipeline.store.models import details_t
from tests import factories
from tests.conftest import make_settings


@pytest.mark.parametrize("then_merge", [True, False])
def test_the_monitor_starts_the_merge_jobs_when_it_has_finished(db_url, tmp_path, then_merge):
    from comms_pipeline.store import db as dbmod

    settings = make_settings(db_url, tmp_path / "var",
                             COMMS_MONITOR_THEN_MERGE=str(then_merge).lower())
    engine = dbmod.make_engine(settings.database_url)
    with engine.begin() as conn:
        factories.contact(conn)
        factories.email_template(conn)
        trigger(conn, contact_ref="C-1", template_code="EMAIL_HELLO")
    app = AppContext()
    app._settings = settings
    out = CliRunner().invoke(cli, ["job", "run", "monitor", "--no-progress"], obj=app,
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    with engine.connect() as conn:
        states = list(conn.execute(select(details_t.c.state)).scalars())
    engine.dispose()
    assert "monitor: 1 handled" in out.output
    if then_merge:
        assert states == ["awaiting_send"]
        assert "email-monitor: 1 handled" in out.output
        assert "letter-monitor: 0 handled" in out.output
    else:
        assert states == ["awaiting_merge"]
        assert "email-monitor" not in out.output
