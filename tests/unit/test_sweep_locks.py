from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cuberun import sweep
from cuberun.errors import BusyError, UsageError
from cuberun.locks import output_locks
from cuberun.spec import load_cube
from tests.conftest import write_tree

CUBE = """name: x
tasks:
  train:
    parameters:
      inputs: {data_dir: data/, train_config: train.yaml, other: other.yaml}
      outputs: {model_dir: model/, metrics: {type: file, default: logs/metrics.json}}
"""


def cube_at(tmp_path: Path) -> object:
    write_tree(tmp_path, {"mlcube.yaml": CUBE, "workspace/train.yaml": "batch_size: 32\noptim: {lr: 0.1}\n",
                          "workspace/other.yaml": "seed: 1\nlr: 5\n", "workspace/data/x": ""})
    return load_cube(tmp_path)


def test_file_key_sweep_variants(tmp_path: Path) -> None:
    cube = cube_at(tmp_path)
    task = cube.tasks["train"]  # type: ignore[attr-defined]
    axes = sweep.parse_axes(["batch_size=16,64", "optim.lr=0.01"], cube, task, {})  # type: ignore[arg-type]
    assert [(a.param, a.path) for a in axes] == [("train_config", ("batch_size",)), ("train_config", ("optim", "lr"))]
    found = sweep.variants(axes, cube, task, {})  # type: ignore[arg-type]
    assert [v.label for v in found] == ["batch_size=16,optim.lr=0.01", "batch_size=64,optim.lr=0.01"]
    v = found[1]
    ws = tmp_path / "workspace"
    assert v.overrides == {"train_config": str(ws / "sweeps" / v.label / "train.yaml"), "model_dir": f"sweeps/{v.label}/model/",
                           "metrics": f"sweeps/{v.label}/logs/metrics.json"}
    sweep.write_files(v)
    assert yaml.safe_load(Path(v.overrides["train_config"]).read_text()) == {"batch_size": 64, "optim": {"lr": 0.01}}


def test_explicit_file_config_key_and_errors(tmp_path: Path) -> None:
    cube = cube_at(tmp_path)
    task = cube.tasks["train"]  # type: ignore[attr-defined]
    axes = sweep.parse_axes(["other:lr=1,2", "local.env_vars.SEED=1,2"], cube, task, {})  # type: ignore[arg-type]
    assert axes[0].param == "other" and axes[1].param is None
    found = sweep.variants(axes, cube, task, {})  # type: ignore[arg-type]
    assert len(found) == 4 and found[0].params == ("local.env_vars.SEED=1",)
    with pytest.raises(UsageError, match="no YAML input of task 'train' has the key 'epochs'"):
        sweep.parse_axes(["epochs=1,2"], cube, task, {})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="is not of the form key=v1,v2"):
        sweep.parse_axes(["batch_size"], cube, task, {})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="repeats a value"):
        sweep.parse_axes(["batch_size=1,1"], cube, task, {})  # type: ignore[arg-type]


def test_locks_are_exclusive(tmp_path: Path) -> None:
    with output_locks(tmp_path, ["/a", "/b"], {"task": "t", "run": "r1"}):
        with pytest.raises(BusyError) as info, output_locks(tmp_path, ["/b"], {"task": "u", "run": "r2"}):
            pass
        assert "output /b is in use by another cuberun run (task 't'" in info.value.message
    with output_locks(tmp_path, ["/b"], {"task": "u", "run": "r2"}):
        pass
