"""Build hook: a wheel carries the migrations of ``sql/migrations`` inside the package.

Everything else is declared in ``setup.cfg``. In a checkout (and an editable install) the
migrations are read from ``sql/migrations``; an installed wheel has no checkout around it, so
``build_py`` copies them to ``comms_pipeline/sql_migrations``, where
:data:`comms_pipeline.store.db.MIGRATIONS_DIR` finds them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "comms_pipeline" / "sql_migrations"
            shutil.copytree("sql/migrations", target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithMigrations})
