"""The suite's settings do not depend on the folder pytest runs from: ``make_settings`` loads
the repository's config by its absolute path, where ``load_settings(path=None)`` would read
``config/comms.toml`` only from the repository root (and fall back to defaults elsewhere,
with another default country)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO_CONFIG, make_settings


def _dump(settings) -> dict:  # type: ignore[no-untyped-def]
    return settings.model_dump(mode="json")


def test_make_settings_are_the_same_from_the_repo_root_and_elsewhere(tmp_path, monkeypatch):
    var = tmp_path / "var"
    url = f"sqlite:///{tmp_path / 'comms.db'}"
    monkeypatch.chdir(REPO_CONFIG.parent.parent)
    at_root = make_settings(url, var)
    elsewhere_dir = tmp_path / "elsewhere"
    elsewhere_dir.mkdir()
    monkeypatch.chdir(elsewhere_dir)
    assert not Path("config/comms.toml").exists()
    elsewhere = make_settings(url, var)
    assert _dump(elsewhere) == _dump(at_root)
    assert elsewhere.source == str(REPO_CONFIG)
    assert elsewhere.monitor.default_country == at_root.monitor.default_country == "CY"
