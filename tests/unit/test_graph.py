from __future__ import annotations

from pathlib import Path

import pytest

from cuberun import graph
from cuberun.errors import UsageError
from cuberun.spec import load_cube
from tests.conftest import EXAMPLES, write_tree


def test_mnist_dependencies_from_paths() -> None:
    cube = load_cube(EXAMPLES / "mnist")
    assert graph.dependencies(cube) == {"download": [], "train": ["download"], "evaluate": ["download", "train"]}
    assert graph.order(cube, ["evaluate"]) == ["download", "train", "evaluate"]
    assert graph.order(cube, ["train"]) == ["download", "train"]
    assert graph.order(cube, ["train"], with_deps=False) == ["train"]
    assert graph.order(cube, ["evaluate", "train"], with_deps=False) == ["evaluate", "train"]


def test_independent_tasks_keep_yaml_order() -> None:
    cube = load_cube(EXAMPLES / "hello_world")
    assert graph.order(cube, list(cube.tasks)) == ["hello", "bye"]


def test_explicit_depends_on_and_self_loop_ignored(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": (
        "name: x\ncuberun: {depends_on: {a: [b]}}\ntasks:\n"
        "  a:\n    parameters: {inputs: {m: model/}, outputs: {m2: model/}}\n"
        "  b: {}\n")})
    cube = load_cube(tmp_path)
    assert graph.dependencies(cube) == {"a": ["b"], "b": []}
    assert graph.order(cube, ["a"]) == ["b", "a"]


def test_cycle_is_a_clear_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": (
        "name: x\ntasks:\n"
        "  a:\n    parameters: {inputs: {i: y/}, outputs: {o: x/}}\n"
        "  b:\n    parameters: {inputs: {i: x/}, outputs: {o: y/}}\n")})
    cube = load_cube(tmp_path)
    with pytest.raises(UsageError) as info:
        graph.order(cube, ["a"])
    assert info.value.message == "the tasks form a cycle: a -> b -> a"


def test_render_formats() -> None:
    cube = load_cube(EXAMPLES / "mnist")
    assert graph.render(cube) == "download  <- -\ntrain     <- download\nevaluate  <- download, train\n"
    dot = graph.render(cube, "dot")
    assert '"download" -> "train";' in dot and dot.startswith('digraph "mnist" {')
    mermaid = graph.render(cube, "mermaid")
    assert mermaid.splitlines()[0] == "flowchart LR" and "t0 --> t1" in mermaid
