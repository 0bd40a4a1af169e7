"""A third-party runner for real: the package in tests/data/plugin_runner (its own pyproject with a
`cuberun.runners` entry point) is pip-installed offline into a folder of its own, then a cube runs
on it through the CLI and through the cuberun.testing kit: its section validated by its own
config model, -P typed by it, `config keys` listing it, the dry-run plan, a task end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun import testing
from cuberun.runners import registry

PLUGIN = Path(__file__).resolve().parents[1] / "data" / "plugin_runner"

CUBE = """\
name: greeter
echoer:
  greeting: hi
  repeat: 2
tasks:
  greet:
    parameters:
      outputs: {out: {type: directory, default: out/}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed with pip, offline, into a target folder (never into the test venv)."""
    base = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, base / "src")  # the build writes build/ and *.egg-info beside the sources
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps", "--disable-pip-version-check",
         "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.startswith("cuberun_echo-") and p.name.endswith(".dist-info") for p in target.iterdir())
    return target


@pytest.fixture
def env(site: Path, tmp_path: Path) -> dict[str, str]:
    inherited = os.environ.get("PYTHONPATH")  # a checkout's src under test stays first in line after the plugin
    return {**testing.isolated_env(tmp_path / "home"), "PYTHONPATH": os.pathsep.join([str(site), *([inherited] if inherited else [])])}


@pytest.fixture
def in_process(site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The plugin visible to this process too (for the kit's in-process functions)."""
    for key, value in testing.isolated_env(tmp_path / "home-ip").items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(site))
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()


def test_cli_runs_a_cube_on_the_plugin(env: dict[str, str], tmp_path: Path) -> None:
    cube = testing.make_cube(tmp_path / "cube", CUBE)
    ran = testing.run_cli("run", f"--mlcube={cube}", "--platform=echoer", env=env)
    assert ran.returncode == 0, ran.stderr
    assert (cube / "workspace" / "out" / "greeting.txt").read_text() == "hi\nhi\n"
    [record] = testing.records(cube / "workspace")
    assert record["status"] == "succeeded" and record["runner"] == "echoer"
    again = testing.run_cli("run", f"--mlcube={cube}", "--platform=echoer", env=env)
    assert again.returncode == 0 and "skipping task 'greet': up to date" in again.stderr
    keys = testing.run_cli("config", "keys", "echoer", env=env)
    assert keys.returncode == 0 and "greeting  a string (default: hello): what the task writes" in keys.stdout


def test_the_plugin_model_validates_and_types(env: dict[str, str], tmp_path: Path) -> None:
    cube = testing.make_cube(tmp_path / "cube", CUBE.replace("  repeat: 2", "  greting: x"))
    bad = testing.run_cli("validate", f"--mlcube={cube}", env=env)
    assert bad.returncode == 2
    assert f"{cube / 'mlcube.yaml'}:4:3: echoer.greting: unknown key 'greting'. Hint: did you mean 'greeting'?" in bad.stderr
    good = testing.make_cube(tmp_path / "good", CUBE)
    plan = testing.dry_run_json(good, "echoer", "greet", "runner.greeting=123", env=env)
    assert plan["runner"] == "echoer" and plan["steps"][0]["argv"][3:5] == ["123", "2"]  # a string, typed by the model
    wrong = testing.run_cli("run", f"--mlcube={good}", "--platform=echoer", "-Pecho.repeat=x", "-Pechoer.repeat=many", "--dry-run", env=env)
    assert wrong.returncode == 2 and "echoer.repeat: must be an integer, not str 'many'" in wrong.stderr


def test_the_kit_plans_and_runs_in_process(in_process: None, tmp_path: Path) -> None:
    assert "echoer" in registry.names() and "echoer" in registry.cube_sections()
    cube = testing.make_cube(tmp_path / "cube", CUBE)
    lines = testing.plan_lines(cube, "echoer", "greet", "runner.repeat=3")
    assert len(lines) == 1 and lines[0].startswith("cd <cube>/workspace && ") and " hi 3 <cube>/workspace/out" in lines[0]
    [result] = testing.run_task(cube, "echoer", "greet")
    assert result.status == "succeeded" and (cube / "workspace" / "out" / "greeting.txt").read_text() == "hi\nhi\n"
