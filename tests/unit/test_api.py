"""cuberun.api, used the way an embedding platform would: only the API, no CLI, no stdout scraping."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun import api

CUBE = """
name: apic
local: {command: python3 hello.py}
tasks:
  hello:
    parameters:
      inputs: {greeting: {type: file, default: greeting.txt}}
      outputs: {out: {type: file, default: out/hello.txt}}
  fail:
    parameters: {}
"""
HELLO = """
import sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
if "out" not in args:
    print("failing on purpose")
    sys.exit(3)
open(args["out"], "w").write(open(args["greeting"]).read().upper())
print("wrote", args["out"])
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    yield


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    root = tmp_path / "apic"
    (root / "workspace").mkdir(parents=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(CUBE))
    (root / "hello.py").write_text(textwrap.dedent(HELLO))
    (root / "workspace" / "greeting.txt").write_text("hello\n")
    return root


def test_validate_and_describe(cube: Path) -> None:
    v = api.validate(cube)
    assert v.format == "2.0" and v.tasks == ("hello", "fail") and v.file == str(cube / "mlcube.yaml")
    assert api.describe(cube)["tasks"]["hello"]["outputs"]["out"]["type"] == "file"


def test_invalid_cube_raises_the_cli_line(cube: Path) -> None:
    (cube / "mlcube.yaml").write_text("name: x\ntasks:\n  t:\n    entrypont: a\n")
    with pytest.raises(api.SpecError) as info:
        api.validate(cube)
    assert info.value.exit_code == 2
    assert str(info.value).endswith("mlcube.yaml:4:5: tasks.t.entrypont: unknown key 'entrypont' in task 't'. Hint: did you mean 'entrypoint'?")
    (cube / "mlcube.yaml").write_text(textwrap.dedent(CUBE))
    with pytest.raises(api.UsageError, match="unknown task 'nope'"):
        api.run(cube, "nope")


def test_run_returns_typed_results_and_prints_nothing(cube: Path, capfd: pytest.CaptureFixture[str]) -> None:
    result = api.run(cube, "hello", platform="local")
    assert capfd.readouterr() == ("", "")
    assert result.ok and result.exit_code == 0
    (task,) = result.tasks
    assert task.status == "succeeded" and task.exit_code == 0 and task.run_id
    assert task.outputs == {"out": str(cube / "workspace" / "out" / "hello.txt")}
    assert Path(task.outputs["out"]).read_text() == "HELLO\n"
    assert task.record_path is not None and os.path.isfile(task.record_path)
    assert "running task 'hello' on local" in result.messages
    assert task.log_path is not None and "wrote" in Path(task.log_path).read_text()
    again = api.run(cube, "hello", platform="local")
    assert again.tasks[0].status != "succeeded" or again.tasks[0].run_id == task.run_id  # up to date: nothing ran


def test_volumes_and_a_failing_task(cube: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("bye\n")
    result = api.run(cube, "hello", platform="local", volumes={"greeting": other, "out": tmp_path / "x" / "o.txt"})
    assert (tmp_path / "x" / "o.txt").read_text() == "BYE\n"
    failed = api.run(cube, "fail", platform="local")
    assert not failed.ok and failed.exit_code == 3 and failed.tasks[0].status == "failed"
    assert "failing on purpose" in Path(str(failed.tasks[0].log_path)).read_text()
    assert result.ok


def test_plan_is_the_dry_run(cube: Path) -> None:
    p = api.plan(cube, "hello", platform="docker", params=["docker.image=example/apic:1"])
    assert p.runner == "docker" and p.tasks == ("hello",)
    run = next(c for c in p.commands if c[:2] == ("docker", "run"))
    assert "--network=none" in run and "--cap-drop=ALL" in run
    assert p.policy["hello"]["strict"] is True


def test_the_examples_of_docs_api_md_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), {"__name__": "docs_api"})
