"""Legacy MLBox formats: detection, conversion to config 2.0, notes, parameter sets, the BOX:TASK/SET syntax."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cuberun import yamlio
from cuberun.errors import SpecError, UsageError
from cuberun.spec import legacy, load_cube
from cuberun.spec.legacy import BoxRef, parse_box_ref, split_run_args, strip_workspace
from cuberun.spec.load import build_cube
from tests import legacy_cubes as lc
from tests.conftest import write_tree


def errors(exc: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return exc.value.lines()


# -- detection ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "fmt", "root_file"),
    [
        (lambda p: lc.poc_hello_world(p), legacy.FORMAT_POC, "mlbox.yaml"),
        (lambda p: lc.poc_hello_world(p, docker=True), legacy.FORMAT_POC, "mlbox.yaml"),
        (lambda p: lc.poc_mnist(p), legacy.FORMAT_MLBOX, "mlbox.yaml"),
        (lambda p: lc.v1_hello_world(p), legacy.FORMAT_V1, "mlcube.yaml"),
        (lambda p: lc.v1_hello_world(p, root_file="mlbox.yaml"), legacy.FORMAT_V1, "mlbox.yaml"),
        (lambda p: lc.v1_mnist(p), legacy.FORMAT_V1, "mlcube.yaml"),
    ],
    ids=["poc-direct-python", "poc-docker", "mlbox-0.1", "v1-mlcube", "v1-mlbox", "v1-mnist"],
)
def test_detect_builders(tmp_path: Path, build: Any, fmt: str, root_file: str) -> None:
    build(tmp_path)
    assert legacy.detect(tmp_path) == (fmt, tmp_path / root_file)
    cube = load_cube(tmp_path)
    assert cube.format == fmt
    assert cube.file == tmp_path / root_file and cube.root == tmp_path and cube.workspace == tmp_path / "workspace"
    assert [w.severity for w in cube.warnings] == ["warning"]
    assert f"(format {fmt}), converted to config 2.0 in memory" in cube.warnings[0].render()


@pytest.mark.parametrize(
    ("data", "name", "fmt"),
    [
        ({"schema_type": "mlcube_root", "tasks": ["tasks/a.yaml"]}, "mlcube.yaml", legacy.FORMAT_V1),
        ({"schema_type": "mlbox_root"}, "mlbox.yaml", legacy.FORMAT_V1),
        ({"name": "x", "tasks": ["tasks/a.yaml"]}, "mlcube.yaml", legacy.FORMAT_V1),
        ({"tasks": {"a": {"parameters": [{"name": "p", "type": "file", "io": "input"}]}}}, ".mlcube.yaml", legacy.FORMAT_PRE2),
        ({"type": "mlbox", "name": "x", "tasks": {}}, "mlbox.yaml", legacy.FORMAT_MLBOX),
        ({"name": "x", "tasks": {"a": {}}}, "mlbox.yaml", legacy.FORMAT_POC),
        ({"name": "x", "tasks": {"a": {"parameters": {"inputs": {}}}}}, "mlcube.yaml", None),
        ("just text", "mlcube.yaml", None),
    ],
)
def test_detect_data(data: Any, name: str, fmt: str | None) -> None:
    assert legacy.detect_data(data, Path("/x") / name) == fmt


def test_config_2_next_to_legacy_files_wins_for_loading(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path)
    write_tree(tmp_path, {"mlcube.yaml": "name: new\nlocal: {command: python x.py}\ntasks:\n  hello: {}\n"})
    assert load_cube(tmp_path).format == "2.0"
    assert legacy.detect(tmp_path) == (legacy.FORMAT_POC, tmp_path / "mlbox.yaml")  # migrate still finds the legacy cube


def test_user_defaults_dot_mlcube_yaml_is_not_a_cube(tmp_path: Path) -> None:
    write_tree(tmp_path, {".mlcube.yaml": "docker:\n  docker: docker\n  build_always: true\n"})
    assert legacy.find_root_file(tmp_path) is None
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [f"no mlcube.yaml in {tmp_path}. Hint: pass --mlcube=DIR with the cube's directory, or the YAML file itself"]


def test_implementation_without_mlbox_yaml(tmp_path: Path) -> None:
    write_tree(tmp_path, {"implementation/mlbox_implementation.yaml": "implementation_type: direct_python\nmain_file: x.py\n"})
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [f"no mlcube.yaml or mlbox.yaml in {tmp_path}. Hint: implementation/mlbox_implementation.yaml "
                           "belongs to a legacy MLBox, whose mlbox.yaml names the tasks"]


# -- the MLBox proof of concept ----------------------------------------------------------------------
def test_poc_direct_python_conversion(tmp_path: Path) -> None:
    conv = legacy.convert(lc.poc_hello_world(tmp_path))
    assert conv.format == legacy.FORMAT_POC
    assert conv.config == {
        "name": "hello_world",
        "version": "0.1",  # as written, not the float 0.1
        "authors": [{"name": "cuberun tests"}],
        "local": {"command": "python hello_world.py", "workdir": "implementation", "env": "current"},
        "tasks": {
            "hello": {
                "entrypoint": "python hello_world.py --mlbox_task=hello",
                "parameters": {
                    "inputs": {"name": {"type": "file", "default": "names/world.txt"}},
                    "outputs": {"greeting": {"type": "file", "default": "greetings/world.txt"}},
                },
            },
            "goodbye": {
                "entrypoint": "python hello_world.py --mlbox_task=goodbye",
                "parameters": {
                    # greeting does not exist yet: it takes the type of hello's output of the same path
                    "inputs": {"name": {"type": "file", "default": "names/world.txt"}, "greeting": {"type": "file", "default": "greetings/world.txt"}},
                    "outputs": {"farewell": {"type": "file", "default": "farewells/world.txt"}},
                },
            },
        },
    }
    assert conv.notes == []
    assert conv.assumptions == [
        "task 'hello', output 'greeting': 'greetings/world.txt' is taken as a file (the legacy format has no types)",
        "task 'goodbye', output 'farewell': 'farewells/world.txt' is taken as a file (the legacy format has no types)",
    ]


def test_poc_host_invocation_keeps_the_mlbox_contract(tmp_path: Path) -> None:
    """`cd <box>/implementation; python main.py --mlbox_task=hello --name=<abs> ...`: no positional task."""
    from cuberun.resolve import resolve_task
    from cuberun.runners.base import RunOptions
    from cuberun.runners.local import LocalRunner

    cube = load_cube(lc.poc_hello_world(tmp_path))
    runner = LocalRunner(cube, {"command": "python hello_world.py", "workdir": "implementation", "env": "current"}, "local", RunOptions())
    [step] = runner.run_steps(resolve_task(cube, "hello"))
    ws = tmp_path / "workspace"
    assert step.argv[1:] == ("hello_world.py", "--mlbox_task=hello", f"--name={ws}/names/world.txt", f"--greeting={ws}/greetings/world.txt")
    assert step.cwd == str(tmp_path / "implementation")


def test_poc_docker_conversion_uses_the_dockerfile_entrypoint(tmp_path: Path) -> None:
    conv = legacy.convert(lc.poc_hello_world(tmp_path, docker=True, image="me/hello:1"))
    assert conv.config["docker"] == {
        "image": "me/hello:1",
        "build_context": ".",
        "build_file": "implementation/docker/dockerfiles/Dockerfile",
        "build_strategy": "auto",
    }
    assert "local" not in conv.config
    assert conv.config["tasks"]["goodbye"]["entrypoint"] == "python3 /mlbox/hello_world.py --mlbox_task=goodbye"
    assert any("--platform=docker" in n for n in conv.notes)


def test_poc_docker_command_args_and_what_is_not_carried(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path, docker=True)
    write_tree(tmp_path, {"implementation/mlbox_implementation.yaml": (
        "implementation_type: docker\ndocker_runtime: nvidia-docker\nimage: xyhuang/mlbox-example-transformer:dev\n"
        "configure: pull\ncommand: ['implementation/src/scripts/run_training.sh']\nargs: ['--verbose']\n"
        "docker_args: ['--net=host', '--privileged=true']\n")})
    conv = legacy.convert(tmp_path)
    assert conv.config["docker"] == {"image": "xyhuang/mlbox-example-transformer:dev"}  # configure: pull
    assert conv.config["tasks"]["hello"]["entrypoint"] == "implementation/src/scripts/run_training.sh --verbose --mlbox_task=hello"
    notes = "\n".join(conv.notes)
    assert "docker_runtime: nvidia-docker is not carried over: request GPUs with --gpus=all" in notes
    assert "docker_args: [--net=host, --privileged=true] is not carried over" in notes


def test_poc_docker_without_dockerfile_or_command(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path, docker=True)
    (tmp_path / legacy.POC_DOCKERFILE).unlink()
    conv = legacy.convert(tmp_path)
    assert "entrypoint" not in conv.config["tasks"]["hello"]
    assert any("ENTRYPOINT is unknown" in n for n in conv.notes)
    assert any("configure: build, but there is no" in n for n in conv.notes)


def test_poc_without_default_set_types_from_another_set(tmp_path: Path) -> None:
    """The original PoC hello_world only had tasks/hello/xinyuan.yaml."""
    lc.poc_hello_world(tmp_path)
    for task in ("hello", "goodbye"):
        (tmp_path / "tasks" / task / "default.yaml").unlink()
    conv = legacy.convert(tmp_path)
    hello = conv.config["tasks"]["hello"]["parameters"]
    assert hello == {"inputs": {"name": {"type": "file", "default": "name"}}, "outputs": {"greeting": {"type": "file", "default": "greeting"}}}
    assert any("task 'hello' has no default parameter set (tasks/hello/default.yaml)" in n and "(alice)" in n for n in conv.notes)


def test_python_implementation_with_entrypoint_and_requirements(tmp_path: Path) -> None:
    """The bare-metal variant: `implementation_type: python`, `entrypoint` relative to the box root."""
    lc.poc_hello_world(tmp_path)
    write_tree(tmp_path, {
        "implementation/mlbox_implementation.yaml": "implementation_type: python\ninterpreter: system\nsystem:\n  interpreter:\n"
                                                    "requirements: numpy pyyaml\nentrypoint: implementation/hello_world.py\n",
    })
    conv = legacy.convert(tmp_path)
    assert conv.config["local"] == {"command": "python implementation/hello_world.py", "workdir": ".", "packages": ["numpy", "pyyaml"]}
    assert conv.config["tasks"]["hello"]["entrypoint"] == "python implementation/hello_world.py --mlbox_task=hello"


def test_fake_model_variant(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "mlbox.yaml": "box_name: fake_model\nbox_implementation: standard_docker\ncontainer: {image: mlperf/fake:1, command: [python3, /fake.py]}\n"
                      "commandline_config: {pass_mlbox_args: True}\ntasks:\n  train:\n    inputs: {params: {desc: p}}\n    outputs: {log_file: {desc: l}}\n",
        "tasks/train/small_batch.yaml": "params: small.yaml\nlog_file: logs/small.log\n",
    })
    conv = legacy.convert(tmp_path)
    assert conv.config["name"] == "fake_model"
    assert conv.config["docker"] == {"image": "mlperf/fake:1"}
    assert conv.config["tasks"]["train"] == {
        "entrypoint": "python3 /fake.py --mlbox_task=train",
        "parameters": {"inputs": {"mlbox_params": {"default": "params"}}, "outputs": {"mlbox_log_file": {"type": "file", "default": "log_file"}}},
    }
    cube = load_cube(tmp_path)
    assert legacy.paramset(cube, "train", "small_batch").bindings == {"mlbox_params": "small.yaml", "mlbox_log_file": "logs/small.log"}


def test_singularity_implementation_is_reported(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path)
    write_tree(tmp_path, {"implementation/mlbox_implementation.yaml": "implementation_type: singularity\n"})
    conv = legacy.convert(tmp_path)
    assert set(conv.config) == {"name", "version", "authors", "tasks"}
    assert any("implementation_type 'singularity' is not converted" in n for n in conv.notes)


# -- config 1.0 ------------------------------------------------------------------------------------
def test_v1_conversion(tmp_path: Path) -> None:
    conv = legacy.convert(lc.v1_hello_world(tmp_path))
    assert conv.config == {
        "name": "hello_world",
        "version": "0.1.0",
        "authors": [{"name": "cuberun tests"}],
        "docker": {"image": "mlcommons/hello_world:0.0.1", "build_context": "build", "build_file": "Dockerfile", "build_strategy": "auto"},
        "tasks": {
            t: {"parameters": {"inputs": {"name": {"type": "file", "default": "names/bob.txt"}},
                               "outputs": {"chat": {"type": "file", "default": "chats/chat_with_bob.txt"}}}}
            for t in ("hello", "bye")
        },
    }
    assert conv.assumptions == []
    assert len(conv.notes) == 2
    ssh = next(n for n in conv.notes if n.startswith("platforms/ssh.yaml"))
    assert "platforms: {ssh: {runner: ssh, host: mlcube-remote, platform: docker}}, then run with --platform=ssh" in ssh
    simg = next(n for n in conv.notes if n.startswith("platforms/singularity.yaml"))
    assert "${HOME}/mlcube/hello.simg is not carried over" in simg


def test_v1_mnist_directories_and_file(tmp_path: Path) -> None:
    conv = legacy.convert(lc.v1_mnist(tmp_path))
    assert conv.config["tasks"]["download"] == {"parameters": {"outputs": {
        "data_dir": {"type": "directory", "default": "data"}, "log_dir": {"type": "directory", "default": "logs"}}}}
    assert conv.config["tasks"]["train"]["parameters"]["inputs"] == {
        "data_dir": {"type": "directory", "default": "data"}, "train_config": {"type": "file", "default": "train.yaml"}}
    assert conv.notes == []


def test_v1_platform_variants_and_unbound_parameters(tmp_path: Path) -> None:
    lc.v1_hello_world(tmp_path)
    write_tree(tmp_path, {
        "platforms/docker.yaml": "schema_type: mlcommons_box_platform\nplatform: {name: docker}\nconfiguration:\n"
                                 "  image: mlperf/mlbox:hello\n  parameters: '--rm --net=host --privileged=true'\n",
        "run/bye.yaml": "schema_type: mlcube_invoke\ntask_name: bye\ninput_binding: {name: {path: /data/names/x.txt, k8s: {pvc: p}}}\noutput_binding: {}\n",
    })
    (tmp_path / "platforms" / "ssh.yaml").unlink()
    (tmp_path / "platforms" / "singularity.yaml").unlink()
    (tmp_path / "build" / "Dockerfile").unlink()
    conv = legacy.convert(tmp_path)
    assert conv.config["docker"] == {"image": "mlperf/mlbox:hello"}  # no build/Dockerfile: pulled
    assert conv.config["tasks"]["bye"]["parameters"] == {"inputs": {"name": {"type": "file", "default": "/data/names/x.txt"}},
                                                         "outputs": {"chat": {"type": "file", "default": "chat"}}}
    assert conv.notes == [
        "task 'bye', output 'chat': not bound in run/bye.yaml; it defaults to 'chat'",
        "platforms/docker.yaml: docker run parameters '--rm --net=host --privileged=true' are not carried over; "
        "add the ones you still need to docker.extra_run_args",
    ]


@pytest.mark.parametrize(("value", "expected"), [
    ("$WORKSPACE/names/a.txt", "names/a.txt"), ("${WORKSPACE}/x", "x"), ("$WORKSPACE", "."), ("$WORKSPACE/", "."),
    ("/abs/x", "/abs/x"), ("rel/x", "rel/x"), ("$WORKSPACEX/y", "$WORKSPACEX/y"),
])
def test_strip_workspace(value: str, expected: str) -> None:
    assert strip_workspace(value) == expected


# -- pre-2.0 .mlcube.yaml ---------------------------------------------------------------------------
def test_pre2_conversion(tmp_path: Path) -> None:
    write_tree(tmp_path, {".mlcube.yaml": (
        "name: SSD\nauthor: me\ntasks:\n  download:\n    parameters:\n"
        "      - {name: cache_dir, type: directory, io: output}\n      - {name: data_dir, type: directory, io: output}\n"
        "    tasks:\n      download: {cache_dir: $WORKSPACE/cache, data_dir: $WORKSPACE/data}\n"
        "  train:\n    parameters:\n      - {name: data_dir, type: directory, io: input}\n      - {name: parameters_file, type: file, io: input}\n"
        "    tasks:\n      train: {data_dir: $WORKSPACE/data, parameters_file: $WORKSPACE/parameters.yaml}\n"
        "      small: {data_dir: $WORKSPACE/data, parameters_file: $WORKSPACE/small.yaml}\n")})
    conv = legacy.convert(tmp_path)
    assert conv.format == legacy.FORMAT_PRE2 and conv.file == tmp_path / ".mlcube.yaml"
    assert conv.config["tasks"]["train"] == {"parameters": {"inputs": {
        "data_dir": {"type": "directory", "default": "data"}, "parameters_file": {"type": "file", "default": "parameters.yaml"}}}}
    assert conv.notes == ["no docker section: add docker.image to run in a container"]
    cube = load_cube(tmp_path)
    assert cube.format == legacy.FORMAT_PRE2
    assert legacy.paramset(cube, "train", "small").bindings == {"data_dir": "data", "parameters_file": "small.yaml"}


# -- errors with positions ---------------------------------------------------------------------------
def test_errors_point_into_the_legacy_files(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path)
    write_tree(tmp_path, {
        "implementation/mlbox_implementation.yaml": "implementation_type: direct_pyhton\nmain_file: hello_world.py\n",
        "tasks/hello/default.yaml": "name: 3\ngreting: greetings/world.txt\n",
    })
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [
        f"{tmp_path}/tasks/hello/default.yaml:1:7: name: must be a path string, not int 3. Hint: quote the value",
        f"{tmp_path}/tasks/hello/default.yaml:2:1: greting: task 'hello' has no parameter 'greting'. Hint: did you mean 'greeting'?",
        f"{tmp_path}/implementation/mlbox_implementation.yaml:1:22: implementation_type: unknown implementation_type 'direct_pyhton'. "
        "Hint: did you mean 'direct_python'?",
    ]


def test_syntax_error_in_a_secondary_file(tmp_path: Path) -> None:
    lc.v1_hello_world(tmp_path)
    write_tree(tmp_path, {"tasks/bye.yaml": "inputs: [{name: name, type: file}\noutputs: []\n"})
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    [line] = errors(exc)
    assert line.startswith(f"{tmp_path}/tasks/bye.yaml:2:1: invalid YAML: ")


def test_v1_errors(tmp_path: Path) -> None:
    lc.v1_hello_world(tmp_path)
    write_tree(tmp_path, {
        "mlcube.yaml": "schema_type: mlcube_root\nname: hello_world\ntasks:\n  - tasks/hello.yaml\n  - tasks/missing.yaml\n",
        "tasks/hello.yaml": "schema_type: mlcube_task\ninputs:\n  - {name: name, type: fiel}\noutputs: [{name: chat, type: file}]\n",
    })
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [
        f"{tmp_path}/tasks/hello.yaml:3:24: inputs[0].type: type of 'name' must be 'file' or 'directory'. Hint: did you mean 'file'?",
        f"{tmp_path}/mlcube.yaml:5:5: tasks[1]: task file tasks/missing.yaml does not exist. "
        "Hint: a config 1.0 (MLCommons Box) root file lists task files, relative to its directory",
    ]


def test_mlbox_yaml_errors(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlbox.yaml": "name: x\ntasks:\n  t:\n    input: {a: {desc: b}}\n"})
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [
        f"{tmp_path}/mlbox.yaml:4:5: tasks.t.input: unknown key 'input' in task 't'. Hint: did you mean 'inputs'?",
        f"{tmp_path}/mlbox.yaml: implementation/mlbox_implementation.yaml is missing. "
        "Hint: a legacy MLBox says how to run its tasks in implementation/mlbox_implementation.yaml",
    ]


def test_missing_main_file(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path)
    write_tree(tmp_path, {"implementation/mlbox_implementation.yaml": "implementation_type: direct_python\nmain_file: nope.py\n"})
    with pytest.raises(SpecError) as exc:
        load_cube(tmp_path)
    assert errors(exc) == [f"{tmp_path}/implementation/mlbox_implementation.yaml:2:12: main_file: implementation/nope.py does not exist"]


# -- parameter sets and the BOX:TASK/SET syntax -------------------------------------------------------
def test_paramsets(tmp_path: Path) -> None:
    poc = load_cube(lc.poc_hello_world(tmp_path / "poc"))
    assert legacy.paramset(poc, "goodbye", "alice").bindings == {
        "name": "names/alice.txt", "greeting": "greetings/alice.txt", "farewell": "farewells/alice.txt"}
    assert legacy.paramset(poc, "hello", "default").bindings == {"name": "names/world.txt", "greeting": "greetings/world.txt"}
    v1 = load_cube(lc.v1_hello_world(tmp_path / "v1"))
    assert legacy.paramset(v1, "bye", "alice").bindings == {"name": "names/alice.txt", "chat": "chats/chat_with_alice.txt"}
    assert legacy.paramset(v1, "bye", "default").bindings == {}  # no run/default/: the cube's defaults
    with pytest.raises(UsageError) as exc:
        legacy.paramset(v1, "hello", "alise")
    assert exc.value.lines() == [f"no parameter set 'alise' for task 'hello' in {tmp_path / 'v1'} "
                                 "(looked for tasks/hello/alise.yaml or run/alise/hello.yaml). Hint: did you mean 'alice'?"]
    assert legacy.paramset_overrides(v1, ["hello"], None) == {}
    with pytest.raises(UsageError, match="needs exactly one task"):
        legacy.paramset_overrides(v1, ["hello", "bye"], "alice")


def test_paramset_with_unknown_parameter(tmp_path: Path) -> None:
    cube = load_cube(lc.poc_hello_world(tmp_path))
    write_tree(tmp_path, {"tasks/hello/bad.yaml": "name: names/a.txt\nnmae: x\n"})
    with pytest.raises(SpecError) as exc:
        legacy.paramset(cube, "hello", "bad")
    assert errors(exc) == [f"{tmp_path}/tasks/hello/bad.yaml:2:1: nmae: task 'hello' has no parameter 'nmae'. Hint: did you mean 'name'?"]


@pytest.mark.parametrize(("text", "ref"), [
    ("./box:train/default", BoxRef("./box", "train", "default")),
    ("./box:train", BoxRef("./box", "train", None)),
    ("box", BoxRef("box")),
    (":hello/alice", BoxRef(".", "hello", "alice")),
    ("../examples/transformer:downloaddata/default", BoxRef("../examples/transformer", "downloaddata", "default")),
])
def test_parse_box_ref(text: str, ref: BoxRef) -> None:
    assert parse_box_ref(text) == ref


def test_parse_box_ref_existing_path_with_colon(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_box_ref(str(odd)) == BoxRef(str(odd))
    with pytest.raises(UsageError, match="names no task"):
        parse_box_ref("./box:/alice")


def test_split_run_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "box").mkdir()
    assert split_run_args(None, None, ["./box:hello/alice", "--name=x"]) == ("./box", "hello", "alice", ["--name=x"])
    assert split_run_args(None, None, ["--name=x", "box:hello"]) == ("box", "hello", None, ["--name=x"])
    assert split_run_args("./box:hello/alice", None, ["name=x"]) == ("./box", "hello", "alice", ["name=x"])
    assert split_run_args("./box", "hello", []) == ("./box", "hello", None, [])
    assert split_run_args(None, "t", ["box"]) == ("box", "t", None, [])  # an existing directory
    assert split_run_args(None, None, ["word"]) == (None, None, None, ["word"])  # left for the override parser to reject
    with pytest.raises(UsageError, match="the cube is given twice"):
        split_run_args("./box", None, ["./other:hello"])
    with pytest.raises(UsageError, match="the task is given twice"):
        split_run_args(None, "bye", ["./box:hello"])


# -- migrate ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [lc.poc_hello_world, lc.poc_mnist, lc.v1_hello_world, lc.v1_mnist])
def test_migrated_text_loads_as_the_same_cube(tmp_path: Path, build: Any) -> None:
    build(tmp_path)
    conv = legacy.convert(tmp_path)
    text = legacy.migrated_text(conv)
    assert text.startswith("# Config 2.0, converted by `cuberun migrate` from the ")
    target = legacy.default_output(conv)
    migrated = build_cube(yamlio.parse(text, str(target)), target)
    original = load_cube(tmp_path)
    assert migrated.format == "2.0"
    assert migrated.tasks.keys() == original.tasks.keys()
    for name, task in original.tasks.items():
        other = migrated.tasks[name]
        assert (other.entrypoint, [(p.name, p.io, p.default, p.type) for p in other.params]) == (
            task.entrypoint, [(p.name, p.io, p.default, p.type) for p in task.params])
    assert {k: v for k, v in migrated.config.items() if k not in ("runtime", "workspace")} == conv.config
    assert yaml.safe_load(text) == conv.config


def test_default_output(tmp_path: Path) -> None:
    assert legacy.default_output(legacy.convert(lc.poc_hello_world(tmp_path / "poc"))) == tmp_path / "poc" / "mlcube.yaml"
    assert legacy.default_output(legacy.convert(lc.v1_hello_world(tmp_path / "v1"))) == tmp_path / "v1" / "mlcube.v2.yaml"
    assert legacy.default_output(legacy.convert(lc.v1_hello_world(tmp_path / "v1b", root_file="mlbox.yaml"))) == tmp_path / "v1b" / "mlcube.yaml"


def test_convert_refuses_config_2(tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": "name: x\ntasks:\n  a: {}\n"})
    with pytest.raises(SpecError) as exc:
        legacy.convert(tmp_path)
    assert errors(exc) == [f"{tmp_path}/mlcube.yaml: already a config-2.0 cube. Hint: there is nothing to migrate"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="no legacy cube"):
        legacy.convert(empty)


def test_version_number_kept_as_written(tmp_path: Path) -> None:
    lc.poc_hello_world(tmp_path)
    text = (tmp_path / "mlbox.yaml").read_text().replace("version: 0.1", "version: 0.10")
    (tmp_path / "mlbox.yaml").write_text(text)
    assert legacy.convert(tmp_path).config["version"] == "0.10"
    assert legacy.convert(tmp_path / "mlbox.yaml").config["version"] == "0.10"  # the root file itself
