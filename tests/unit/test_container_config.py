"""container_config.yaml (MedPerf's format): validation errors with positions, the model it loads
into, the workspace layout and the docker command it turns into (golden)."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun.errors import SpecError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.docker import PROXY_VARS
from cuberun.spec.load import find_cube_file, load_cube

DATA = Path(__file__).resolve().parents[1] / "data" / "medperf_config"
NAME = re.compile(r"^--name=cuberun-(.+)-[0-9a-f]{8}$")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    yield


def write(tmp_path: Path, text: str, name: str = "container_config.yaml") -> Path:
    root = tmp_path / "cube"
    root.mkdir(exist_ok=True)
    (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_cube(write(tmp_path, text))
    return info.value.lines()


GOOD = """
container_type: DockerImage
image: example/prep:1.0
tasks:
  prepare:
    run_args:
      command: python3 /project/prepare.py --fast
      environment: {MODE: full, THREADS: 4}
      gpus: [0, 2]
      shm_size: 2gb
    input_volumes:
      data_path: {mount_path: /mlcommons/volumes/raw_data, type: directory}
      parameters_file: {mount_path: /mlcommons/volumes/parameters/parameters.yaml, type: file}
    output_volumes:
      output_path: {mount_path: /mlcommons/volumes/data, type: directory}
      report_file: {mount_path: /mlcommons/volumes/report/report.yaml, type: file}
"""


def test_loads_into_the_cube_model(tmp_path: Path) -> None:
    cube = load_cube(write(tmp_path, GOOD))
    assert cube.format == "container_config"
    assert cube.name == "cube"
    assert cube.config["docker"] == {"image": "example/prep:1.0"}
    task = cube.tasks["prepare"]
    assert task.run_args is not None
    assert task.run_args.command == ("python3", "/project/prepare.py", "--fast")
    assert dict(task.run_args.environment) == {"MODE": "full", "THREADS": "4"}
    assert task.run_args.gpus == "device=0,2"
    assert [(p.name, p.io, p.type, p.default, p.mount_path) for p in task.params] == [
        ("data_path", "input", "directory", "data_path", "/mlcommons/volumes/raw_data"),
        ("parameters_file", "input", "file", "parameters_file.yaml", "/mlcommons/volumes/parameters/parameters.yaml"),
        ("output_path", "output", "directory", "output_path", "/mlcommons/volumes/data"),
        ("report_file", "output", "file", "report_file.yaml", "/mlcommons/volumes/report/report.yaml"),
    ]


def test_docker_command_golden(tmp_path: Path) -> None:
    root = write(tmp_path, GOOD)
    (root / "workspace" / "data_path").mkdir(parents=True)
    (root / "workspace" / "parameters_file.yaml").write_text("a: 1\n")
    cube = load_cube(root)
    runner = make_runner(cube, None, RunOptions())
    assert runner.name == "docker"
    argv = [NAME.sub(r"--name=cuberun-\1-N", a) for a in runner.run_steps(resolve_task(cube, "prepare"))[0].argv]
    ws = root / "workspace"
    assert argv == [
        "docker", "run", "--rm", "--name=cuberun-prepare-N", "--label=cuberun.run=1", "-u", "1000:1000",
        "--network=none", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp:rw,exec,mode=1777",
        '--gpus="device=0,2"', "--shm-size=2gb",
        "-e", "MODE=full", "-e", "THREADS=4", "-e", "CUDA_VISIBLE_DEVICES=0,1", "-e", "HOME=/tmp",
        "--volume", f"{ws}/data_path:/mlcommons/volumes/raw_data:ro",
        "--volume", f"{ws}/parameters_file.yaml:/mlcommons/volumes/parameters/parameters.yaml:ro",
        "--volume", f"{ws}/output_path:/mlcommons/volumes/data",
        "--volume", f"{ws}/report_file.yaml:/mlcommons/volumes/report/report.yaml",
        "example/prep:1.0", "python3", "/project/prepare.py", "--fast",
    ]


def test_entrypoint_and_overrides(tmp_path: Path) -> None:
    root = write(tmp_path, """
        container_type: DockerImage
        image: example/infer:1
        tasks:
          infer:
            run_args: {entrypoint: /bin/infer, command: [--threads, 2]}
            input_volumes: {data_path: {mount_path: /in, type: directory}}
            output_volumes: {output_path: {mount_path: /out, type: directory}}
    """)
    data = tmp_path / "mydata"
    data.mkdir()
    cube = load_cube(root)
    rt = resolve_task(cube, "infer", {"data_path": str(data)})
    argv = make_runner(cube, "podman", RunOptions()).run_steps(rt)[0].argv
    assert argv[-3:] == ("example/infer:1", "--threads", "2")
    assert "--entrypoint=/bin/infer" in argv and "--pull=never" in argv
    assert f"{data}:/in:ro" in argv


def test_output_file_created_empty_before_the_mount(tmp_path: Path) -> None:
    root = write(tmp_path, GOOD)
    (root / "workspace" / "data_path").mkdir(parents=True)
    (root / "workspace" / "parameters_file.yaml").write_text("a: 1\n")
    rt = resolve_task(load_cube(root), "prepare")
    rt.prepare_outputs()
    report = root / "workspace" / "report_file.yaml"
    assert report.is_file() and report.stat().st_size == 0
    assert (root / "workspace" / "output_path").is_dir()
    report.write_text("kept\n")
    rt.prepare_outputs()
    assert report.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("container_type: DockerImg\nimage: x\ntasks: {t: {}}\n",
         "container_config.yaml:1:17: container_type: 'DockerImg' is not a container type; expected one of DockerImage, DockerArchive, "
         "EncryptedDockerArchive, SingularityFile, EncryptedSingularityFile. Hint: did you mean 'DockerImage'?"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    run_args: {comand: x}\n",
         "container_config.yaml:5:16: tasks.t.run_args.comand: 'comand' is not allowed in run_args (only command, entrypoint, environment, "
         "gpus, shm_size). Hint: did you mean 'command'?"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    input_volumes:\n      d: {mount_path: /in, type: dir}\n",
         "container_config.yaml:6:34: tasks.t.input_volumes.d.type: type 'dir' is not 'file' or 'directory'. Hint: did you mean 'directory'?"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    output_volumes:\n      d: {mount_path: out}\n",
         "container_config.yaml:6:7: tasks.t.output_volumes.d: volume 'd' has no 'type'. Hint: add 'type: file' or 'type: directory'"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    output_volumes:\n      d: {mount_path: out, type: file}\n",
         "container_config.yaml:6:23: tasks.t.output_volumes.d.mount_path: 'out' is not an absolute path. "
         "Hint: write an absolute path such as /mlcommons/volumes/data"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    run_args: {gpus: some}\n",
         "container_config.yaml:5:22: tasks.t.run_args.gpus: 'some' is not a GPU request. Hint: write a count (0 = none), 'all', or a list of device ids"),
        ("container_type: DockerImage\nimage: x\ntasks:\n  t:\n    run_args: {command: \"python 'x\"}\n",
         "container_config.yaml:5:25: tasks.t.run_args.command: cannot be split into arguments: No closing quotation. "
         "Hint: close the quote, or write the command as a list"),
        ("container_type: DockerImage\nimage: x\ntaks: {}\n",
         "container_config.yaml:3:1: taks: unknown top-level key 'taks'. Hint: did you mean 'tasks'?"),
    ],
)
def test_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    lines = errors(tmp_path, text)
    assert any(line.endswith(expected) for line in lines), lines
    assert all(line.startswith(str(tmp_path)) for line in lines)


def test_archive_is_read_for_its_image_id(tmp_path: Path) -> None:
    import io
    import json
    import tarfile

    root = write(tmp_path, "container_type: DockerArchive\nimage: image.tar\ntasks: {run: {}}\n")
    digest = "ab" * 32
    with tarfile.open(root / "image.tar", "w") as tar:
        data = json.dumps([{"Config": f"{digest}.json", "RepoTags": ["x:1"], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cube = load_cube(root)
    assert cube.config["docker"] == {"image": f"sha256:{digest}", "tar_file": str(root / "image.tar")}
    (root / "image.tar").write_bytes(b"not a tar")
    (line,) = errors(tmp_path, "container_type: DockerArchive\nimage: image.tar\ntasks: {run: {}}\n")
    assert "image.tar: cannot read the archive" in line


def test_singularity_file_runs_on_singularity(tmp_path: Path) -> None:
    root = write(tmp_path, "container_type: SingularityFile\nimage: img.sif\ntasks: {run: {run_args: {command: [echo, hi]}}}\n")
    (root / "img.sif").write_bytes(b"SIF")
    cube = load_cube(root)
    runner = make_runner(cube, None, RunOptions())
    assert runner.name == "singularity"
    argv = runner.run_steps(resolve_task(cube, "run"))[-1].argv
    assert str(root / "img.sif") in argv and argv[-2:] == ("echo", "hi")


def test_both_files_use_mlcube_yaml_and_say_so(tmp_path: Path) -> None:
    root = write(tmp_path, GOOD)
    (root / "mlcube.yaml").write_text("name: x\ndocker: {image: a/b:1}\ntasks: {t: {}}\n")
    assert find_cube_file(root) == root / "mlcube.yaml"
    cube = load_cube(root)
    assert any("holds both mlcube.yaml and container_config.yaml: using mlcube.yaml" in w.render() for w in cube.warnings)
    assert load_cube(root / "container_config.yaml").format == "container_config"
    (root / "mlcube.yaml").unlink()
    assert find_cube_file(root) == root / "container_config.yaml"


def test_shipped_example_loads() -> None:
    cube = load_cube(DATA / "prep")
    assert list(cube.tasks) == ["prepare", "statistics"]


def test_a_file_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path, GOOD)
    (root / "workspace" / "data_path").mkdir(parents=True)
    (root / "workspace" / "parameters_file.yaml").write_text("a: 1\n")
    (root / "workspace" / "report_file.yaml").mkdir()
    with pytest.raises(SpecError) as info:
        resolve_task(load_cube(root), "prepare")
    (line,) = info.value.lines()
    assert line.startswith("task 'prepare', output 'report_file': ") and "is not a regular file" in line
