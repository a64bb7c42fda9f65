"""What every command shares: settings and engine, loaded once, lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from comms_pipeline.settings.config import Settings, load_settings
from comms_pipeline.store.db import engine_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass
class AppContext:
    config_path: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.settings)
        return self._engine


pass_app = click.make_pass_decorator(AppContext)


def parse_pairs(pairs: tuple[str, ...], what: str, as_json: bool = False) -> dict:
    """``name=value`` options into a dict (values parsed as JSON when ``as_json``)."""
    import json

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=what)
        if as_json:
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"{name}: not valid JSON ({exc})",
                                         param_hint=what) from None
        else:
            out[name] = value
    return out
