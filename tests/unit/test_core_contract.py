"""Regression tests of issue 13's core defects: one interpolation of runner sections, -P typed by
the runner's config model, the isolated test cache, valueclass refusing what it cannot do, the run
lookup in one place."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun.errors import SpecError, UsageError
from cuberun.execute import make_runner
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube
from tests.conftest import write_tree


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    yield


CUBE = r"""name: x
docker: {image: "repo/x:1"}
local:
  env_vars: {ESCAPED: '\${HOME}', REF: '${name}'}
tasks:
  t: {entrypoint: echo}
"""


def cube(tmp_path: Path, *params: str) -> object:
    return load_cube(write_tree(tmp_path / "c", {"mlcube.yaml": CUBE}), overrides=params)


def test_runner_sections_are_interpolated_once(tmp_path: Path) -> None:
    runner = make_runner(cube(tmp_path), "local", RunOptions())  # type: ignore[arg-type]
    assert runner.config["env_vars"] == {"ESCAPED": "${HOME}", "REF": "x"}  # not /root: the escape holds


def test_platform_entry_and_runner_overrides_are_interpolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("platforms:\n  mine: {runner: local, python: '${name}'}\n")
    monkeypatch.setenv("CUBERUN_SETTINGS", str(settings))
    assert make_runner(cube(tmp_path), "mine", RunOptions()).config["python"] == "x"  # type: ignore[arg-type]
    params = ["runner.python=${name}-2"]
    assert make_runner(cube(tmp_path, *params), "local", RunOptions(), params).config["python"] == "x-2"  # type: ignore[arg-type]


def test_p_overrides_are_typed_by_the_runner_model(tmp_path: Path) -> None:
    params = ("runner.image=123", "runner.run_as_user=false")
    runner = make_runner(cube(tmp_path, *params), "docker", RunOptions(), params)  # type: ignore[arg-type]
    assert runner.config["image"] == "123" and runner.config["run_as_user"] is False
    section = cube(tmp_path, "docker.image=123", "docker.remove=no").config["docker"]  # type: ignore[attr-defined]
    assert section["image"] == "123" and section["remove"] is False
    with pytest.raises(SpecError, match="remove: must be true or false"):
        cube(tmp_path, "docker.remove=sometimes")


def test_tests_never_write_the_real_cache() -> None:
    from cuberun.paths import cache_dir

    real = Path(os.path.expanduser("~")) / ".cache"
    assert os.environ.get("XDG_CACHE_HOME") and real not in cache_dir().parents


def test_valueclass_refuses_what_it_cannot_do() -> None:
    from cuberun import valueclass

    with pytest.raises(TypeError, match="does not support order"):
        valueclass.dataclass(order=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="does not support init"):
        valueclass.field(default=1, init=False)
    with pytest.raises(TypeError, match="does not call __post_init__"):

        @valueclass.dataclass
        class Checked:
            a: int = 0

            def __post_init__(self) -> None:
                raise AssertionError("never called")


def test_runs_are_found_by_the_records_module(tmp_path: Path) -> None:
    import json

    from cuberun.records import find_run

    for run_id in ("20261202-070000-t-aaaaaa", "20261202-070001-t-bbbbbb"):
        folder = tmp_path / ".cuberun" / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps({"run_id": run_id, "start": run_id}))
    assert find_run(tmp_path, "bbbbbb")["run_id"] == "20261202-070001-t-bbbbbb"
    with pytest.raises(UsageError, match="ambiguous: 2 runs match"):
        find_run(tmp_path, "t-")
    with pytest.raises(UsageError, match="no run 'zzz'"):
        find_run(tmp_path, "zzz")
