"""Migrations applied in order give exactly the schema of the models, on both backends."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from comms_pipeline.store.db import MIGRATIONS_DIR, alembic_config, upgrade
from comms_pipeline.store.models import Base


def test_migrated_schema_equals_models(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_reaches_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migration_files_follow_the_naming_rule():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    files = sorted(p.name for p in (Path(MIGRATIONS_DIR) / "versions").glob("*.py"))
    assert files, "no migrations"
    for name in files:
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+\.py", name), name
    revisions = [r.revision for r in script.walk_revisions()]
    assert sorted(revisions) == [name[:4] for name in files]
    assert len(script.get_heads()) == 1
