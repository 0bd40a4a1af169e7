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


def _chain(tmp_path: Path, n: int) -> object:
    lines = ["name: chain", "tasks:"]
    lines += [f"  t{i}: {{parameters: {{inputs: {{i: d{i}/}}, outputs: {{o: d{i + 1}/}}}}}}" for i in range(n)]
    write_tree(tmp_path, {"mlcube.yaml": "\n".join(lines) + "\n"})
    return load_cube(tmp_path)


def test_a_long_chain_needs_no_recursion(tmp_path: Path) -> None:
    cube = _chain(tmp_path, 5000)  # deeper than Python's recursion limit
    order = graph.order(cube, ["t4999"])
    assert order == [f"t{i}" for i in range(5000)]
    assert graph.dependencies(cube)["t4999"] == ["t4998"]
    assert graph.render(cube).splitlines()[-1] == "t4999  <- t4998"


def test_an_input_deep_inside_an_output_and_an_output_over_it(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": (
        "name: x\ntasks:\n"
        "  late: {parameters: {inputs: {i: out/a/b/c.txt}, outputs: {o: {type: file, default: r.txt}}}}\n"
        "  outer: {parameters: {outputs: {o: out/}}}\n"
        "  inner: {parameters: {outputs: {o: out/a/}}}\n")})
    cube = load_cube(tmp_path)
    assert graph.dependencies(cube)["late"] == ["outer", "inner"]  # YAML order among producers
    assert graph.order(cube, ["late"]) == ["outer", "inner", "late"]


def test_tasks_writing_one_path_wait_for_the_nearest_earlier_writer(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": (
        "name: x\ntasks:\n"
        "  a: {parameters: {outputs: {o: logs/}}}\n"
        "  b: {parameters: {outputs: {o: {type: file, default: logs/b.txt}}}}\n"
        "  c: {parameters: {outputs: {o: logs/}}}\n"
        "  d: {parameters: {outputs: {o: other/}}}\n"
        "  e: {parameters: {outputs: {o: logs/, p: {type: file, default: other/e.txt}}}}\n")})
    cube = load_cube(tmp_path)
    names = ["a", "b", "c", "d", "e"]
    assert graph.write_after(cube, names) == {"a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["b", "c", "d"]}
    assert graph.write_after(cube, ["e", "a"]) == {"e": [], "a": ["e"]}  # the order asked for decides who waits
    assert graph.write_after(cube, names, {"p": "elsewhere.txt"})["e"] == ["b", "c"]  # overrides apply


def test_write_after_is_linear_in_writers(tmp_path: Path) -> None:
    lines = ["name: fan", "tasks:"] + [f"  t{i}: {{parameters: {{outputs: {{o: logs/}}}}}}" for i in range(5000)]
    write_tree(tmp_path, {"mlcube.yaml": "\n".join(lines) + "\n"})
    cube = load_cube(tmp_path)
    after = graph.write_after(cube, list(cube.tasks))
    assert after["t0"] == [] and all(after[f"t{i}"] == [f"t{i - 1}"] for i in range(1, 5000))
