"""Settings editing as library functions (the CLI's `config` only parses and prints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cuberun import settings_edit
from cuberun.errors import UsageError
from cuberun.settings import load_settings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))


def test_edit_and_save(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings_edit.create_platform(settings, "docker", "mine") == "created platform 'mine' (runner docker)"
    assert settings_edit.set_value(settings, "platforms.mine.image", "123") == "set platforms.mine.image"
    settings_edit.set_value(settings, "platforms.mine.remove", "no")
    settings_edit.rename_platform(settings, "mine", "ours")
    settings_edit.set_value(settings, "default_platform", "ours")
    settings_edit.save(settings)
    data = yaml.safe_load((tmp_path / "settings.yaml").read_text())
    assert data["default_platform"] == "ours"
    assert data["platforms"]["ours"]["image"] == "123" and data["platforms"]["ours"]["remove"] is False  # typed by the model
    again = load_settings()
    assert settings_edit.get_value(again, "platforms.ours.run_as_user") is True  # the runner's default
    with pytest.raises(UsageError, match="runner 'docker' has no setting 'imgae'"):
        settings_edit.set_value(again, "platforms.ours.imgae", "x")
    with pytest.raises(UsageError, match="remove: must be true or false"):
        settings_edit.set_value(again, "platforms.ours.remove", "sometimes")
    assert settings_edit.remove_platform(again, "ours") == "removed platform 'ours'" and "default_platform" not in again.data


def test_runner_keys_come_from_the_config_model() -> None:
    rows = {r["key"]: r for r in settings_edit.runner_keys("docker")}
    assert rows["image"]["type"] == "a string" and rows["remove"]["default"] is True and rows["env_args"]["doc"]
    with pytest.raises(UsageError, match="unknown runner 'dokcer'"):
        settings_edit.runner_keys("dokcer")
