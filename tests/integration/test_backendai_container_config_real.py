"""MedPerf container_config.yaml cubes (DockerImage) on the REAL Backend.AI 26.9.6 cluster of
scripts/backends/backendai.sh, through the CLI, with the probe kernel image and the
backendai-test platform of test_backendai_real.py: the inputs travel to the cube's vfolder, the
session's startup command places each volume at its fixed mount path (a symbolic link into the
vfolder), runs the task's run_args (entrypoint, command, environment, `gpus` as `cuda.device`
slots of the mock accelerator, `shm_size` as the `shmem` resource option), and the outputs come
back to their host paths. An image archive is refused before anything is created.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import image_file_cube, run_records
from tests.faults.helpers import wait_until
from tests.integration import cubes
from tests.integration.test_backendai_real import Cluster, probe_cluster

pytestmark = pytest.mark.backendai

SCRIPT = """\
cp /mlcommons/volumes/raw_data/*.txt /mlcommons/volumes/data/ || exit 9
echo "$GREETING $(cat /mlcommons/volumes/parameters/parameters_file.yaml)" > /mlcommons/volumes/report/report.yaml || exit 8
echo "gpus=$BACKENDAI_MOCK_CUDA_DEVICE_COUNT"
python3 -c "import os; s = os.statvfs('/dev/shm'); print('shm=%d' % (s.f_blocks * s.f_frsize))"
"""


@pytest.fixture(scope="module")
def bai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with probe_cluster(tmp_path_factory.mktemp("backendai-cc"), "it-probe-cc") as cluster:
        yield cluster


def volumes_cube(bai: Cluster, dest: Path) -> Path:
    """A directory and a file input, a directory and a file output (the vfolder, cuberun-bai_cc, outlives the test)."""
    # the kernel image is <image>-backendai (cuberun export backendai)
    return cubes.volumes_cube(dest, "bai_cc", bai.image, {"entrypoint": "sh", "command": ["-c", SCRIPT], "environment": {"GREETING": "hello"},
                                                           "gpus": 1, "shm_size": "96mb"})


def test_volumes_at_their_mount_paths_and_outputs_back_on_the_host(bai: Cluster, tmp_path: Path) -> None:
    cube = volumes_cube(bai, tmp_path / "cube")
    ws = cube / "workspace"
    tag = uuid.uuid4().hex[:8]  # outputs of this run's own (the vfolder keeps earlier runs' files)
    out, report = f"out-{tag}", f"report-{tag}.yaml"
    proc = bai.cuberun("run", "--mlcube", str(cube), "--platform", "backendai-test", f"output_path={out}", f"report_file={report}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # (the kernel's log has the agent's services in it, whose colour codes may run into the task's lines)
    assert re.search(r"gpus=1$", proc.stdout, re.MULTILINE), proc.stdout  # run_args.gpus: one mock device
    assert re.search(rf"shm={96 << 20}$", proc.stdout, re.MULTILINE), proc.stdout  # shm_size: /dev/shm of 96 MiB (the default is 64)
    # the outputs, at their host paths: a directory volume and a file volume
    assert sorted(p.name for p in (ws / out).iterdir()) == ["a.txt", "b.txt"]
    assert (ws / out / "b.txt").read_text() == "beta\n"
    assert (ws / report).read_text() == "hello min_length: 2\n"
    assert sorted(p.name for p in (ws / "data_path").iterdir()) == ["a.txt", "b.txt"]  # the inputs are untouched
    # the record: the session that ran, under the policy of an mlcube.yaml cube on Backend.AI
    [record] = run_records(ws)
    assert record["status"] == "succeeded" and set(record["outputs"]) == {"output_path", "report_file"}
    assert [(r["name"], r["source"]) for r in record["policy"]["relaxations"]] == [("network", "runner"), ("writable-inputs", "runner")]
    assert "warning: task 'copy': Backend.AI cannot run a session without a network" in proc.stderr
    [create] = [s["argv"] for s in record["steps"] if s["purpose"] == "submit"]
    assert create[create.index("-r") + 1] == "cuda.device=1" and create[create.index("--resource-opts") + 1] == f"shmem={96 << 20}"
    assert "GREETING=hello" in create
    name = record["details"]["session"]

    def gone() -> bool:
        ps = bai.client("ps")
        return ps.returncode == 0 and name not in ps.stdout

    assert wait_until(gone, 120, 2.0), bai.client("ps").stdout  # a batch session ends with its task


def test_a_docker_archive_is_refused_before_anything_is_created(bai: Cluster, tmp_path: Path) -> None:
    cube = image_file_cube(tmp_path / "archived", "DockerArchive", "image.tar", "bai_cc_archive")
    proc = bai.cuberun("run", "--mlcube", str(cube), "--platform", "backendai-test")
    assert proc.returncode == 2, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "container_type DockerArchive: the backendai runner cannot load an image archive onto the agents" in line
    assert "-Prunner.image=" in line and "Traceback" not in proc.stderr and "created" not in proc.stderr
    assert "bai_cc_archive" not in bai.client("vfolder", "list").stdout  # not even the workspace's vfolder
