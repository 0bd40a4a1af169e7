"""Golden tests of the docker runner's pure command builders (`run_steps`, `configure_steps`),
plus its error handling against a fake engine executable (no real engine needed)."""

from __future__ import annotations

import os
import re
import stat
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import BackendError, RunnerUnavailable, SpecError, TaskFailed, UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.docker import HASH_LABEL, PROXY_VARS, DockerRunner, context_hash, is_ignored, read_dockerignore
from cuberun.spec.load import load_cube

HELLO = """
name: hello_world
platform: {accelerator_count: 0}
docker:
  image: mlcommons/hello_world:0.0.1
  build_context: "."
  build_file: "Dockerfile"
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""

NAME = re.compile(r"^--name=cuberun-(.+)-[0-9a-f]{8}$")
POL = ["--network=none", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp:rw,exec,mode=1777"]  # policy.py
U = ["-u", "1000:1000", *POL]
HOME = ["-e", "HOME=/tmp"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    yield


def make_cube(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """A cube directory: mlcube.yaml plus files (relative paths; 'workspace/...' for inputs)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text))
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def runner_for(cube_dir: Path, *params: str, platform: str = "docker", options: RunOptions | None = None,
               workspace: Path | None = None) -> DockerRunner:
    cube = load_cube(cube_dir, workspace=workspace, overrides=params)
    runner = make_runner(cube, platform, options or RunOptions(), params)
    assert isinstance(runner, DockerRunner)
    return runner


def norm(argv: Sequence[str]) -> list[str]:
    """The container name is random: pin it to cuberun-<task>-N after checking its shape."""
    out = []
    for item in argv:
        m = NAME.match(item)
        out.append(f"--name=cuberun-{m.group(1)}-N" if m else item)
    return out


def run_argv(runner: DockerRunner, task: str, overrides: dict[str, str] | None = None) -> list[str]:
    rt = resolve_task(runner.cube, task, overrides)
    steps = runner.run_steps(rt)
    assert len(steps) == 1 and steps[0].purpose == "run"
    return norm(steps[0].argv)


def head(task: str, exe: Sequence[str] = ("docker",)) -> list[str]:
    return [*exe, "run", "--rm", f"--name=cuberun-{task}-N", "--label=cuberun.run=1"]


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    return make_cube(tmp_path / "hello_world", HELLO, {"workspace/names/alice.txt": "Alice\n", "Dockerfile": "FROM scratch\n"})


# -- the reference's worked examples ---------------------------------------------------------
def test_hello_world(hello: Path) -> None:
    ws = hello / "workspace"
    runner = runner_for(hello)
    assert run_argv(runner, "hello") == [
        *head("hello"), *U, *HOME,
        "--volume", f"{ws}/names:/mlcube_io0:ro", "--volume", f"{ws}/chats:/mlcube_io1",
        "mlcommons/hello_world:0.0.1", "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]
    # default strategy pull: configure pulls even though a Dockerfile exists (the reference's rule)
    assert [list(s.argv) for s in runner.configure_steps()] == [["docker", "pull", "mlcommons/hello_world:0.0.1"]]


def test_container_name_is_unique_and_stable_per_task(hello: Path) -> None:
    runner = runner_for(hello)
    rt = resolve_task(runner.cube, "hello")
    plan = runner.plan(rt)  # made once per run: the record, the identity and the run all read it
    first = plan.steps[0].argv
    assert f"--name={plan.value('container')}" in first and runner.watchdog_cleanup(plan)[0][-1] == plan.value("container")
    other = runner_for(hello).plan(rt).steps[0].argv
    names = [a for a in (*first, *other) if NAME.match(a)]
    assert len(names) == 2 and names[0] != names[1]


MNIST = """
name: mnist
docker: {image: mlcommons/mnist:0.0.1}
tasks:
  train:
    parameters:
      inputs: {data_dir: data/, train_config: train.yaml}
      outputs: {log_dir: logs/, model_dir: model/}
"""


def test_mnist_train(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "mnist", MNIST, {"workspace/data/x": "", "workspace/train.yaml": "{}"})
    ws = cube / "workspace"
    assert run_argv(runner_for(cube), "train") == [
        *head("train"), *U, *HOME,
        "--volume", f"{ws}/data:/mlcube_io0:ro", "--volume", f"{ws}:/mlcube_io1:ro",
        "--volume", f"{ws}/logs:/mlcube_io2", "--volume", f"{ws}/model:/mlcube_io3",
        "mlcommons/mnist:0.0.1", "train",
        "--data_dir=/mlcube_io0", "--train_config=/mlcube_io1/train.yaml", "--log_dir=/mlcube_io2", "--model_dir=/mlcube_io3",
    ]


def test_matmul_shares_one_writable_mount(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "matmul", """
        name: matmul
        docker: {image: mlcommons/matmul:0.0.1}
        tasks:
          matmul:
            parameters:
              inputs: {parameters_file: {type: file, default: shapes.yaml}}
              outputs: {output_file: {type: file, default: matmul.txt}}
    """, {"workspace/shapes.yaml": "{}"})
    ws = cube / "workspace"
    assert run_argv(runner_for(cube), "matmul") == [
        *head("matmul"), *U, *HOME, "--volume", f"{ws}:/mlcube_io0",
        "mlcommons/matmul:0.0.1", "matmul", "--parameters_file=/mlcube_io0/shapes.yaml", "--output_file=/mlcube_io0/matmul.txt",
    ]


def test_multi_token_entrypoint_drops_the_task_name(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "gs", """
        name: getting_started
        docker: {image: mlcommons/getting_started:0.0.1}
        tasks:
          download_data:
            entrypoint: python 01_download_dataset.py
            parameters:
              inputs: {parameters_file: parameters.yaml}
              outputs: {data_dir: data/}
    """, {"workspace/parameters.yaml": "{}"})
    ws = cube / "workspace"
    assert run_argv(runner_for(cube), "download_data") == [
        *head("download_data"), *U, "--entrypoint=python", *HOME,
        "--volume", f"{ws}:/mlcube_io0:ro", "--volume", f"{ws}/data:/mlcube_io1",
        "mlcommons/getting_started:0.0.1", "01_download_dataset.py", "--parameters_file=/mlcube_io0/parameters.yaml", "--data_dir=/mlcube_io1",
    ]


def test_single_token_entrypoint_keeps_its_parameters(tmp_path: Path) -> None:
    """The reference drops every argument here (bug 2.3); we keep them."""
    cube = make_cube(tmp_path / "gpu", """
        name: check
        docker: {image: example/check:1}
        tasks:
          check:
            entrypoint: ./check_gpus.sh
            parameters:
              inputs: {cfg: {type: file, default: cfg.yaml}}
              outputs: {report: {type: file, default: out/report.txt}}
    """, {"workspace/cfg.yaml": "{}"})
    ws = cube / "workspace"
    assert run_argv(runner_for(cube), "check") == [
        *head("check"), *U, "--entrypoint=./check_gpus.sh", *HOME,
        "--volume", f"{ws}:/mlcube_io0:ro", "--volume", f"{ws}/out:/mlcube_io1",
        "example/check:1", "--cfg=/mlcube_io0/cfg.yaml", "--report=/mlcube_io1/report.txt",
    ]


# -- GPUs ----------------------------------------------------------------------------------------
GPU_CUBE = """
name: g
platform: {accelerator_count: %d}
docker:
  image: example/g:1
  cpu_args: --shm-size=1g
  gpu_args: %s
tasks:
  t:
    parameters:
      outputs: {out: out/}
"""


def gpu_argv(tmp_path: Path, gpus: str | None, count: int = 0, gpu_args: str = "--ipc=host") -> list[str]:
    cube = make_cube(tmp_path / f"g{count}-{abs(hash((gpus, gpu_args)))}", GPU_CUBE % (count, gpu_args))
    argv = run_argv(runner_for(cube, options=RunOptions(gpus=gpus, allow_run_args=True)), "t")  # --ipc=host: beyond the allow-list
    i = argv.index("--volume")
    assert argv[:5] == head("t") and argv[i:] == ["--volume", f"{cube}/workspace/out:/mlcube_io0", "example/g:1", "t", "--out=/mlcube_io0"]
    return argv[5:i]


@pytest.mark.parametrize(
    ("gpus", "count", "middle"),
    [
        (None, 0, [*U, "--shm-size=1g", *HOME]),
        ("all", 0, [*U, "--ipc=host", "--gpus=all", *HOME]),
        ("2", 0, [*U, "--ipc=host", "--gpus=2", *HOME]),
        ("device=0,3", 0, [*U, "--ipc=host", '--gpus="device=0,3"', "-e", "CUDA_VISIBLE_DEVICES=0,1", *HOME]),
        ("device=GPU-aa11", 0, [*U, "--ipc=host", '--gpus="device=GPU-aa11"', "-e", "CUDA_VISIBLE_DEVICES=0", *HOME]),
        (None, 1, [*U, "--ipc=host", "--gpus=1", *HOME]),  # platform.accelerator_count
        ("0", 2, [*U, "--shm-size=1g", *HOME]),  # --gpus=0 beats accelerator_count: no GPU
        ("all", 2, [*U, "--ipc=host", "--gpus=all", *HOME]),  # --gpus beats accelerator_count
    ],
)
def test_gpu_forms(tmp_path: Path, gpus: str | None, count: int, middle: list[str]) -> None:
    assert gpu_argv(tmp_path, gpus, count) == middle


def test_gpu_args_with_gpus_flag_is_not_duplicated(tmp_path: Path) -> None:
    assert gpu_argv(tmp_path, None, 1, gpu_args="'--gpus=all --ipc=host'") == [*U, "--gpus=all", "--ipc=host", *HOME]


def test_gpus_key_in_the_config(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "g", GPU_CUBE % (0, "''"))
    argv = run_argv(runner_for(cube, "docker.--gpus=all"), "t")
    assert "--gpus=all" in argv


def test_invalid_gpus_is_a_usage_error(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "g", GPU_CUBE % (0, "''"))
    runner = runner_for(cube, options=RunOptions(gpus="foo"))
    with pytest.raises(Exception, match="invalid --gpus"):
        runner.run_steps(resolve_task(runner.cube, "t"))


# -- engines -------------------------------------------------------------------------------------
def test_sudo_docker(hello: Path) -> None:
    runner = runner_for(hello, "docker.docker=sudo docker")
    argv = run_argv(runner, "hello")
    assert argv[:12] == [*head("hello", ("sudo", "docker")), *U]
    assert [list(s.argv) for s in runner.configure_steps()] == [["sudo", "docker", "pull", "mlcommons/hello_world:0.0.1"]]


def test_podman_platform(hello: Path) -> None:
    ws = hello / "workspace"
    runner = runner_for(hello, platform="podman")
    assert run_argv(runner, "hello") == [
        *head("hello", ("podman",)), "--pull=never", *U, *HOME,
        "--volume", f"{ws}/names:/mlcube_io0:ro", "--volume", f"{ws}/chats:/mlcube_io1",
        "mlcommons/hello_world:0.0.1", "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]
    assert [list(s.argv) for s in runner.configure_steps()] == [["podman", "pull", "mlcommons/hello_world:0.0.1"]]


def test_docker_key_podman_with_options(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.docker=sudo -n podman"), "hello")
    assert argv[:14] == [*head("hello", ("sudo", "-n", "podman")), "--pull=never", *U]


# -- env_args, build_args, proxies -------------------------------------------------------------------
def test_env_args_dict_and_extra_env(hello: Path) -> None:
    runner = runner_for(hello, "docker.env_args.FOO=bar baz", "docker.env_args.N=3",
                        options=RunOptions(extra_env={"EXTRA": "1"}))
    argv = run_argv(runner, "hello")
    i = argv.index("--volume")
    assert argv[11:i] == ["-e", "FOO=bar baz", "-e", "N=3", "-e", "EXTRA=1", *HOME]


def test_env_args_string_passes_through(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.env_args=-e A=1 --env 'B=two words'"), "hello")
    i = argv.index("--volume")
    assert argv[11:i] == ["-e", "A=1", "--env", "B=two words", *HOME]


def test_secret_env_values_stay_out_of_argv(hello: Path) -> None:
    runner = runner_for(hello, "docker.env_args.API_TOKEN=s3cret")
    step = runner.run_steps(resolve_task(runner.cube, "hello"))[0]
    assert "s3cret" not in " ".join(step.argv)
    assert list(step.argv[11:13]) == ["-e", "API_TOKEN"]
    assert step.env == {"API_TOKEN": "s3cret"}
    # sudo resets the environment: then the value must be inline
    sudo = runner_for(hello, "docker.env_args.API_TOKEN=s3cret", "docker.docker=sudo docker")
    step = sudo.run_steps(resolve_task(sudo.cube, "hello"))[0]
    assert "API_TOKEN=s3cret" in step.argv and step.env == {}



def test_secret_env_uses_the_records_pattern(hello: Path) -> None:
    # MYSQL_PWD is secret for the records (redacted there): its value must not reach argv either
    runner = runner_for(hello, "docker.env_args.MYSQL_PWD=hunter2", "docker.env_args.DB_PASSWD=x2")
    step = runner.run_steps(resolve_task(runner.cube, "hello"))[0]
    assert "hunter2" not in " ".join(step.argv) and "x2" not in " ".join(step.argv)
    assert list(step.argv[11:15]) == ["-e", "MYSQL_PWD", "-e", "DB_PASSWD"]
    assert step.env == {"MYSQL_PWD": "hunter2", "DB_PASSWD": "x2"}
    assert "hunter2" not in step.display()


def test_one_secret_pattern_mysql_pwd(hello: Path) -> None:
    """Issue 13: the docker runner had its own secret pattern without PWD, so MYSQL_PWD's value went
    into argv (and the record's steps). One pattern (secretid.SECRET_NAME) is used everywhere."""
    from cuberun import records, secretid

    assert records.SECRET_NAME is secretid.SECRET_NAME
    runner = runner_for(hello, "docker.env_args.MYSQL_PWD=hunter2")
    step = runner.run_steps(resolve_task(runner.cube, "hello"))[0]
    assert "hunter2" not in " ".join(step.argv) and list(step.argv[11:13]) == ["-e", "MYSQL_PWD"]
    assert step.env == {"MYSQL_PWD": "hunter2"}
    assert "hunter2" not in step.display()  # the dry run
    assert step.to_json()["env"] == {"MYSQL_PWD": secretid.REDACTED}  # what --dry-run --json and the record show


def test_build_args_dict_and_string(hello: Path) -> None:
    digest = "0" * 64
    runner = runner_for(hello, "docker.build_strategy=auto", "docker.build_args.BASE_IMAGE=localhost/base:1", "docker.build_args.V=2")
    assert runner.build_argv(digest) == [
        "docker", "build", "--force-rm", "--build-arg", "BASE_IMAGE=localhost/base:1", "--build-arg", "V=2",
        "--label", f"{HASH_LABEL}={digest}", "-t", "mlcommons/hello_world:0.0.1", "-f", f"{hello}/Dockerfile", str(hello),
    ]
    runner = runner_for(hello, "docker.build_strategy=auto", "docker.build_args=--build-arg A=1 --no-cache", "docker.build_network=host")
    assert runner.build_argv(digest) == [
        "docker", "build", "--force-rm", "--network=host", "--build-arg", "A=1", "--no-cache",
        "--label", f"{HASH_LABEL}={digest}", "-t", "mlcommons/hello_world:0.0.1", "-f", f"{hello}/Dockerfile", str(hello),
    ]


def test_configure_steps_per_strategy(hello: Path, tmp_path: Path) -> None:
    auto = runner_for(hello, "docker.build_strategy=auto", "docker.build_args.BASE_IMAGE=b")
    digest = context_hash(hello, hello / "Dockerfile", {"BASE_IMAGE": "b"})
    assert [list(s.argv) for s in auto.configure_steps()] == [[
        "docker", "build", "--force-rm", "--build-arg", "BASE_IMAGE=b", "--label", f"{HASH_LABEL}={digest}",
        "-t", "mlcommons/hello_world:0.0.1", "-f", f"{hello}/Dockerfile", str(hello),
    ]]
    always = runner_for(hello, "docker.build_strategy=always", "docker.build_context=.", "docker.build_file=Dockerfile")
    assert always.configure_steps()[0].purpose == "build"
    # no recipe: auto pulls
    (hello / "Dockerfile").unlink()
    assert [list(s.argv) for s in runner_for(hello, "docker.build_strategy=auto").configure_steps()] == [
        ["docker", "pull", "mlcommons/hello_world:0.0.1"]
    ]
    # an image archive is loaded instead of pulled
    (hello / "image.tar").write_text("x")
    assert [list(s.argv) for s in runner_for(hello, "docker.tar_file=image.tar").configure_steps()] == [
        ["docker", "load", "--input", f"{hello}/image.tar"]
    ]


def test_proxies_reach_build_and_run(hello: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    runner = runner_for(hello, "docker.build_strategy=auto", "docker.env_args.http_proxy=http://mine:1")
    argv = run_argv(runner, "hello")
    i = argv.index("--volume")
    assert argv[11:i] == ["-e", "http_proxy=http://mine:1", "-e", "NO_PROXY=localhost", *HOME]  # env_args win, no duplicate
    build = runner.build_argv("0" * 64)
    assert build[3:7] == ["--build-arg", "http_proxy=http://proxy:3128", "--build-arg", "NO_PROXY=localhost"]
    # proxies do not change the image: the context hash ignores them
    with_proxy = runner.build_argv()
    monkeypatch.delenv("http_proxy")
    monkeypatch.delenv("NO_PROXY")
    without = runner_for(hello, "docker.build_strategy=auto").build_argv()
    assert without == with_proxy[:3] + with_proxy[7:]


# -- mounts, paths, users ---------------------------------------------------------------------------
def test_paths_with_spaces_and_quotes(tmp_path: Path) -> None:
    root = tmp_path / "my cube's \"dir\""
    cube = make_cube(root, HELLO, {"workspace/names/alice.txt": "Alice\n"})
    ws = root / "workspace"
    argv = run_argv(runner_for(cube), "hello", {"chat": "out dir/it's \"x\".txt"})
    assert argv[13:] == [
        "--volume", f"{ws}/names:/mlcube_io0:ro", "--volume", f"{ws}/out dir:/mlcube_io1",
        "mlcommons/hello_world:0.0.1", "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/it's \"x\".txt",
    ]


def test_a_colon_in_a_path_uses_mount(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "c", HELLO, {"workspace/a:b,c/alice.txt": "Alice\n"})
    ws = cube / "workspace"
    argv = run_argv(runner_for(cube), "hello", {"name": "a:b,c/alice.txt"})
    assert ["--mount", f'type=bind,"source={ws}/a:b,c",target=/mlcube_io0,readonly'] == argv[13:15]


def test_input_opts_rw(tmp_path: Path) -> None:
    text = HELLO.replace("{type: file, default: names/alice.txt}", "{type: file, default: names/alice.txt, opts: rw}")
    cube = make_cube(tmp_path / "c", text, {"workspace/names/alice.txt": "Alice\n"})
    assert f"{cube}/workspace/names:/mlcube_io0" in run_argv(runner_for(cube), "hello")


@pytest.mark.parametrize("how", ["option", "config"])
def test_mount_rw_for_inputs(hello: Path, how: str) -> None:
    runner = runner_for(hello, options=RunOptions(mount="rw")) if how == "option" else runner_for(hello, "docker.--mount_opts=rw")
    assert f"{hello}/workspace/names:/mlcube_io0" in run_argv(runner, "hello")


def test_mount_ro_option_beats_config(hello: Path) -> None:
    runner = runner_for(hello, "docker.--mount_opts=rw", options=RunOptions(mount="ro"))
    assert f"{hello}/workspace/names:/mlcube_io0:ro" in run_argv(runner, "hello")


def test_user_mapping_opt_out_and_user_given(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.run_as_user=false"), "hello")
    assert "-u" not in argv and "HOME=/tmp" not in argv
    argv = run_argv(runner_for(hello, "docker.cpu_args=-u 0:0 --ipc=host", options=RunOptions(allow_run_args=True)), "hello")
    assert argv[5:11] == [*POL, "-u", "0:0"] and argv[11] == "--ipc=host" and argv.count("-u") == 1
    with pytest.raises(UsageError, match="docker.cpu_args has '-u 0:0 --ipc=host', which the default policy does not allow"):
        run_argv(runner_for(hello, "docker.cpu_args=-u 0:0 --ipc=host"), "hello")
    argv = run_argv(runner_for(hello, "docker.extra_run_args=[--user=5:5]", options=RunOptions(allow_run_args=True)), "hello")
    assert "-u" not in argv and "--user=5:5" in argv


def test_root_gets_no_home_override(hello: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    argv = run_argv(runner_for(hello), "hello")
    assert argv[5:12] == ["-u", "0:0", *POL, "--volume"]


def test_no_rm_opt_out(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.remove=false"), "hello")
    assert argv[:4] == ["docker", "run", "--name=cuberun-hello-N", "--label=cuberun.run=1"]


def test_container_flags(hello: Path) -> None:
    opts = RunOptions(network="none", security="seccomp=unconfined", memory="4g", cpus="0-3")
    argv = run_argv(runner_for(hello, "docker.--network=host", options=opts), "hello")  # the CLI wins over the cube
    assert argv[5:14] == [*U, "--security-opt=seccomp=unconfined", "--memory=4g", "--cpuset-cpus=0-3"]
    with pytest.raises(UsageError, match="the cube sets the container network to 'host'"):
        run_argv(runner_for(hello, "docker.--network=host"), "hello")
    argv = run_argv(runner_for(hello, "docker.--network=host", "docker.--memory=1g", "docker.--cpuset-cpus=1",
                               options=RunOptions(allow_run_args=True)), "hello")
    assert argv[7:13] == ["--network=host", *POL[1:], "--memory=1g", "--cpuset-cpus=1"]
    argv = run_argv(runner_for(hello, "docker.network=none"), "hello")
    assert argv[7] == "--network=none"
    assert [a for a in run_argv(runner_for(hello), "hello") if a.startswith("--network")] == ["--network=none"]  # the default


def test_extra_run_args(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.extra_run_args=--init --shm-size=2g"), "hello")
    i = argv.index("--volume")
    assert argv[i - 2 : i] == ["--init", "--shm-size=2g"]


def test_cpu_args_mapping(hello: Path) -> None:
    argv = run_argv(runner_for(hello, "docker.cpu_args.shm-size=1g", "docker.cpu_args.--init=true"), "hello")
    assert argv[11:13] == ["--shm-size=1g", "--init"]


def test_a_task_name_with_odd_characters_makes_a_valid_container_name(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "c", """
        name: odd
        docker: {image: x/y:1}
        tasks:
          "étape 1/2": {}
    """)
    runner = runner_for(cube)
    argv = runner.run_steps(resolve_task(runner.cube, "étape 1/2"))[0].argv
    name = next(a for a in argv if a.startswith("--name="))[7:]
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name), name


# -- config errors -------------------------------------------------------------------------------------
def test_missing_image(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "c", "name: x\ndocker: {build_file: Dockerfile}\ntasks: {t: {}}\n")
    runner = runner_for(cube)
    with pytest.raises(SpecError) as info:
        runner.run_steps(resolve_task(runner.cube, "t"))
    line = info.value.lines()[0]
    assert line.endswith("docker.image is missing. Hint: add it, or choose another --platform")
    assert line.startswith(f"{cube}/mlcube.yaml:2:")


def test_unknown_key_has_did_you_mean_and_tar_file_is_accepted(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "c", "name: x\ndocker: {imagee: a/b:1}\ntasks: {t: {}}\n")
    with pytest.raises(SpecError, match="did you mean 'image'"):
        load_cube(cube)
    cube = make_cube(tmp_path / "d", "name: x\ndocker: {image: a/b:1, tar_file: x.tar}\ntasks: {t: {}}\n")
    runner_for(cube)


def test_bad_strategy_lists_the_choices(hello: Path) -> None:
    with pytest.raises(SpecError, match="'pull', 'auto', 'always'"):
        runner_for(hello, "docker.build_strategy=sometimes")


# -- the build context hash ------------------------------------------------------------------------------
def test_context_hash_follows_the_context(hello: Path) -> None:
    (hello / ".dockerignore").write_text("workspace/\n# comment\n*.log\n")
    (hello / "main.py").write_text("print(1)\n")
    recipe = hello / "Dockerfile"
    first = context_hash(hello, recipe, {})
    assert context_hash(hello, recipe, {}) == first
    (hello / "workspace" / "names" / "bob.txt").write_text("Bob\n")  # ignored dir
    (hello / "debug.log").write_text("x")  # ignored pattern
    assert context_hash(hello, recipe, {}) == first
    (hello / "main.py").write_text("print(2)\n")
    second = context_hash(hello, recipe, {})
    assert second != first
    (hello / "main.py").chmod(0o755)
    assert context_hash(hello, recipe, {}) != second
    assert context_hash(hello, recipe, {"BASE_IMAGE": "other"}) != context_hash(hello, recipe, {})
    recipe.write_text("FROM scratch\nCOPY main.py /\n")
    assert context_hash(hello, recipe, {}) not in (first, second)


def test_dockerignore_patterns(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("/workspace\n**/*.pyc\ndata/*\n!data/keep.txt\ndocs/**/draft?.md\n")
    rules = read_dockerignore(tmp_path)
    assert is_ignored("workspace", rules) and is_ignored("workspace/a/b", rules)
    assert is_ignored("x.pyc", rules) and is_ignored("a/b/x.pyc", rules)
    assert is_ignored("data/a.bin", rules) and not is_ignored("data/keep.txt", rules)
    assert is_ignored("docs/a/b/draft1.md", rules) and is_ignored("docs/draft2.md", rules) and not is_ignored("docs/final.md", rules)
    assert not is_ignored("main.py", rules) and not is_ignored("workspaces", rules)


# -- engine failures, with a fake engine ---------------------------------------------------------------------
def fake_engine(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "fake-docker"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_engine_not_installed(hello: Path, tmp_path: Path) -> None:
    runner = runner_for(hello, f"docker.docker={tmp_path}/nowhere/docker")
    assert runner.unavailable_reason() == (
        f"docker is not installed (no '{tmp_path}/nowhere/docker' on the PATH). Hint: install Docker or Podman, or use --platform=local"
    )


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?", "the fake-docker daemon is not running"),
        ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: dial unix",
         "permission denied on the fake-docker socket"),
    ],
)
def test_daemon_problems(hello: Path, tmp_path: Path, stderr: str, expected: str) -> None:
    exe = fake_engine(tmp_path, f"echo '{stderr}' >&2\nexit 1\n")
    reason = runner_for(hello, f"docker.docker={exe}").unavailable_reason()
    assert reason is not None and reason.startswith(expected) and "Hint:" in reason and "\n" not in reason
    with pytest.raises(RunnerUnavailable) as info:
        runner_for(hello, f"docker.docker={exe}").configure()
    assert info.value.exit_code == 125 and info.value.lines() == [reason]


def test_pull_failure_is_one_line_with_a_hint(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, """
        case "$1" in
          image) echo "Error: No such image: $5" >&2; exit 1;;
          pull) echo "Error response from daemon: Get \\"https://registry-1.docker.io/v2/\\": dial tcp: lookup registry-1.docker.io: no such host" >&2; exit 1;;
        esac
        exit 0
    """)
    runner = runner_for(hello, f"docker.docker={exe}")
    assert runner.unavailable_reason() is None
    with pytest.raises(BackendError) as info:
        runner.configure()
    assert info.value.exit_code == 125
    (line,) = info.value.lines()
    assert line.startswith("cannot pull image mlcommons/hello_world:0.0.1 (exit 1): Error response from daemon")
    assert "Hint: build it from" in line and "tag SOURCE mlcommons/hello_world:0.0.1" in line


def test_build_failure(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, """
        case "$1" in
          image) echo "Error: No such image" >&2; exit 1;;
          build) echo "Step 2/3 : RUN false"; echo "The command '/bin/sh -c false' returned a non-zero code: 1"; exit 1;;
        esac
    """)
    runner = runner_for(hello, f"docker.docker={exe}", "docker.build_strategy=auto")
    with pytest.raises(BackendError) as info:
        runner.configure()
    assert info.value.exit_code == 125
    assert "building image mlcommons/hello_world:0.0.1 failed with exit code 1: The command '/bin/sh -c false' returned" in info.value.lines()[0]


def test_auto_skips_the_build_when_the_label_matches(hello: Path, tmp_path: Path) -> None:
    digest = context_hash(hello, hello / "Dockerfile", {})
    exe = fake_engine(tmp_path, f"""
        case "$1" in
          image) echo 'sha256:abc {{"{HASH_LABEL}":"{digest}"}}'; exit 0;;
          build) echo built >> {tmp_path}/builds; exit 0;;
        esac
    """)
    runner_for(hello, f"docker.docker={exe}", "docker.build_strategy=auto").configure()
    assert not (tmp_path / "builds").exists()
    (hello / "new.py").write_text("x")
    runner_for(hello, f"docker.docker={exe}", "docker.build_strategy=auto").configure()
    assert (tmp_path / "builds").read_text() == "built\n"
    runner_for(hello, f"docker.docker={exe}", "docker.build_strategy=always").configure()
    assert (tmp_path / "builds").read_text() == "built\nbuilt\n"


def test_auto_uses_an_image_it_did_not_build(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, f"""
        case "$1" in
          image) echo 'sha256:abc null'; exit 0;;
          *) echo "$1" >> {tmp_path}/calls; exit 0;;
        esac
    """)
    runner_for(hello, f"docker.docker={exe}", "docker.build_strategy=auto").configure()
    assert not (tmp_path / "calls").exists()


def _run(runner: DockerRunner, tmp_path: Path) -> Any:
    runner.configure()
    return runner.run(runner.plan(resolve_task(runner.cube, "hello")), str(tmp_path / "log"))


def test_oom_kill_is_explained(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, """
        case "$1" in
          image) echo 'sha256:abc {}'; exit 0;;
          run) exit 137;;
        esac
    """)
    with pytest.raises(TaskFailed) as info:
        _run(runner_for(hello, f"docker.docker={exe}", options=RunOptions(memory="64m")), tmp_path)
    assert info.value.exit_code == 137
    assert info.value.lines() == [
        f"task 'hello' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory (now 64m), "
        f"or lower the task's memory use; the log is {tmp_path}/log"
    ]


def test_task_exit_code_passes_through(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, """
        case "$1" in
          image) echo 'sha256:abc {}'; exit 0;;
          run) echo "task says no"; exit 3;;
        esac
    """)
    outcome = _run(runner_for(hello, f"docker.docker={exe}"), tmp_path)
    assert outcome.exit_code == 3 and not outcome.interrupted
    assert (tmp_path / "log").read_text() == "task says no\n"


def test_engine_error_at_run_is_a_backend_error(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, f"""
        case "$1" in
          image) echo 'sha256:abc {{}}'; exit 0;;
          run) echo "docker: Error response from daemon: invalid mount config." >&2; exit 125;;
          rm) echo "$@" >> {tmp_path}/rm; echo "Error: No such container: $3" >&2; exit 1;;
        esac
    """)
    with pytest.raises(BackendError) as info:
        _run(runner_for(hello, f"docker.docker={exe}"), tmp_path)
    assert info.value.exit_code == 125
    assert "could not start the container for task 'hello': docker: Error response from daemon: invalid mount config" in info.value.lines()[0]
    assert (tmp_path / "rm").read_text().startswith("rm -f cuberun-hello-")  # a half-created container is removed


def test_fingerprint_is_stable_and_follows_the_image(hello: Path, tmp_path: Path) -> None:
    exe = fake_engine(tmp_path, f"""
        case "$1" in
          image) echo "$(cat {tmp_path}/id) {{}}"; exit 0;;
        esac
    """)
    (tmp_path / "id").write_text("sha256:one")
    first = runner_for(hello, f"docker.docker={exe}")
    fp = first.fingerprint(resolve_task(first.cube, "hello"))
    second = runner_for(hello, f"docker.docker={exe}")
    assert second.fingerprint(resolve_task(second.cube, "hello")) == fp  # the random container name is left out
    assert fp["image_id"] == "sha256:one" and "--name=cuberun-hello-*" in fp["command"][0]
    (tmp_path / "id").write_text("sha256:two")
    third = runner_for(hello, f"docker.docker={exe}")
    assert third.fingerprint(resolve_task(third.cube, "hello"))["image_id"] == "sha256:two"


def test_each_resolved_task_gets_its_own_container(hello: Path) -> None:
    """Parallel sweep variants of one task share a runner: their containers must not collide."""
    runner = runner_for(hello)
    a = resolve_task(runner.cube, "hello", {"chat": "a.txt"})
    b = resolve_task(runner.cube, "hello", {"chat": "b.txt"})
    plan_a, plan_b = runner.plan(a), runner.plan(b)
    name_a, name_b = plan_a.value("container"), plan_b.value("container")
    assert name_a != name_b and f"--name={name_a}" in plan_a.steps[0].argv and f"--name={name_b}" in plan_b.steps[0].argv


def test_a_client_killed_mid_run_ends_its_container_with_kill_then_rm(hello: Path, tmp_path: Path) -> None:
    """The engine client dies by SIGKILL while the task runs: the container is ended with `kill`
    (SIGKILL) before `rm -f`, never `rm -f` (or `stop`) alone, which gives a task ignoring SIGTERM
    Podman's 10 s grace. tests/faults/test_podman_faults.py checks it on the real Podman."""
    exe = fake_engine(tmp_path, f"""
        case "$1" in
          image) echo 'sha256:abc {{}}'; exit 0;;
          run) kill -9 $$;;
          kill|rm) echo "$@" >> {tmp_path}/calls; echo removed;;
        esac
    """)
    with pytest.raises(BackendError):
        _run(runner_for(hello, f"docker.docker={exe}"), tmp_path)
    calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    assert [call[:-1] for call in calls] == [["kill"], ["rm", "-f"]]
    assert len({call[-1] for call in calls}) == 1 and NAME.match(f"--name={calls[0][-1]}")
