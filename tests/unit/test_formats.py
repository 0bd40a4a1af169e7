"""`cuberun migrate --to=...` between mlcube.yaml and container_config.yaml (real CLI, subprocess)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from tests.conftest import CLI

DATA = Path(__file__).resolve().parents[1] / "data" / "medperf_config"

MLCUBE = """
name: hello
platform: {accelerator_count: 1, need_internet_access: false}
docker:
  image: example/hello:1
  build_strategy: auto
  env_args: {LANG: C.UTF-8}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat.txt}}
  bye:
    entrypoint: python3 /app/bye.py --polite
    parameters:
      inputs: {data: {type: directory, default: data/}}
      outputs: {out: out/}
"""


def _ok(proc: object) -> None:
    assert proc.returncode == 0, (proc.stdout, proc.stderr)  # type: ignore[attr-defined]


def test_round_trip(cli: CLI, tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.mkdir()
    (first / "mlcube.yaml").write_text(textwrap.dedent(MLCUBE))
    _ok(cli("migrate", str(first), "--to=container_config"))
    cc = yaml.safe_load((first / "container_config.yaml").read_text())
    assert cc["container_type"] == "DockerImage" and cc["image"] == "example/hello:1"
    assert cc["tasks"]["hello"]["run_args"] == {
        "command": ["hello", "--name=/mlcommons/volumes/name/name.txt", "--chat=/mlcommons/volumes/chat/chat.txt"],
        "environment": {"LANG": "C.UTF-8"}, "gpus": 1}
    assert cc["tasks"]["bye"]["run_args"]["entrypoint"] == "python3"
    # the docker command runs the same program with the same arguments
    first_dry = cli("run", f"--mlcube={first / 'mlcube.yaml'}", "--task=bye", "--platform=docker", "--dry-run", "--allow-missing-inputs")
    second_dry = cli("run", f"--mlcube={first / 'container_config.yaml'}", "--task=bye", "--platform=docker", "--dry-run", "--allow-missing-inputs")
    first_run, second_run = (next(ln for ln in p.stdout.splitlines() if ln.startswith("docker run")).split() for p in (first_dry, second_dry))
    assert first_run[-4:-2] == ["/app/bye.py", "--polite"] == second_run[-4:-2]
    assert second_run[-2:] == ["--data=/mlcommons/volumes/data", "--out=/mlcommons/volumes/out"]
    assert "# bye: policy: strict" in second_dry.stdout
    # back to mlcube.yaml and once more: the container_config.yaml comes out the same
    second = tmp_path / "b"
    second.mkdir()
    (second / "container_config.yaml").write_text((first / "container_config.yaml").read_text())
    _ok(cli("migrate", str(second), "--to=mlcube"))
    back = yaml.safe_load((second / "mlcube.yaml").read_text())
    assert back["tasks"]["bye"]["entrypoint"] == "python3 /app/bye.py --polite"
    assert back["platform"]["accelerator_count"] == 1 and back["docker"]["env_args"] == {"LANG": "C.UTF-8"}
    third = tmp_path / "c"
    third.mkdir()
    (third / "mlcube.yaml").write_text((second / "mlcube.yaml").read_text())
    _ok(cli("migrate", str(third), "--to=container_config"))
    assert yaml.safe_load((third / "container_config.yaml").read_text()) == cc


def test_what_cannot_be_expressed_is_one_error_and_nothing_written(cli: CLI, tmp_path: Path) -> None:
    cube = tmp_path / "prep"
    cube.mkdir()
    (cube / "container_config.yaml").write_text((DATA / "prep" / "container_config.yaml").read_text())
    proc = cli("migrate", str(cube), "--to=mlcube")
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "mlcube.yaml cannot express: task 'prepare': volume(s) code, data_path, labels_path" in line
    assert "environments that differ between tasks" in line
    assert not (cube / "mlcube.yaml").exists()

    (cube / "mlcube.yaml").write_text("name: x\ndocker: {image: a:1, cpu_args: --privileged}\ntasks: {t: {parameters: {inputs: {d: {default: d, opts: rw}}}}}\n")
    (cube / "container_config.yaml").unlink()
    proc = cli("migrate", str(cube), "--to=container_config")
    assert proc.returncode == 2
    assert "docker.cpu_args (container_config.yaml has no raw run arguments)" in proc.stderr
    assert "input 'd' has no type" in proc.stderr
    assert not (cube / "container_config.yaml").exists()


def test_existing_file_is_kept_without_force(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "mlcube.yaml").write_text(textwrap.dedent(MLCUBE))
    (tmp_path / "container_config.yaml").write_text("# mine\n")
    proc = cli("migrate", str(tmp_path / "mlcube.yaml"), "--to=container_config")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (tmp_path / "container_config.yaml").read_text() == "# mine\n"
