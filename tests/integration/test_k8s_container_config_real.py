"""MedPerf container_config.yaml cubes (DockerImage) on the REAL Kubernetes v1.20.2 cluster of
scripts/backends/k8s.sh, through the CLI, with the k8s-test platform of test_k8s_real.py: the
workspace is a hostPath volume and each container_config volume is mounted from it through
`subPath` at its fixed mount path (inputs read-only, outputs writable, no workspace mount).
Images are the cluster node's own (imagePullPolicy Never): busybox, and the base image with python3.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import pytest

from tests.conftest import image_file_cube, run_records
from tests.integration import cubes
from tests.integration.test_k8s_real import Cluster, cluster_in, ok

REPO = Path(__file__).resolve().parents[2]
PREP = REPO / "tests" / "data" / "medperf_config" / "prep"

pytestmark = pytest.mark.k8s

SCRIPT = """\
cp /mlcommons/volumes/raw_data/*.txt /mlcommons/volumes/data/ || exit 9
echo "$GREETING $(cat /mlcommons/volumes/parameters/parameters_file.yaml)" > /mlcommons/volumes/report/report.yaml || exit 8
echo "uid=$(id -u)"
(echo x >> /mlcommons/volumes/raw_data/a.txt) 2>/dev/null && echo input-writable || echo input-read-only
(echo x > /mlcommons/volumes/raw_data/new.txt) 2>/dev/null && echo input-dir-writable || echo input-dir-read-only
(echo x >> /mlcommons/volumes/parameters/parameters_file.yaml) 2>/dev/null && echo param-writable || echo param-read-only
(echo x > /rootfile) 2>/dev/null && echo root-writable || echo root-read-only
test -e /mnt/mlcube && echo workspace-mounted || echo no-workspace-mount
echo "shm=$(grep ' /dev/shm ' /proc/mounts | cut -d' ' -f3)"
grep -E '^(NoNewPrivs|CapEff):' /proc/self/status
"""


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return cluster_in(tmp_path_factory.mktemp("k8s-cc"))


def name_of(dest: Path) -> str:
    return f"cc_{zlib.crc32(str(dest).encode()):08x}"


def volumes_cube(dest: Path) -> Path:
    """A busybox container_config.yaml cube: a directory and a file input, a directory and a file output."""
    return cubes.volumes_cube(dest, name_of(dest), "local/busybox:1.0",
                              {"entrypoint": "sh", "command": ["-c", SCRIPT], "environment": {"GREETING": "hello"}, "shm_size": "64mb"})


def run(k8s: Cluster, cube: Path, *extra: str) -> tuple[int, str, str]:
    proc = k8s.cuberun("run", "--mlcube", str(cube), "--platform", "k8s-test", *extra)
    return proc.returncode, proc.stdout, proc.stderr


def test_volumes_at_their_mount_paths_inputs_read_only_outputs_written(k8s: Cluster, tmp_path: Path) -> None:
    cube = volumes_cube(tmp_path / "cube")
    ws = cube / "workspace"
    proc = ok(k8s.cuberun("run", "--mlcube", str(cube), "--platform", "k8s-test"))
    seen = {line.strip() for line in proc.stdout.splitlines()}
    assert {f"uid={os.getuid()}", "input-read-only", "input-dir-read-only", "param-read-only", "root-read-only", "no-workspace-mount",
            "shm=tmpfs", "NoNewPrivs:\t1", "CapEff:\t0000000000000000"} <= seen, proc.stdout
    # the outputs: a directory volume and a file volume (created empty before the run, bound as a file)
    assert sorted(p.name for p in (ws / "output_path").iterdir()) == ["a.txt", "b.txt"]
    assert (ws / "output_path" / "b.txt").read_text() == "beta\n"
    assert (ws / "report_file.yaml").read_text() == "hello min_length: 2\n"
    # the inputs are untouched
    assert sorted(p.name for p in (ws / "data_path").iterdir()) == ["a.txt", "b.txt"]
    assert (ws / "data_path" / "a.txt").read_text() == "alpha\n" and (ws / "parameters_file.yaml").read_text() == "min_length: 2\n"
    # the record: the Job that ran, under the same policy as an mlcube.yaml cube
    [record] = run_records(ws)
    assert record["status"] == "succeeded" and set(record["outputs"]) == {"output_path", "report_file"}
    assert record["policy"]["network"] == "none"
    assert [r["name"] for r in record["policy"]["relaxations"]] == (["user"] if os.getuid() == 0 else [])
    netpol, job = (s["manifest"] for s in record["steps"])
    assert netpol["kind"] == "NetworkPolicy" and job["kind"] == "Job"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh"] and container["args"] == ["-c", SCRIPT]
    assert container["env"] == [{"name": "GREETING", "value": "hello"}]
    assert [(m["mountPath"], m.get("subPath"), m.get("readOnly", False)) for m in container["volumeMounts"]] == [
        ("/mlcommons/volumes/raw_data", "data_path", True), ("/mlcommons/volumes/parameters/parameters_file.yaml", "parameters_file.yaml", True),
        ("/mlcommons/volumes/data", "output_path", False), ("/mlcommons/volumes/report/report.yaml", "report_file.yaml", False),
        ("/tmp", None, False), ("/dev/shm", None, False)]
    assert job["spec"]["template"]["spec"]["volumes"][-1] == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
    assert f"created NetworkPolicy default/{job['metadata']['name']}" in proc.stderr
    k8s.assert_nothing_left(name_of(cube))
    # nothing changed: up to date
    again = ok(k8s.cuberun("run", "--mlcube", str(cube), "--platform", "k8s-test"))
    assert "skipping task 'copy'" in again.stderr and len(run_records(ws)) == 1


def test_medperf_prepare_then_statistics(k8s: Cluster, tmp_path: Path) -> None:
    """The data-preparation cube of test_container_config_real.py (python3 on the base image), its
    scripts in the workspace's `code` volume: an entrypoint with a command list, the environment,
    a file input and a file output."""
    cube = tmp_path / "prep"
    shutil.copytree(PREP, cube, ignore=shutil.ignore_patterns(".cuberun", "output_*", "statistics_file.yaml"))
    shutil.move(str(cube / "project"), str(cube / "workspace" / "code"))
    text = (cube / "container_config.yaml").read_text()
    (cube / "container_config.yaml").write_text(f"name: {name_of(cube)}\n"
                                                + text.replace("image: localhost/cuberun-base:bookworm", f"image: {k8s.details['base_image']}"))
    proc = ok(k8s.cuberun("run", "--mlcube", str(cube), "--platform", "k8s-test", "--task=prepare,statistics"))
    assert "prepared 2 records" in proc.stdout
    ws = cube / "workspace"
    assert sorted(p.name for p in (ws / "output_path").iterdir()) == ["a.clean.txt", "c.clean.txt"]
    assert (ws / "output_labels_path" / "a.txt").read_text() == "positive\n"
    assert (ws / "statistics_file.yaml").read_text() == "records: 2\ncharacters: 26\n"
    assert [(r["task"], r["status"]) for r in run_records(ws)] == [("prepare", "succeeded"), ("statistics", "succeeded")]
    k8s.assert_nothing_left(name_of(cube))


def test_a_docker_archive_is_refused_before_anything_is_created(k8s: Cluster, tmp_path: Path) -> None:
    cube = image_file_cube(tmp_path / "archived", "DockerArchive", "image.tar", name_of(tmp_path / "archived"))
    code, _, err = run(k8s, cube)
    assert code == 2, err
    [line] = [ln for ln in err.splitlines() if ln.startswith("cuberun: error:")]
    assert "container_type DockerArchive: the k8s runner cannot load an image archive" in line and "-Prunner.image=" in line
    assert "Traceback" not in err and "created" not in err
    assert k8s.cuberun_objects(name_of(cube)) == ([], []) and k8s.network_policies(name_of(cube)) == []
