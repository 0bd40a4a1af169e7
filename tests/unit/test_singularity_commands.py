"""Golden tests of the singularity runner's command lines (`configure_steps`, `run_steps`).

No Singularity or Apptainer binary can be installed on the project's machines, so these pin
the exact argv for every form, and drive configure/run against small fake executables
(`singularity`, `docker`) on a private PATH.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun.errors import BackendError, RunnerUnavailable, SpecError, UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.singularity import SingularityRunner, alnum, parse_version
from cuberun.spec.load import load_cube
from tests.conftest import CLI

FAKE_SINGULARITY = r"""#!/bin/sh
# records its argv (one per line, then a blank line) and plays singularity
{ for a in "$@"; do printf '%s\n' "$a"; done; echo; } >> "$FAKE_LOG"
case "$1" in
  --version) printf '%b\n' "$FAKE_VERSION"; exit 0 ;;
  build)
    prev=""; for a in "$@"; do sif="$prev"; prev="$a"; done
    if [ -n "$FAKE_BUILD_FAIL" ]; then echo partial > "$sif"; echo "FATAL:   While performing build: $FAKE_BUILD_FAIL" >&2; exit 255; fi
    echo SIF > "$sif"; echo "INFO:    Build complete: $sif"; exit 0 ;;
  run|exec)
    if [ -n "$FAKE_FATAL" ]; then echo "FATAL:   $FAKE_FATAL" >&2; exit 255; fi
    echo "task output"; exit "${FAKE_EXIT:-0}" ;;
esac
exit 1
"""

FAKE_DOCKER = r"""#!/bin/sh
# `image inspect ... IMAGE` succeeds for the images listed in $FAKE_DOCKER_IMAGES
if [ "$1" = image ] && [ "$2" = inspect ]; then
  for last; do :; done
  for img in $FAKE_DOCKER_IMAGES; do
    if [ "$img" = "$last" ]; then echo sha256:0123; exit 0; fi
  done
  echo "Error: No such image: $last" >&2; exit 1
fi
exit 1
"""

HELLO = """
name: hello_world
version: 0.0.1
docker:
  image: mlcommons/hello_world:0.0.1
singularity:
  image: hello_world-0.0.1.sif
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""

POL = ["--containall", "--cleanenv", "--net", "--network=none"]  # the run policy (policy.py)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Private settings, cache and PATH (holding only the fakes a test installs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    for var in ("FAKE_VERSION", "FAKE_BUILD_FAIL", "FAKE_FATAL", "FAKE_EXIT", "FAKE_DOCKER_IMAGES"):
        monkeypatch.delenv(var, raising=False)
    yield bin_dir


def install(bin_dir: Path, name: str, script: str) -> Path:
    path = bin_dir / name
    path.write_text(script)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_singularity(_isolated: Path) -> Path:
    install(_isolated, "apptainer", FAKE_SINGULARITY)
    return install(_isolated, "singularity", FAKE_SINGULARITY)


@pytest.fixture
def fake_docker(_isolated: Path) -> Path:
    return install(_isolated, "docker", FAKE_DOCKER)


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "fake.log"
    if not log.exists():
        return []
    return [block.split("\n") for block in log.read_text().split("\n\n") if block.strip()]


def make_cube(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text))
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def runner_for(cube_dir: Path, *params: str, platform: str = "singularity", options: RunOptions | None = None,
               workspace: Path | None = None) -> SingularityRunner:
    cube = load_cube(cube_dir, workspace=workspace, overrides=params)
    runner = make_runner(cube, platform, options or RunOptions(), params)
    assert isinstance(runner, SingularityRunner)
    return runner


def run_argv(runner: SingularityRunner, task: str) -> list[str]:
    steps = runner.run_steps(resolve_task(runner.cube, task))
    assert len(steps) == 1 and steps[0].purpose == "run" and steps[0].cwd is None
    return list(steps[0].argv)


def build_steps(runner: SingularityRunner) -> list[tuple[list[str], str | None]]:
    return [(list(s.argv), s.cwd) for s in runner.configure_steps() if s.purpose == "build"]


def default_dir(tmp_path: Path, cube: Path, name: str) -> Path:
    key = hashlib.sha256(str(cube).encode()).hexdigest()[:10]
    return tmp_path / "cache" / "singularity" / f"{name}-{key}"


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    return make_cube(tmp_path / "hello_world", HELLO, {"workspace/names/alice.txt": "Alice\n"})


# -- the reference's worked examples ----------------------------------------------------------------
def test_hello_world(hello: Path, tmp_path: Path) -> None:
    ws = hello / "workspace"
    runner = runner_for(hello)
    sif = default_dir(tmp_path, hello, "hello_world") / "hello_world-0.0.1.sif"
    assert runner.sif == sif
    assert run_argv(runner, "hello") == [
        "singularity", "run", *POL,
        "--bind", f"{ws}/names:/mlcube_io0:ro", "--bind", f"{ws}/chats:/mlcube_io1",
        str(sif), "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]
    # no SIF, no recipe: the docker fallback, keeping the name singularity.image (no rename)
    assert build_steps(runner) == [
        (["singularity", "build", "--fakeroot", str(sif), "docker://mlcommons/hello_world:0.0.1"], str(hello)),
    ]


def test_mnist_train(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "mnist", """
        name: mnist
        docker: {image: mlcommons/mnist:0.0.1}
        singularity: {image: mnist-0.0.1.sif}
        tasks:
          train:
            parameters:
              inputs: {data_dir: data/, train_config: train.yaml}
              outputs: {log_dir: logs/, model_dir: model/}
    """, {"workspace/data/x": "", "workspace/train.yaml": "{}"})
    ws = cube / "workspace"
    sif = default_dir(tmp_path, cube, "mnist") / "mnist-0.0.1.sif"
    assert run_argv(runner_for(cube), "train") == [
        "singularity", "run", *POL,
        "--bind", f"{ws}/data:/mlcube_io0:ro", "--bind", f"{ws}:/mlcube_io1:ro",
        "--bind", f"{ws}/logs:/mlcube_io2", "--bind", f"{ws}/model:/mlcube_io3",
        str(sif), "train",
        "--data_dir=/mlcube_io0", "--train_config=/mlcube_io1/train.yaml", "--log_dir=/mlcube_io2", "--model_dir=/mlcube_io3",
    ]


def test_getting_started_entrypoint_uses_exec_and_keeps_parameters(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "gs", """
        name: getting_started
        docker: {image: mlcommons/getting_started:0.0.1}
        singularity: {image: gs.sif}
        tasks:
          download_data:
            entrypoint: python 01_download_dataset.py
            parameters:
              inputs: {parameters_file: parameters.yaml}
              outputs: {data_dir: data/}
    """, {"workspace/parameters.yaml": "{}"})
    ws = cube / "workspace"
    sif = default_dir(tmp_path, cube, "getting_started") / "gs.sif"
    assert run_argv(runner_for(cube), "download_data") == [
        "singularity", "exec", *POL, "--bind", f"{ws}:/mlcube_io0:ro", "--bind", f"{ws}/data:/mlcube_io1",
        str(sif), "python", "01_download_dataset.py", "--parameters_file=/mlcube_io0/parameters.yaml", "--data_dir=/mlcube_io1",
    ]


def test_single_token_entrypoint_keeps_its_parameters(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "check", """
        name: check
        singularity: {image: /images/check.sif}
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
        "singularity", "exec", *POL, "--bind", f"{ws}:/mlcube_io0:ro", "--bind", f"{ws}/out:/mlcube_io1",
        "/images/check.sif", "./check_gpus.sh", "--cfg=/mlcube_io0/cfg.yaml", "--report=/mlcube_io1/report.txt",
    ]


def test_workdir_of_the_dockerfile_becomes_pwd(tmp_path: Path) -> None:
    """A relative entrypoint needs the image's WORKDIR (singularity starts in the host cwd)."""
    cube = make_cube(tmp_path / "gs", """
        name: gs
        docker: {image: example/gs:1}
        singularity: {image: gs.sif}
        tasks:
          t:
            entrypoint: python 01_download.py
            parameters: {outputs: {out: out/}}
    """, {"Dockerfile": "FROM python:3.11-slim\nWORKDIR /workspace\nCOPY . /workspace/\n"})
    argv = run_argv(runner_for(cube), "t")
    assert argv[:8] == ["singularity", "exec", *POL, "--pwd", "/workspace"]
    assert run_argv(runner_for(cube, "singularity.pwd=/opt/app"), "t")[:8] == ["singularity", "exec", *POL, "--pwd", "/opt/app"]
    # a SIF built from a recipe does not come from that Dockerfile: no --pwd
    (cube / "Singularity.recipe").write_text("Bootstrap: docker\nFrom: python:3.11-slim\n")
    assert "--pwd" not in run_argv(runner_for(cube), "t")


# -- GPUs -----------------------------------------------------------------------------------------
GPU_CUBE = """
name: g
platform: {accelerator_count: %d}
singularity: {image: g.sif, image_dir: /sif}
tasks:
  t:
    parameters:
      outputs: {out: out/}
"""


@pytest.mark.parametrize(
    ("gpus", "count", "middle"),
    [
        (None, 0, []),
        ("0", 0, []),  # the reference adds --nv even for --gpus=0
        ("", 0, []),
        ("all", 0, ["--nv"]),
        ("2", 0, ["--nv", "--env", "CUDA_VISIBLE_DEVICES=0,1"]),
        ("device=0,3", 0, ["--nv", "--env", "CUDA_VISIBLE_DEVICES=0,3"]),  # host indexes: no renumbering
        ("device=GPU-aa11,GPU-bb22", 0, ["--nv", "--env", "CUDA_VISIBLE_DEVICES=GPU-aa11,GPU-bb22"]),
        (None, 1, ["--nv", "--env", "CUDA_VISIBLE_DEVICES=0"]),  # platform.accelerator_count counts
        ("0", 2, []),  # --gpus=0 beats accelerator_count
        ("all", 2, ["--nv"]),
    ],
)
def test_gpu_forms(tmp_path: Path, gpus: str | None, count: int, middle: list[str]) -> None:
    cube = make_cube(tmp_path / "g", GPU_CUBE % count)
    argv = run_argv(runner_for(cube, options=RunOptions(gpus=gpus)), "t")
    assert argv == ["singularity", "run", *POL, *middle, "--bind", f"{cube}/workspace/out:/mlcube_io0", "/sif/g.sif", "t", "--out=/mlcube_io0"]


def test_nv_key_in_the_config(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "g", GPU_CUBE % 0)
    assert run_argv(runner_for(cube, "singularity.--nv=device=1"), "t")[6:9] == ["--nv", "--env", "CUDA_VISIBLE_DEVICES=1"]
    assert run_argv(runner_for(cube, "singularity.--nv=all"), "t")[6] == "--nv"


def test_old_singularity_gets_singularityenv_variables(tmp_path: Path, fake_singularity: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Singularity < 3.6 has no --env: the variable travels as SINGULARITYENV_<NAME>."""
    monkeypatch.setenv("FAKE_VERSION", "WARNING: something odd\\nsingularity version 3.5.3-1.1.el7\\n")
    cube = make_cube(tmp_path / "g", GPU_CUBE % 0)
    runner = runner_for(cube, options=RunOptions(gpus="device=2"))
    step = runner.run_steps(resolve_task(runner.cube, "t"))[0]
    assert list(step.argv[:7]) == ["singularity", "run", *POL, "--nv"] and "--env" not in step.argv
    assert dict(step.env) == {"SINGULARITYENV_CUDA_VISIBLE_DEVICES": "2"}
    # the probe runs once, and only because a variable had to be passed
    assert [c[0] for c in calls(tmp_path)] == ["--version"]
    runner.run_steps(resolve_task(runner.cube, "t"))
    assert len(calls(tmp_path)) == 1


def test_no_version_probe_when_nothing_needs_it(tmp_path: Path, fake_singularity: Path, hello: Path) -> None:
    runner_for(hello).run_steps(resolve_task(load_cube(hello), "hello"))
    assert calls(tmp_path) == []


# -- flags -----------------------------------------------------------------------------------------------
def test_container_flags_and_run_args(hello: Path, tmp_path: Path) -> None:
    options = RunOptions(network="none", security="seccomp:unconfined", memory="4G", cpus="2", extra_env={"FOO": "a b"})
    runner = runner_for(hello, "singularity.run_args=--contain --cleanenv", options=options)
    ws = hello / "workspace"
    assert run_argv(runner, "hello") == [
        "singularity", "run", "--containall", "--net", "--network=none", "--contain", "--cleanenv", "--security=seccomp:unconfined",
        "--vm-ram=4G", "--vm-cpu=2", "--env", "FOO=a b",
        "--bind", f"{ws}/names:/mlcube_io0:ro", "--bind", f"{ws}/chats:/mlcube_io1",
        str(runner.sif), "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]


def test_config_keys_set_the_flags(hello: Path) -> None:
    runner = runner_for(hello, "singularity.--network=host", "singularity.--vm-ram=2G", "singularity.env_args.A=1",
                        options=RunOptions(allow_run_args=True))  # a cube's network is beyond the run policy
    argv = run_argv(runner, "hello")
    assert argv[2:7] == ["--containall", "--cleanenv", "--vm-ram=2G", "--env", "A=1"]  # host: no network namespace
    runner = runner_for(hello, "singularity.--network=mynet", options=RunOptions(allow_run_args=True))
    assert run_argv(runner, "hello")[2:6] == ["--containall", "--cleanenv", "--net", "--network=mynet"]



def test_secret_values_travel_in_the_client_environment(hello: Path) -> None:
    runner = runner_for(hello, "singularity.env_args.A=1", "singularity.env_args.API_TOKEN=s3cret")
    step = runner.run_steps(resolve_task(runner.cube, "hello"))[0]
    assert "s3cret" not in " ".join(step.argv) and "s3cret" not in step.display()
    assert list(step.argv[6:8]) == ["--env", "A=1"] and "API_TOKEN" not in " ".join(step.argv)
    prefix = "APPTAINERENV_" if (runner.version() and runner.version().is_apptainer) else "SINGULARITYENV_"  # type: ignore[union-attr]
    assert step.env == {f"{prefix}API_TOKEN": "s3cret"}

def test_mount_rw_makes_inputs_writable(hello: Path) -> None:
    ws = hello / "workspace"
    argv = run_argv(runner_for(hello, options=RunOptions(mount="rw")), "hello")
    assert argv[6:10] == ["--bind", f"{ws}/names:/mlcube_io0", "--bind", f"{ws}/chats:/mlcube_io1"]
    argv = run_argv(runner_for(hello, "singularity.--mount_opts=rw"), "hello")
    assert argv[7] == f"{ws}/names:/mlcube_io0"


# -- executables ---------------------------------------------------------------------------------------
def test_apptainer_platform(hello: Path) -> None:
    runner = runner_for(hello, platform="apptainer")
    assert run_argv(runner, "hello")[:2] == ["apptainer", "run"]
    assert build_steps(runner)[0][0][:3] == ["apptainer", "build", "--fakeroot"]


def test_sudo_singularity(hello: Path) -> None:
    runner = runner_for(hello, "singularity.singularity=sudo singularity", "singularity.build_args=''")
    assert run_argv(runner, "hello")[:3] == ["sudo", "singularity", "run"]
    assert build_steps(runner)[0][0] == ["sudo", "singularity", "build", str(runner.sif), "docker://mlcommons/hello_world:0.0.1"]


def test_unavailable_reason(hello: Path, fake_singularity: Path) -> None:
    assert runner_for(hello).unavailable_reason() is None
    reason = runner_for(hello, "singularity.singularity=/nowhere/apptainer").unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert reason.startswith("apptainer is not installed (no '/nowhere/apptainer' on the PATH). Hint: install Apptainer")
    sudo = runner_for(hello, "singularity.singularity=sudo singularity").unavailable_reason()
    assert sudo is not None and sudo.startswith("sudo is not installed")


# -- image sources -------------------------------------------------------------------------------------
def test_build_file_docker_uri(hello: Path) -> None:
    runner = runner_for(hello, "singularity.build_file=docker://ghcr.io/acme/hello:2")
    assert build_steps(runner) == [(["singularity", "build", "--fakeroot", str(runner.sif), "docker://ghcr.io/acme/hello:2"], str(hello))]


def test_docker_daemon_when_the_engine_has_the_image(hello: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "mlcommons/hello_world:0.0.1 local/untagged")
    runner = runner_for(hello)
    assert build_steps(runner)[0][0][-1] == "docker-daemon:mlcommons/hello_world:0.0.1"
    # an untagged local image gets the explicit tag docker-daemon: needs
    untagged = runner_for(hello, "docker.image=local/untagged")
    assert build_steps(untagged)[0][0][-1] == "docker-daemon:local/untagged:latest"
    # not in the engine: docker://
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "")
    assert build_steps(runner_for(hello))[0][0][-1] == "docker://mlcommons/hello_world:0.0.1"


def test_docker_archive(hello: Path) -> None:
    (hello / "images").mkdir()
    (hello / "images" / "hello.tar").write_text("tar")
    runner = runner_for(hello, "singularity.build_file=docker-archive:images/hello.tar")
    assert build_steps(runner)[0][0][-1] == f"docker-archive:{hello}/images/hello.tar"
    # docker.tar_file (where the reference's docs put it) is the fallback's first choice
    runner = runner_for(hello, "docker.tar_file=images/hello.tar")
    assert build_steps(runner)[0][0][-1] == f"docker-archive:{hello}/images/hello.tar"


def test_recipe_build_and_currency(hello: Path, tmp_path: Path) -> None:
    recipe = hello / "Singularity.recipe"
    recipe.write_text("Bootstrap: docker\nFrom: python:3.11-slim\n")
    runner = runner_for(hello)
    sif = runner.sif
    assert build_steps(runner) == [(["singularity", "build", "--fakeroot", str(sif), str(recipe)], str(hello))]
    sif.parent.mkdir(parents=True)
    sif.write_text("SIF")
    assert runner_for(hello).configure_steps() == []  # current: newer than the recipe
    past = time.time() - 100
    os.utime(sif, (past, past))
    assert build_steps(runner_for(hello)) == [(["singularity", "build", "--fakeroot", "--force", str(sif), str(recipe)], str(hello))]


def test_custom_recipe_path_must_exist(hello: Path) -> None:
    (hello / "sing").mkdir()
    (hello / "sing" / "app.def").write_text("Bootstrap: docker\n")
    runner = runner_for(hello, "singularity.build_file=sing/app.def")
    assert build_steps(runner)[0][0][-1] == f"{hello}/sing/app.def"
    with pytest.raises(SpecError, match="recipe .*missing.def does not exist"):
        runner_for(hello, "singularity.build_file=missing.def").configure_steps()


def test_no_source_at_all(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "bare", """
        name: bare
        tasks: {t: {parameters: {outputs: {o: out/}}}}
    """)
    with pytest.raises(SpecError, match="no image source for singularity"):
        runner_for(cube).configure_steps()


def test_sif_name_without_singularity_image(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "c", """
        name: c
        docker: {image: "mlcommons/hello_world:0.0.1"}
        tasks: {t: {parameters: {outputs: {o: out/}}}}
    """)
    assert runner_for(cube).sif.name == "mlcommonshelloworld001.sif" == alnum("mlcommons/hello_world:0.0.1") + ".sif"


def test_image_dir_default_survives_a_workspace_move(hello: Path, tmp_path: Path) -> None:
    a = runner_for(hello, workspace=tmp_path / "ws-a")
    b = runner_for(hello, workspace=tmp_path / "ws-b")
    assert a.sif == b.sif and not str(a.sif).startswith(str(tmp_path / "ws-a"))
    ref = runner_for(hello, "singularity.image_dir=${runtime.workspace}/.image", workspace=tmp_path / "ws-a")
    assert ref.sif == tmp_path / "ws-a" / ".image" / "hello_world-0.0.1.sif"


# -- paths ----------------------------------------------------------------------------------------------
def test_paths_with_spaces_commas_and_colons(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "my cube", HELLO, {"workspace/names/alice.txt": "Alice\n"})
    ws = tmp_path / "my ws, v2"
    (ws / "names").mkdir(parents=True)
    (ws / "names" / "alice.txt").write_text("Alice\n")
    runner = runner_for(cube, "singularity.image_dir=sif dir", workspace=ws)
    assert run_argv(runner, "hello") == [
        "singularity", "run", *POL,
        "--mount", f'type=bind,"src={ws}/names",dst=/mlcube_io0,ro',
        "--mount", f'type=bind,"src={ws}/chats",dst=/mlcube_io1',
        f"{cube}/sif dir/hello_world-0.0.1.sif", "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]
    plain = runner_for(cube, workspace=tmp_path / "plain ws")
    (tmp_path / "plain ws" / "names").mkdir(parents=True)
    (tmp_path / "plain ws" / "names" / "alice.txt").write_text("A\n")
    assert run_argv(plain, "hello")[6:8] == ["--bind", f"{tmp_path}/plain ws/names:/mlcube_io0:ro"]


# -- versions ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "flavour", "numbers"),
    [
        ("singularity version 3.8.7-1.el8\n", "singularity", (3, 8, 7)),
        ("apptainer version 1.2.5\n", "apptainer", (1, 2, 5)),
        ("singularity-ce version 4.1.0-jammy\n", "singularity-ce", (4, 1, 0)),
        ("WARNING: /etc/singularity/singularity.conf is old\nsingularity version 3.5.3\nextra line\n", "singularity", (3, 5, 3)),
        ("3.7.4\n", "singularity", (3, 7, 4)),
        ("SingularityPRO version 3.9-4\n", "singularity", (3, 9, 0)),
    ],
)
def test_parse_version(text: str, flavour: str, numbers: tuple[int, int, int]) -> None:
    version = parse_version(text)
    assert version is not None and version.flavour.startswith(flavour) and version.numbers == numbers


def test_parse_version_gives_up_quietly() -> None:
    assert parse_version("") is None
    assert parse_version("no digits here\n") is None


# -- configure and run against a fake singularity -----------------------------------------------------
def test_configure_builds_once(hello: Path, tmp_path: Path, fake_singularity: Path) -> None:
    runner = runner_for(hello)
    runner.configure()
    assert runner.sif.read_text() == "SIF\n"
    assert calls(tmp_path) == [["build", "--fakeroot", str(runner.sif), "docker://mlcommons/hello_world:0.0.1"]]
    runner_for(hello).configure()  # current: nothing runs
    assert len(calls(tmp_path)) == 1


def test_failed_build_removes_the_partial_sif(hello: Path, fake_singularity: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BUILD_FAIL", "unauthorized: authentication required")
    runner = runner_for(hello)
    with pytest.raises(BackendError, match="failed with exit code 255: FATAL: +While performing build: unauthorized"):
        runner.configure()
    assert not runner.sif.exists()


def test_configure_without_the_executable(hello: Path) -> None:
    with pytest.raises(RunnerUnavailable, match="singularity is not installed"):
        runner_for(hello).configure()


def _run(runner: SingularityRunner, tmp_path: Path, task: str = "hello") -> int:
    rt = resolve_task(runner.cube, task)
    rt.prepare_outputs()
    return runner.run(runner.plan(rt), str(tmp_path / "task.log")).exit_code


def test_run_passes_the_exit_code_through(hello: Path, tmp_path: Path, fake_singularity: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = runner_for(hello)
    assert _run(runner, tmp_path) == 0
    last = calls(tmp_path)[-1]
    assert last[:5] == ["run", *POL] and last[5] == "--bind" and last[-1] == "--chat=/mlcube_io1/chat_with_alice.txt"
    assert "task output" in (tmp_path / "task.log").read_text()
    monkeypatch.setenv("FAKE_EXIT", "3")
    assert _run(runner, tmp_path) == 3


def test_run_reports_a_fatal_singularity_error(hello: Path, tmp_path: Path, fake_singularity: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = runner_for(hello)
    runner.configure()
    monkeypatch.setenv("FAKE_FATAL", "could not open image /x.sif: failed to retrieve path")
    with pytest.raises(BackendError, match="could not run task 'hello': could not open image /x.sif"):
        _run(runner, tmp_path)


def test_dry_run_through_the_cli(hello: Path, cli: CLI) -> None:
    proc = cli("run", "--mlcube", str(hello), "--platform", "apptainer", "--task", "hello", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"cd {hello} && apptainer build --fakeroot ")
    assert lines[0].endswith("/hello_world-0.0.1.sif docker://mlcommons/hello_world:0.0.1")
    assert lines[-2].startswith("apptainer run --containall --cleanenv --net --network=none --bind ") and lines[-1].startswith("# hello: policy: strict")
    lines = lines[:-1] and lines[-1].endswith(" hello --name=/mlcube_io0/alice.txt --chat=/mlcube_io1/chat_with_alice.txt")


def test_fingerprint_follows_the_sif(hello: Path) -> None:
    runner = runner_for(hello)
    rt = resolve_task(runner.cube, "hello")
    before = runner.fingerprint(rt)
    assert before["sif"] is None and before["command"] == [run_argv(runner, "hello")]
    runner.sif.parent.mkdir(parents=True)
    runner.sif.write_text("SIF")
    built = runner.fingerprint(rt)
    assert built["sif"] is not None and built == runner_for(hello).fingerprint(rt)
    os.utime(runner.sif, (1, 1))
    assert runner.fingerprint(rt) != built


def test_old_singularity_cannot_bind_paths_with_commas(tmp_path: Path, fake_singularity: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VERSION", "singularity version 3.7.4")
    cube = make_cube(tmp_path / "c", HELLO)
    ws = tmp_path / "data, v2"
    (ws / "names").mkdir(parents=True)
    (ws / "names" / "alice.txt").write_text("A\n")
    runner = runner_for(cube, workspace=ws)
    with pytest.raises(UsageError, match=r"singularity 3\.7\.4 cannot bind paths containing ',' or ':'"):
        runner.run_steps(resolve_task(runner.cube, "hello"))
    monkeypatch.setenv("FAKE_VERSION", "apptainer version 1.1.0")
    assert "--mount" in run_argv(runner_for(cube, workspace=ws, platform="apptainer"), "hello")
