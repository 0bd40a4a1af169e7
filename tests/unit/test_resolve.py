"""The reference's mount numbering and argument order (contract 2.1/2.2), pinned as goldens."""

from __future__ import annotations

from pathlib import Path

import pytest

from cuberun.errors import SpecError, UsageError
from cuberun.resolve import Mount, parse_overrides, resolve_task, select_tasks
from cuberun.spec import load_cube
from tests.conftest import write_tree


def cube_at(tmp_path: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    write_tree(tmp_path, {"mlcube.yaml": yaml_text, **(files or {})})
    return tmp_path


HELLO = """name: hello_world
docker: {image: mlcommons/hello_world:0.0.1}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""

MNIST = """name: mnist
docker: {image: mlcommons/mnist:0.0.1}
tasks:
  train:
    parameters:
      inputs: {data_dir: data/, train_config: train.yaml}
      outputs: {log_dir: logs/, model_dir: model/}
"""

MATMUL = """name: matmul
tasks:
  matmul:
    parameters:
      inputs: {parameters_file: {type: file, default: shapes.yaml}}
      outputs: {output_file: {type: file, default: matmul.txt}}
"""

GETTING_STARTED = """name: MLCube Getting Started
tasks:
  download_data:
    entrypoint: python 01_download_dataset.py
    parameters:
      inputs: {parameters_file: parameters.yaml}
      outputs: {data_dir: data/}
"""

FL = """name: mnist_fl
tasks:
  train:
    parameters:
      inputs: {data_dir: data/, model_in: model/}
      outputs: {model_dir: model/}
"""


def test_hello_world_layout(tmp_path: Path) -> None:
    root = cube_at(tmp_path, HELLO, {"workspace/names/alice.txt": "Alice"})
    rt = resolve_task(load_cube(root), "hello")
    ws = root / "workspace"
    layout = rt.layout()
    assert layout.mounts == (Mount(f"{ws}/names", "/mlcube_io0", True), Mount(f"{ws}/chats", "/mlcube_io1", False))
    assert rt.task_args(layout.args) == ["hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt"]
    assert rt.host_args() == [f"--name={ws}/names/alice.txt", f"--chat={ws}/chats/chat_with_alice.txt"]


def test_mnist_train_layout(tmp_path: Path) -> None:
    root = cube_at(tmp_path, MNIST, {"workspace/data/x": "", "workspace/train.yaml": "a: 1"})
    rt = resolve_task(load_cube(root), "train")
    ws = root / "workspace"
    layout = rt.layout()
    assert [(m.host, m.target, m.readonly) for m in layout.mounts] == [
        (f"{ws}/data", "/mlcube_io0", True),
        (str(ws), "/mlcube_io1", True),
        (f"{ws}/logs", "/mlcube_io2", False),
        (f"{ws}/model", "/mlcube_io3", False),
    ]
    assert list(layout.args) == ["--data_dir=/mlcube_io0", "--train_config=/mlcube_io1/train.yaml", "--log_dir=/mlcube_io2", "--model_dir=/mlcube_io3"]


def test_matmul_shares_one_writable_mount(tmp_path: Path) -> None:
    root = cube_at(tmp_path, MATMUL, {"workspace/shapes.yaml": "a: 1"})
    layout = resolve_task(load_cube(root), "matmul").layout()
    assert layout.mounts == (Mount(str(root / "workspace"), "/mlcube_io0", False),)
    assert list(layout.args) == ["--parameters_file=/mlcube_io0/shapes.yaml", "--output_file=/mlcube_io0/matmul.txt"]


def test_entrypoint_drops_task_name(tmp_path: Path) -> None:
    root = cube_at(tmp_path, GETTING_STARTED, {"workspace/parameters.yaml": "a: 1"})
    rt = resolve_task(load_cube(root), "download_data")
    assert rt.entrypoint == ["python", "01_download_dataset.py"]
    assert rt.task_args(rt.layout().args) == ["--parameters_file=/mlcube_io0/parameters.yaml", "--data_dir=/mlcube_io1"]


def test_same_dir_input_and_output_share_and_become_writable(tmp_path: Path) -> None:
    root = cube_at(tmp_path, FL, {"workspace/data/x": "", "workspace/model/m": ""})
    layout = resolve_task(load_cube(root), "train").layout()
    assert [(m.target, m.readonly) for m in layout.mounts] == [("/mlcube_io0", True), ("/mlcube_io1", False)]
    assert list(layout.args) == ["--data_dir=/mlcube_io0", "--model_in=/mlcube_io1", "--model_dir=/mlcube_io1"]


def test_input_mode_rw_and_opts(tmp_path: Path) -> None:
    text = HELLO.replace("{type: file, default: names/alice.txt}", "{type: file, default: names/alice.txt, opts: rw}")
    root = cube_at(tmp_path, text, {"workspace/names/alice.txt": "Alice"})
    assert resolve_task(load_cube(root), "hello").layout().mounts[0].readonly is False
    root2 = cube_at(tmp_path / "b", HELLO, {"workspace/names/alice.txt": "Alice"})
    assert resolve_task(load_cube(root2), "hello").layout(input_mode="rw").mounts[0].readonly is False


def test_overrides_relative_to_workspace_and_absolute(tmp_path: Path) -> None:
    root = cube_at(tmp_path, HELLO, {"workspace/other/bob.txt": "Bob", "elsewhere/carol.txt": "Carol"})
    cube = load_cube(root)
    rt = resolve_task(cube, "hello", {"name": "other/bob.txt"})
    assert rt.params[0].host_path == root / "workspace" / "other" / "bob.txt"
    rt = resolve_task(cube, "hello", {"name": str(root / "elsewhere" / "carol.txt"), "chat": str(root / "out" / "c.txt")})
    assert rt.params[1].host_path == root / "out" / "c.txt"


def test_workspace_option_moves_relative_paths(tmp_path: Path) -> None:
    root = cube_at(tmp_path / "cube", HELLO)
    ws = tmp_path / "my ws 'q'"
    write_tree(ws, {"names/alice.txt": "A"})
    rt = resolve_task(load_cube(root, workspace=ws), "hello")
    assert rt.params[0].host_path == ws / "names" / "alice.txt"


def test_env_and_home_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBE_DATA", str(tmp_path / "d"))
    write_tree(tmp_path / "d", {"names/alice.txt": "A"})
    text = HELLO.replace("default: names/alice.txt", "default: $CUBE_DATA/names/alice.txt")
    root = cube_at(tmp_path / "cube", text)
    assert resolve_task(load_cube(root), "hello").params[0].host_path == tmp_path / "d" / "names" / "alice.txt"


def test_missing_input_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    root = cube_at(tmp_path, MNIST)
    with pytest.raises(SpecError) as info:
        resolve_task(load_cube(root), "train")
    assert [i.render() for i in info.value.issues] == [
        f"task 'train', input 'data_dir': {root}/workspace/data does not exist (workspace {root}/workspace). Hint: run the task that produces it, or override data_dir=PATH",
        f"task 'train', input 'train_config': {root}/workspace/train.yaml does not exist (workspace {root}/workspace). Hint: run the task that produces it, or override train_config=PATH",
    ]
    assert not (root / "workspace").exists()


def test_missing_input_allowed_and_produced(tmp_path: Path) -> None:
    root = cube_at(tmp_path, MNIST)
    rt = resolve_task(load_cube(root), "train", allow_missing_inputs=True)
    assert len(rt.warnings) == 2
    rt = resolve_task(load_cube(root), "train", produced=frozenset({str(root / "workspace")}))
    assert rt.warnings == ()


def test_output_symlink_escape(tmp_path: Path) -> None:
    root = cube_at(tmp_path / "cube", "name: x\ntasks:\n  t:\n    parameters:\n      outputs: {o: link/out/}\n")
    (root / "workspace").mkdir()
    (tmp_path / "outside").mkdir()
    (root / "workspace" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(SpecError) as info:
        resolve_task(load_cube(root), "t")
    assert "outside the workspace" in info.value.lines()[0]


def test_parse_overrides() -> None:
    from cuberun.spec.model import Param, Task

    task = Task("t", None, (Param("name", "input", "a", "file"),), ())
    assert parse_overrides(["name=/a=b.txt"], [task]) == {"name": "/a=b.txt"}
    assert parse_overrides(["--name=x"], [task]) == {"name": "x"}
    with pytest.raises(UsageError):
        parse_overrides(["nmae=x"], [task])


def test_select_tasks(tmp_path: Path) -> None:
    root = cube_at(tmp_path, HELLO.replace("tasks:\n", "tasks:\n  bye: {}\n"))
    cube = load_cube(root)
    assert select_tasks(cube, None) == ["bye", "hello"]
    assert select_tasks(cube, "hello, bye") == ["hello", "bye"]
