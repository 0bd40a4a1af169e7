"""The Backend.AI session of a MedPerf container_config.yaml task (pure: no client, no manager):
the task's run_args (entrypoint, command, environment, gpus as `cuda.device`, shm_size as the
`shmem` resource option), each volume placed at its mount path by the startup command (a
symbolic link into the vfolder, where the inputs are unpacked and the outputs packed from), the
same run policy as mlcube.yaml cubes, and the image kinds it refuses. The startup command is
also run in /bin/sh with mount paths under the test's folder."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.backendai import BackendAIRunner
from cuberun.runners.backendai.plan import shm_bytes
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube
from tests.conftest import BATCH_TASKS, image_file_cube

# prepare's environment with a secret-looking name (its value is redacted wherever a command is shown)
CONFIG = BATCH_TASKS.replace("LEVEL: 3}", "LEVEL: 3, HF_TOKEN: s3cret}", 1) + """\
  in_ws:
    output_volumes:
      out: {mount_path: /mlcube_ws/out, type: directory}
  nested:
    input_volumes:
      data: {mount_path: /data, type: directory}
    output_volumes:
      out: {mount_path: /data/out, type: directory}
"""
assert "HF_TOKEN: s3cret" in CONFIG
FIXED = ["runner.workdir=/work", "runner.engine=/nonexistent/docker"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))


def make_cube(root: Path, text: str = CONFIG) -> Path:
    (root / "workspace" / "data_path").mkdir(parents=True)
    (root / "workspace" / "data_path" / "a.txt").write_text("alpha\n")
    (root / "workspace" / "parameters_file.yaml").write_text("min: 2\n")
    (root / "container_config.yaml").write_text(textwrap.dedent(text))
    return root


def runner_for(root: Path, *params: str, options: RunOptions | None = None) -> BackendAIRunner:
    params = (*FIXED, *params)
    cube = load_cube(root, overrides=params)
    runner = make_runner(cube, "backendai", options or RunOptions(), params)
    assert isinstance(runner, BackendAIRunner)
    runner.new_session_name = lambda _task: "cuberun-prepare-0000aaaa"  # type: ignore[method-assign]
    return runner


def plan_of(runner: BackendAIRunner, task: str, overrides: dict[str, str] | None = None) -> tuple[list[str], str]:
    plan = runner.session_plan(resolve_task(runner.cube, task, overrides or {}, check_inputs=False))
    return plan.create_argv, plan.startup


def test_golden_container_config_session(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text(json.dumps({"platforms": {"backendai": {"runner": "backendai", "env_args": {"LEVEL": 1, "FROM": "s"}}}}))
    runner = runner_for(make_cube(tmp_path / "prep"), options=RunOptions(extra_env={"LEVEL": "5"}))
    argv, startup = plan_of(runner, "prepare")
    place = ('cuberun_place() { mkdir -p -- "$(dirname -- "$2")" && { [ -L "$2" ] || [ ! -d "$2" ] || rmdir -- "$2"; } && '
             'ln -sfn -- "$1" "$2" || { echo "cuberun: cannot place the volume at $2 (a link to $1): the kernel user must be able '
             'to create it, and the image may have nothing there but an empty directory" >&2; exit 125; }; }')
    assert startup == (
        "cd /mlcube_ws || exit 125; "
        "if [ -f .cuberun-cuberun-prepare-0000aaaa-in.tar ]; then tar -xf .cuberun-cuberun-prepare-0000aaaa-in.tar || exit 125; "
        "rm -f .cuberun-cuberun-prepare-0000aaaa-in.tar; fi; "
        "mkdir -p -- output_path || exit 125; "
        "touch -- report_file.yaml || exit 125; "  # an output file exists (empty) before the task runs, as a bind-mounted one does
        f"{place}; "
        "cuberun_place /mlcube_ws/data_path /mlcommons/volumes/raw_data; "
        "cuberun_place /mlcube_ws/parameters_file.yaml /mlcommons/volumes/parameters/parameters_file.yaml; "
        "cuberun_place /mlcube_ws/output_path /mlcommons/volumes/data; "
        "cuberun_place /mlcube_ws/report_file.yaml /mlcommons/volumes/report/report.yaml; "
        "(cd /work && exec python3 -u /project/prepare.py --verbose); "  # run_args: entrypoint then command, no --name=path arguments
        "rc=$?; "
        'cd /mlcube_ws && set -- && for p in output_path report_file.yaml; do if [ -e "$p" ]; then set -- "$@" "$p"; fi; done; '
        'if [ $# -gt 0 ]; then tar -cf .cuberun-cuberun-prepare-0000aaaa-out.tar -- "$@"; fi; '
        "exit $rc"
    )
    assert argv == [
        "backend.ai", "session", "create", "registry.example/medperf/prep:1.0-backendai", "--type", "batch", "--enqueue-only",
        "-t", "cuberun-prepare-0000aaaa", "-c", startup, "-m", "cuberun-prep:/mlcube_ws",
        "-r", "cuda.device=1",  # run_args.gpus
        "--resource-opts", "shmem=2147483648",  # run_args.shm_size, in bytes
        # the settings' env_args, then the task's environment, then --env; secrets redacted where shown
        "-e", "LEVEL=5", "-e", "FROM=s", "-e", "PREP_SUFFIX=.clean", "-e", "HF_TOKEN=<redacted>",
    ]
    plan = runner.session_plan(resolve_task(runner.cube, "prepare", check_inputs=False))
    assert plan.inputs == ["data_path", "parameters_file.yaml"] and plan.outputs == ["output_path", "report_file.yaml"]
    assert "HF_TOKEN=s3cret" in plan.real_create_argv


def test_a_task_without_volumes_places_nothing_and_keeps_the_image_entrypoint(tmp_path: Path) -> None:
    runner = runner_for(make_cube(tmp_path / "prep"), "runner.entrypoint=python3 /app/main.py")
    argv, startup = plan_of(runner, "plain")
    assert "cuberun_place" not in startup and "touch" not in startup
    assert "(cd /work && exec python3 /app/main.py echo hi)" in startup
    assert "-r" not in argv and "--resource-opts" not in argv and "-e" not in argv


def test_the_startup_command_places_the_volumes_in_a_shell(tmp_path: Path) -> None:
    """The vfolder and the image's mount paths are folders of this test: the task reads its inputs
    and writes its outputs through the mount paths, the outputs land in the vfolder's archive."""
    vf, image = tmp_path / "vf", tmp_path / "image"
    script = (f"cat {image}/in/raw/a.txt > {image}/out/data/copy.txt && cat {image}/in/params.yaml >> {image}/report.yaml && "
              f"echo \"$GREETING\" >> {image}/report.yaml && ls {image}/out")
    text = json.dumps({"container_type": "DockerImage", "image": "x/y:1", "tasks": {"copy": {
        "run_args": {"entrypoint": "sh", "command": ["-c", script], "environment": {"GREETING": "hello"}},
        "input_volumes": {"data_path": {"mount_path": f"{image}/in/raw", "type": "directory"},
                          "parameters_file": {"mount_path": f"{image}/in/params.yaml", "type": "file"}},
        "output_volumes": {"output_path": {"mount_path": f"{image}/out/data", "type": "directory"},
                           "report_file": {"mount_path": f"{image}/report.yaml", "type": "file"}}}}})
    root = make_cube(tmp_path / "cube", text)
    runner = runner_for(root, f"runner.mount_point={vf}", f"runner.workdir={tmp_path}")
    plan = runner.session_plan(resolve_task(runner.cube, "copy"))
    shutil.copytree(root / "workspace", vf)  # what the inputs archive unpacks
    (image / "out" / "data").mkdir(parents=True)  # an empty directory of the image at a mount path gives way
    proc = subprocess.run(["/bin/sh", "-c", plan.startup], capture_output=True, text=True, timeout=60, check=False, env={"GREETING": "hello",
                          "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["data"]
    assert (image / "in" / "raw").resolve() == vf / "data_path" and (image / "report.yaml").is_symlink()
    with tarfile.open(vf / plan.out_tar) as tar:  # type: ignore[operator]
        files = {m.name: tar.extractfile(m).read().decode() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert files == {"output_path/copy.txt": "alpha\n", "report_file.yaml": "min: 2\nhello\n"}
    # something of the image at a mount path that is not an empty directory: the session ends with 125 and says why
    shutil.rmtree(image)
    (image / "out" / "data").mkdir(parents=True)
    (image / "out" / "data" / "keep").write_text("x")
    proc = subprocess.run(["/bin/sh", "-c", plan.startup], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 125
    assert f"cuberun: cannot place the volume at {image}/out/data (a link to {vf}/output_path)" in proc.stderr


def test_the_run_policy_is_the_mlcube_one(tmp_path: Path) -> None:
    runner = runner_for(make_cube(tmp_path / "prep"))
    rt = resolve_task(runner.cube, "prepare", check_inputs=False)
    assert [(r.name, r.source) for r in runner.policy(rt).relaxations] == [("network", "runner"), ("writable-inputs", "runner")]
    runner = runner_for(make_cube(tmp_path / "other"), options=RunOptions(network="project-net"))
    argv = runner._create_argv(resolve_task(runner.cube, "prepare", check_inputs=False), "s-2", "true", "s-1")[1]
    assert argv[-4:] == ["--network", "project-net", "--depends", "s-1"]  # a chained session keeps the policy's network


def test_gpus_from_the_command_line_win_and_forms_backendai_cannot_express_are_refused(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    argv, _ = plan_of(runner_for(cube, options=RunOptions(gpus="3")), "prepare")
    assert argv[argv.index("-r") + 1] == "cuda.device=3"
    assert "-r" not in plan_of(runner_for(cube, options=RunOptions(gpus="0")), "prepare")[0]
    for task, form in (("all_gpus", "'all'"), ("some_gpus", "'device=0,2'")):
        with pytest.raises(UsageError) as err:
            plan_of(runner_for(cube, "runner.entrypoint=run"), task)
        [line] = err.value.lines()
        assert f"tasks.{task}.run_args.gpus: {form} cannot be expressed on backendai" in line and "Hint: pass --gpus=N" in line
        argv, _ = plan_of(runner_for(cube, "runner.entrypoint=run", options=RunOptions(gpus="2")), task)
        assert argv[argv.index("-r") + 1] == "cuda.device=2"


def test_the_settings_resource_opts_win_over_shm_size(tmp_path: Path) -> None:
    argv, _ = plan_of(runner_for(make_cube(tmp_path / "prep"), "runner.resource_opts={shmem: 1g}"), "prepare")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--resource-opts"] == ["shmem=1g"]


@pytest.mark.parametrize("value, expected", [("2gb", 2 << 30), ("1.5g", 1536 << 20), ("64mb", 64 << 20), ("100", 100), ("0.5k", 512)])
def test_shm_bytes(value: str, expected: int) -> None:
    assert shm_bytes(value, "shm_size") == expected


@pytest.mark.parametrize("task, words, hint", [
    ("in_ws", "its mount path /mlcube_ws/out overlaps the vfolder's mount point /mlcube_ws in the session", "-Prunner.mount_point="),
    ("nested", "its mount path /data/out and /data are nested", "side by side"),
])
def test_mount_paths_a_link_cannot_express_are_refused(tmp_path: Path, task: str, words: str, hint: str) -> None:
    with pytest.raises(UsageError) as err:
        plan_of(runner_for(make_cube(tmp_path / "prep"), "runner.entrypoint=run"), task)
    [line] = err.value.lines()
    assert f"tasks.{task}, " in line and words in line and hint in line


def test_a_volume_outside_the_workspace_is_an_error(tmp_path: Path) -> None:
    runner = runner_for(make_cube(tmp_path / "prep"))
    with pytest.raises(UsageError, match="is outside the workspace"):
        plan_of(runner, "prepare", {"data_path": str(tmp_path / "elsewhere")})


def test_the_fingerprint_holds_the_volumes_and_is_stable(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    a, b = runner_for(cube), runner_for(cube)
    rt = resolve_task(a.cube, "prepare", check_inputs=False)
    fp = a.fingerprint(rt)
    assert fp == b.fingerprint(rt)
    assert fp["command"] == [["python3", "-u", "/project/prepare.py", "--verbose"]]
    assert ["/mlcube_ws/data_path", "/mlcommons/volumes/raw_data"] in fp["volumes"] and fp["resource_opts"] == ["shmem=2147483648"]
    assert "PREP_SUFFIX=.clean" in fp["env"] and fp["resources"] == ["cuda.device=1"]
    moved = resolve_task(a.cube, "prepare", {"output_path": "elsewhere"}, check_inputs=False)
    assert a.fingerprint(moved)["volumes"] != fp["volumes"]


@pytest.mark.parametrize("kind, file, words", [
    ("DockerArchive", "image.tar", "cannot load an image archive onto the agents"),
    ("SingularityFile", "image.sif", "cannot run a SIF file"),
])
def test_image_files_are_refused_in_one_line_unless_an_image_is_given(tmp_path: Path, kind: str, file: str, words: str) -> None:
    cube = image_file_cube(tmp_path / "cube", kind, file)
    with pytest.raises(UsageError) as err:
        plan_of(runner_for(cube, "runner.entrypoint=run"), "hello")
    [line] = err.value.lines()
    assert f"container_type {kind}: the backendai runner {words}" in line and "-Prunner.image=REGISTRY/NAME:TAG" in line
    argv, _ = plan_of(runner_for(cube, "runner.entrypoint=run", "runner.image=registry.example/hello:1"), "hello")
    assert argv[3] == "registry.example/hello:1"


def test_dry_run_cli(tmp_path: Path) -> None:
    import os

    cube = make_cube(tmp_path / "prep")
    env = {**os.environ, "CUBERUN_SETTINGS": str(tmp_path / "settings.yaml"), "MLCUBE_SYSTEM_SETTINGS": str(tmp_path / "none.yaml")}
    base = [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--platform=backendai", "--dry-run", *(f"-P{p}" for p in FIXED)]
    proc = subprocess.run([*base, "--task=prepare"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    create = shlex.split(next(line for line in proc.stdout.splitlines() if " session create " in line))
    assert "cuberun_place /mlcube_ws/data_path /mlcommons/volumes/raw_data" in create[create.index("-c") + 1]
    assert "PREP_SUFFIX=.clean" in create and "HF_TOKEN=<redacted>" in create and "s3cret" not in proc.stdout
    bad = subprocess.run([*base, "--task=all_gpus", "-Prunner.entrypoint=run"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2
    [line] = [ln for ln in bad.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "tasks.all_gpus.run_args.gpus: 'all' cannot be expressed on backendai" in line and "Traceback" not in bad.stderr
