from __future__ import annotations

from pathlib import Path

from cuberun import uptodate
from cuberun.resolve import resolve_task
from cuberun.spec import load_cube
from tests.conftest import write_tree

CUBE = """name: x
tasks:
  train:
    parameters:
      inputs: {data_dir: data/, config: train.yaml}
      outputs: {model_dir: model/}
"""


def setup(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"mlcube.yaml": CUBE, "workspace/data/a.npy": "1", "workspace/data/b.npy": "2", "workspace/train.yaml": "lr: 1\n"})


def decide(root: Path, command: list[list[str]] | None = None, runner: dict[str, str] | None = None, force: bool = False) -> uptodate.Decision:
    rt = resolve_task(load_cube(root), "train")
    identity = uptodate.identity_of(rt, command or [["python3", "t.py"]], runner or {"runner": "local"})
    return uptodate.check(rt, identity, "train", force=force)


def succeed(root: Path, decision: uptodate.Decision) -> None:
    rt = resolve_task(load_cube(root), "train")
    (root / "workspace" / "model").mkdir(exist_ok=True)
    (root / "workspace" / "model" / "m.bin").write_text("model")
    uptodate.save(rt, "train", decision, "run-1")


def test_first_run_then_up_to_date_then_reasons(tmp_path: Path) -> None:
    root = setup(tmp_path)
    first = decide(root)
    assert first.run and first.reasons == ["no previous successful run"]
    succeed(root, first)
    second = decide(root)
    assert not second.run and second.explain().startswith("up to date")
    assert decide(root, force=True).reasons == ["--force"]
    assert decide(root, command=[["python3", "t.py", "--x"]]).reasons == ["command changed"]
    assert decide(root, runner={"runner": "docker", "image_id": "sha256:1"}).reasons == ["image digest changed", "runner runner changed"]
    (root / "workspace" / "data" / "c.npy").write_text("3")
    (root / "workspace" / "data" / "a.npy").write_text("changed")
    assert decide(root).reasons == ["input data_dir changed: 2 files (1 added, 1 changed)"]


def test_touched_config_and_damaged_output(tmp_path: Path) -> None:
    root = setup(tmp_path)
    succeed(root, decide(root))
    (root / "workspace" / "train.yaml").write_text("lr: 2\n")
    assert decide(root).reasons == ["input config changed: content differs"]
    succeed(root, decide(root))
    (root / "workspace" / "model" / "m.bin").unlink()
    assert decide(root).reasons == ["output model_dir changed since the last run: 1 file (1 missing)"]
    import shutil

    shutil.rmtree(root / "workspace" / "model")
    assert decide(root).reasons == ["output model_dir is missing"]


def test_state_never_written_without_success(tmp_path: Path) -> None:
    root = setup(tmp_path)
    decide(root)
    assert not uptodate.state_path(root / "workspace", "train").exists()


def test_each_difference_of_the_runner_is_named(tmp_path: Path) -> None:
    old = {"runner": "local", "cwd": "/a", "env": {"SEED": "1", "GONE": "x"},
           "program": {"path": "/v/bin/python", "real": "/usr/bin/python3.11", "version": "3.11.2", "packages": {"numpy": "2.3.1"}},
           "code": {"sha256": "0" * 64, "files": 3}}
    new = {"runner": "local", "cwd": "/b", "env": {"SEED": "2", "NEW": "y"},
           "program": {"path": "/w/bin/python", "real": "/usr/bin/python3.11", "version": "3.11.2", "packages": {"numpy": "2.4.0"}},
           "code": {"sha256": "1" * 64, "files": 3}}
    assert uptodate.runner_reasons(old, new, tmp_path) == [
        "code changed (3 files now; the earlier listing is not kept)",
        "working directory changed: /a -> /b",
        "env var SEED changed", "env var NEW is new", "env var GONE removed",
        "package set changed: numpy 2.3.1 -> 2.4.0",
    ]
    new["program"] = {"path": "/usr/bin/python3.12", "real": "/usr/bin/python3.12", "version": "3.12.1", "packages": {"numpy": "2.3.1"}}
    assert uptodate.runner_reasons({"program": old["program"]}, {"program": new["program"]}, tmp_path) == [
        "interpreter changed: /usr/bin/python3.11 (3.11.2) -> /usr/bin/python3.12 (3.12.1)"]
    assert uptodate.runner_reasons({}, {}, tmp_path) == []


def test_an_older_state_is_named_as_such(tmp_path: Path) -> None:
    root = setup(tmp_path)
    path = uptodate.state_path(root / "workspace", "train")
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1}')
    assert decide(root).reasons == ["the last run was recorded by an earlier cuberun version"]
