"""container_config.yaml cubes (MedPerf's format) on the real Docker and Podman engines of
scripts/backends/up.sh, through the CLI in a subprocess.

The data-preparation cube of tests/data/medperf_config/prep runs on the shared base image with
its scripts in a read-only `code` volume: directory and file volumes, the workspace layout,
`NAME=PATH` overrides, an output file created before its bind mount. A DockerArchive cube is
loaded from a `docker save` / `podman save` archive of a busybox image made here. Containers run
with `--network none`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, client_env, require_backend
from tests.conftest import run_records

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "medperf_config"
SESSION = uuid.uuid4().hex[:8]
TIMEOUT = 600


class Engine:
    def __init__(self, kind: str, base: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.base = base
        self.env = env
        self.images: list[str] = []

    def cli(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([self.kind, *args], env=self.env, input=input, capture_output=True, timeout=300, check=False)
        if check:
            assert proc.returncode == 0, f"{self.kind} {args}: {proc.stderr.decode(errors='replace')}"
        return proc

    def cuberun(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args, "--platform", self.kind], env=self.env, capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module", params=["docker", "podman"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    kind = str(request.param)
    details = require_backend(kind)
    tmp = tmp_path_factory.mktemp(f"cc-{kind}")
    env = client_env(kind)
    env.update(CUBERUN_SETTINGS=str(tmp / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp / "none.yaml"),
               CUBERUN_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    eng = Engine(kind, str(details["base_image"]), env)
    try:
        yield eng
    finally:
        for image in eng.images:
            eng.cli("rmi", "-f", image, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


def prep_cube(engine: Engine, dest: Path) -> Path:
    root = dest / "prep"
    shutil.copytree(DATA / "prep", root, ignore=shutil.ignore_patterns(".cuberun", "output_*", "statistics_file.yaml"))
    text = (root / "container_config.yaml").read_text()
    (root / "container_config.yaml").write_text(text.replace("image: localhost/cuberun-base:bookworm", f"image: {engine.base}"))
    return root


def test_prepare_then_statistics(engine: Engine, tmp_path: Path) -> None:
    cube = prep_cube(engine, tmp_path)
    ws = cube / "workspace"
    proc = ok(engine.cuberun("run", f"--mlcube={cube}", "--task=prepare,statistics", f"code={cube / 'project'}", "--network", "none"))
    assert "prepared 2 records" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (ws / "output_path").iterdir()) == ["a.clean.txt", "c.clean.txt"]
    assert (ws / "output_path" / "c.clean.txt").read_text() == "medperf style\n"
    assert (ws / "output_labels_path" / "a.txt").read_text() == "positive\n"
    assert (ws / "statistics_file.yaml").read_text() == "records: 2\ncharacters: 26\n"  # a file volume, bound as a file
    for path in (ws / "output_path" / "a.clean.txt", ws / "statistics_file.yaml"):
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())
    done = records(ws)
    assert [r["task"] for r in done] == ["prepare", "statistics"] and all(r["status"] == "succeeded" for r in done)
    base_id = engine.cli("image", "inspect", "--format", "{{.Id}}", engine.base).stdout.decode().strip()
    assert all(r["image"]["id"].removeprefix("sha256:") == base_id.removeprefix("sha256:") for r in done)
    assert all(isinstance(r["image"]["repo_digests"], list) for r in done)
    # nothing changed: both up to date
    again = ok(engine.cuberun("run", f"--mlcube={cube}", "--task=prepare,statistics", f"code={cube / 'project'}", "--network", "none"))
    assert len(records(ws)) == 2, again.stderr


def test_volume_paths_from_overrides(engine: Engine, tmp_path: Path) -> None:
    cube = prep_cube(engine, tmp_path)
    raw = tmp_path / "elsewhere" / "raw"
    raw.mkdir(parents=True)
    (raw / "z.txt").write_text("ZZZ\n")
    out = tmp_path / "elsewhere" / "prepared"
    ok(engine.cuberun("run", f"--mlcube={cube}", "--task=prepare", f"code={cube / 'project'}", f"data_path={raw}", f"output_path={out}",
                      "--network", "none"))
    assert [p.read_text() for p in out.iterdir()] == ["zzz\n"]
    assert not (cube / "workspace" / "output_path").exists()


def test_input_volumes_are_read_only(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "scribble"
    (root / "workspace" / "data_path").mkdir(parents=True)
    (root / "container_config.yaml").write_text(
        f"container_type: DockerImage\nimage: {engine.base}\ntasks:\n  scribble:\n"
        "    run_args: {command: [python3, -c, \"open('/mlcommons/volumes/data/x', 'w')\"]}\n"
        "    input_volumes: {data_path: {mount_path: /mlcommons/volumes/data, type: directory}}\n")
    proc = engine.cuberun("run", f"--mlcube={root}", "--network", "none")
    assert proc.returncode == 1, proc.stderr
    assert "Read-only file system" in proc.stdout + proc.stderr
    assert list((root / "workspace" / "data_path").iterdir()) == []


def test_docker_archive_is_loaded_by_image_id(engine: Engine, tmp_path: Path) -> None:
    tree = tmp_path / "image"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (tree / "bin" / "busybox").chmod(0o755)
    tag = f"localhost/cuberun-it-cc-{SESSION}/busybox:1"
    engine.images.append(tag)
    tar = subprocess.run(["tar", "-C", str(tree), "-c", "."], capture_output=True, check=True).stdout
    engine.cli("import", "-c", "ENV PATH=/bin", "-", tag, input=tar)
    image_id = engine.cli("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()
    cube = tmp_path / "archived"
    cube.mkdir()
    engine.cli("save", "-o", str(cube / "image.tar"), tag)
    engine.cli("rmi", "-f", tag)
    (cube / "container_config.yaml").write_text(
        "container_type: DockerArchive\nimage: image.tar\ntasks:\n  hello:\n"
        "    run_args: {command: [/bin/busybox, sh, -c, \"echo loaded > /out/hello.txt\"]}\n"
        "    output_volumes: {out: {mount_path: /out, type: directory}}\n")
    proc = ok(engine.cuberun("run", f"--mlcube={cube}", "--network", "none"))
    assert "load" in proc.stderr
    assert (cube / "workspace" / "out" / "hello.txt").read_text() == "loaded\n"
    assert engine.cli("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip().removeprefix("sha256:") == image_id.removeprefix("sha256:")
    record = records(cube / "workspace")[-1]
    assert f"sha256:{image_id.removeprefix('sha256:')}" in record["command"]
    assert record["image"]["id"] == f"sha256:{image_id.removeprefix('sha256:')}"  # the image that ran, by digest


def test_singularity_file_on_apptainer(tmp_path: Path) -> None:
    """A SingularityFile cube: the SIF (built here from a busybox docker-archive) runs as given."""
    details = require_backend("apptainer")
    env = client_env("apptainer")
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (tree / "bin" / "busybox").chmod(0o755)
    (tree / "bin" / "sh").symlink_to("busybox")
    cube = tmp_path / "sifcube"
    (cube / "workspace" / "data_path").mkdir(parents=True)
    (cube / "workspace" / "data_path" / "in.txt").write_text("from the host\n")
    tar = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
    build = subprocess.run([details["executable"], "build", str(cube / "image.sif"), f"docker-archive:{_archive(tmp_path, tar)}"],
                           env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert build.returncode == 0, build.stderr
    (cube / "container_config.yaml").write_text(
        "container_type: SingularityFile\nimage: image.sif\ntasks:\n  copy:\n"
        "    run_args:\n      command: [/bin/sh, -c, 'cat /in/in.txt > /out/copy.txt; echo $GREETING >> /out/copy.txt']\n"
        "      environment: {GREETING: hello}\n"
        "    input_volumes: {data_path: {mount_path: /in, type: directory}}\n"
        "    output_volumes: {out: {mount_path: /out, type: directory}}\n")
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {"singularity": {"runner": "singularity", "singularity": details["executable"]}}}))
    env.update(CUBERUN_SETTINGS=str(settings), MLCUBE_SYSTEM_SETTINGS=str(tmp_path / "none.yaml"), CUBERUN_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--network", "none"], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    ok(proc)
    assert (cube / "workspace" / "out" / "copy.txt").read_text() == "from the host\nhello\n"
    assert "build" not in proc.stderr  # the given SIF is used as is


def _archive(tmp_path: Path, rootfs_tar: Path) -> Path:
    """A minimal docker-archive (docker save layout) around one layer, written without an engine."""
    import hashlib
    import tarfile

    layer = rootfs_tar.read_bytes()
    diff_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": None, "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    out = tmp_path / "archive.tar"
    with tarfile.open(out, "w") as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer), (f"{config_id}.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    return out


def test_network_is_off_by_default_and_on_with_network(engine: Engine, tmp_path: Path) -> None:
    """The task connects to a server on the host's loopback: refused under the default policy
    (its own network namespace), reached with --network host (recorded as a relaxation)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshake; nothing needs to accept
        port = server.getsockname()[1]
        root = tmp_path / "net"
        root.mkdir()
        (root / "container_config.yaml").write_text(
            f"container_type: DockerImage\nimage: {engine.base}\ntasks:\n  connect:\n"
            f"    run_args: {{command: [python3, -c, \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10); print('reached')\"]}}\n")
        blocked = engine.cuberun("run", f"--mlcube={root}")
        assert blocked.returncode == 1 and "ConnectionRefusedError" in blocked.stdout + blocked.stderr
        first = records(root / "workspace")[-1]
        assert first["policy"]["strict"] is True and first["policy"]["network"] == "none"
        assert "--network=none" in first["command"] and "--cap-drop=ALL" in first["command"]
        allowed = ok(engine.cuberun("run", f"--mlcube={root}", "--network", "host"))
        assert "reached" in allowed.stdout + allowed.stderr
        second = records(root / "workspace")[-1]
        assert second["policy"]["relaxations"] == [{"name": "network", "detail": "--network=host", "source": "cli"}]


def test_no_capabilities_no_new_privileges_private_tmp(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "caps"
    root.mkdir()
    script = ("import os; s = open('/proc/self/status').read(); "
              "print([l for l in s.splitlines() if l.startswith(('CapEff', 'NoNewPrivs'))]); "
              "print('tmp', [l.split()[2] for l in open('/proc/self/mounts') if l.split()[1] == '/tmp'])")
    (root / "container_config.yaml").write_text(
        f"container_type: DockerImage\nimage: {engine.base}\ntasks:\n  caps:\n    run_args: {{command: [python3, -c, \"{script}\"]}}\n")
    out = ok(engine.cuberun("run", f"--mlcube={root}")).stdout
    assert "'CapEff:\\t0000000000000000'" in out and "'NoNewPrivs:\\t1'" in out
    assert "tmp ['tmpfs']" in out


def test_a_task_over_its_time_limit_is_stopped(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "slow"
    root.mkdir()
    (root / "container_config.yaml").write_text(
        f"container_type: DockerImage\nimage: {engine.base}\ntasks:\n  slow:\n"
        "    run_args: {command: [python3, -c, \"import time; print('started', flush=True); time.sleep(300)\"]}\n")
    proc = engine.cuberun("run", f"--mlcube={root}", "--timeout", "3")
    assert proc.returncode == 124, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "timed out after 3 s (--timeout)" in line
    record = records(root / "workspace")[-1]
    assert record["exit_code"] == 124 and record["status"] == "failed"
    assert "timed out" in json.dumps(record)
    name = next(a.split("=", 1)[1] for a in record["command"] if a.startswith("--name="))
    assert not engine.cli("ps", "-a", "-q", "--filter", f"name={name}").stdout.strip()


def test_prepare_then_statistics_on_charliecloud(tmp_path: Path) -> None:
    """The same cube on ch-run 0.31, converted from the Docker engine's image: directory volumes
    and a file volume (ch-run binds only onto what exists, so cuberun puts an empty file at the
    file volume's mount path in its converted image, and turns an empty directory there into it)."""
    require_backend("charliecloud")
    base = str(require_backend("docker")["base_image"])
    env = {**os.environ, **backend_env("charliecloud"), **backend_env("docker")}
    cache = Path(tempfile.mkdtemp(prefix="cuberun-cc-ch-", dir="/tmp"))
    env.update(CUBERUN_SETTINGS=str(tmp_path / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp_path / "none.yaml"),
               CUBERUN_CACHE_DIR=str(cache), PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    engine = Engine("docker", base, env)
    cube = prep_cube(engine, tmp_path)
    ws = cube / "workspace"
    argv = [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--task=prepare,statistics", f"code={cube / 'project'}",
            "--platform=charliecloud"]
    try:
        ok(subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False))
        assert sorted(p.name for p in (ws / "output_path").iterdir()) == ["a.clean.txt", "c.clean.txt"]
        assert (ws / "output_labels_path" / "a.txt").read_text() == "positive\n"
        assert (ws / "statistics_file.yaml").read_text() == "records: 2\ncharacters: 26\n"  # the file volume, bound as a file
        done = records(ws)
        assert [r["task"] for r in done] == ["prepare", "statistics"] and all(r["status"] == "succeeded" for r in done)
        [rootfs] = list((cache / "charliecloud").glob("*/rootfs"))
        mount_point = rootfs / "mlcommons" / "volumes" / "parameters" / "parameters_file.yaml"
        assert mount_point.is_file() and mount_point.stat().st_size == 0
        # an empty directory in its place (what cuberun made before) becomes the file again
        mount_point.unlink()
        mount_point.mkdir()
        ok(subprocess.run([*argv, "--force"], env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False))
        assert mount_point.is_file()
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(cache)], check=False, timeout=300)
