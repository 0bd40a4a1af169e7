"""The docker commands cuberun builds for the re-created third-party cubes, compared argument by
argument with the reference implementation's (mlcube 0.0.9 with mlcube-docker, in its own venv:
benchmarks/setup_reference.sh).

The reference runs for real, with a fake `docker` first on its PATH that records each call (and
answers `inspect` with success, so that the reference neither builds nor pulls): its command is
captured without its run having to succeed. cuberun's is its `--dry-run --json` run step. The
documented differences (contract 5.4: `--rm`, a container name and label, the host uid:gid,
read-only input mounts) are taken out of cuberun's command first; everything else must be equal.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.checkout import copy_checkout_folder
from tests.conftest import CLI, REPO

DATA = REPO / "tests" / "data" / "thirdparty"
REF_VENV = Path(os.environ.get("CUBERUN_BENCH_DIR", "/tmp/cuberun-bench")) / "ref-venv"

# cube folder (holding mlcube.yaml) -> tasks, each with the overrides a user would give
CUBES: dict[str, dict[str, list[str]]] = {
    "hello_world": {"hello": [], "bye": []},
    "getting_started/mlcube": {"download_data": [], "preprocess_data": [], "train": []},
    "mnist_fl": {"download": [], "train": [], "evaluate": []},
    "fets_model/mlcube": {"infer": []},
    "fets_preprocessing/mlcube": {"prepare": [], "sanity_check": [], "statistics": []},
    "medperf_hello_world/data_preparator/mlcube": {"prepare": [], "sanity_check": [], "statistics": []},
    "medperf_hello_world/model/mlcube": {"infer": []},
    "medperf_hello_world/evaluator/mlcube": {"evaluate": []},
    "chestxray_tutorial/data_preparator/mlcube": {"prepare": [], "sanity_check": [], "statistics": []},
    "chestxray_tutorial/metrics/mlcube": {"evaluate": []},
}

# what the earlier tasks (or the user) would have produced: the reference types untyped inputs by
# what exists, and refuses the ones that do not exist
PRODUCED = {
    "getting_started/mlcube": ["data/raw_dataset.txt", "data/processed_dataset.csv"],
    "medperf_hello_world/evaluator/mlcube": ["predictions/"],
    "chestxray_tutorial/metrics/mlcube": ["predictions/", "labels/"],
}

FAKE_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(0)
"""


@pytest.fixture(scope="module")
def reference() -> Path:
    mlcube = REF_VENV / "bin" / "mlcube"
    if not mlcube.is_file():
        skip_or_fail(f"the reference implementation is not installed at {REF_VENV}: run `bash benchmarks/setup_reference.sh`")
    return mlcube


def reference_run_argv(mlcube: Path, cube: Path, task: str, overrides: list[str], tmp: Path) -> list[str]:
    fake_dir = tmp / "fake-bin"
    fake_dir.mkdir(exist_ok=True)
    fake = fake_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp / f"docker-{task}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBERUN")}
    env.update(PATH=f"{fake_dir}{os.pathsep}{env.get('PATH', '')}", FAKE_DOCKER_LOG=str(log), MLCUBE_SYSTEM_SETTINGS=str(tmp / "ref-settings.yaml"))
    proc = subprocess.run([str(mlcube), "run", f"--mlcube={cube}", "--platform=docker", f"--task={task}", *overrides],
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    runs = [c for c in calls if c[:1] == ["run"]]
    assert len(runs) == 1, f"reference exit {proc.returncode}, docker calls {calls}\n{proc.stdout}\n{proc.stderr}"
    return ["docker", *runs[0]]


POLICY_FLAGS = ("--name=", "--label=", "--network=none", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp:")


def comparable(argv: list[str]) -> list[str]:
    """cuberun's docker run argv without its documented additions (contract 5.4), which all come
    before the image: --rm, --name, --label, -u UID:GID, the :ro of input mounts, and the strict run
    policy's flags (README "The run policy": no network, no capabilities, no privilege gain, a private /tmp)."""
    out = argv[:2]
    i = 2
    while i < len(argv) and argv[i].startswith("-"):
        tok = argv[i]
        if tok in ("-u", "--volume", "-v", "-e", "--entrypoint"):
            value = argv[i + 1]
            if tok != "-u":
                out += [tok, value[:-3] if tok == "--volume" and value.endswith(":ro") else value]
            i += 2
            continue
        if tok != "--rm" and not tok.startswith(POLICY_FLAGS):
            out.append(tok)
        i += 1
    return out + argv[i:]


@pytest.mark.parametrize(("cube_dir", "task"), [(c, t) for c, tasks in CUBES.items() for t in tasks])
def test_docker_command_matches_the_reference(reference: Path, cli: CLI, tmp_path: Path, cube_dir: str, task: str) -> None:
    top = cube_dir.split("/")[0]
    copy_checkout_folder(DATA / top, tmp_path / top)  # as a clean clone has it: no empty folders
    cube = tmp_path / cube_dir
    for rel in PRODUCED.get(cube_dir, []):
        path = cube / "workspace" / rel
        path.mkdir(parents=True, exist_ok=True) if rel.endswith("/") else (path.parent.mkdir(parents=True, exist_ok=True), path.write_text(""))
    overrides = CUBES[cube_dir][task]
    ref = reference_run_argv(reference, cube, task, overrides, tmp_path)
    proc = cli("run", f"--mlcube={cube}", "--platform=docker", f"--task={task}", "--no-deps", "--dry-run", "--json", *overrides)
    assert proc.returncode == 0, proc.stderr
    [run] = [s["argv"] for s in json.loads(proc.stdout)["steps"] if s["purpose"] == "run"]
    assert comparable(run) == ref, f"\ncuberun:   {shlex.join(run)}\nreference: {shlex.join(ref)}"
