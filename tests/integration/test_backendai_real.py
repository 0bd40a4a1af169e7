"""The backendai runner against a REAL Backend.AI 26.9.6 cluster (scripts/backends/backendai.sh:
manager, agent with the mock CUDA accelerator, storage-proxy, PostgreSQL, Redis, etcd, all on
loopback), end to end as the seed's MLPerf-on-Backend.AI workflow does it:

1. the cube's image is built in the agent's Docker engine from the local base image;
2. `cuberun export backendai --build` relabels it as a kernel image;
3. it is pushed to the loopback registry (scripts/backends/registry.sh) and found by the
   manager's `image rescan` of that registry;
4. `cuberun run --platform=backendai-test` runs each task as a batch session, inputs and
   outputs moving through the cube's vfolder.

Checked: success with outputs back in the workspace, a failing task's exit code, a flaky task
retried in a second session (retries, retry.py), a task over its time limit and Ctrl-C
(the session is terminated, its container gone), GPU requests against the mock accelerator
(`cuda.device` slots with no GPU), and the manager killed during a session (a manager of the
test's own, started beside the cluster's and stopped by PID: the shared one is never touched).
Everything goes through the CLI with a settings file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, require_backend
from tests.conftest import run_records, server_ports
from tests.faults.helpers import Background, alive, children, cmdline, error_line, wait_until
from tests.integration import retries

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:6]
TIMEOUT = 900

pytestmark = pytest.mark.backendai

PROBE_PY = '''\
import json, os, shutil, sys, time
task = sys.argv[1]
opts = dict(a[2:].split("=", 1) for a in sys.argv[2:])
print("probe", task, flush=True)
if task == "copy":
    shutil.copytree(opts["data"], opts["out"], dirs_exist_ok=True)
    print("copied", len(os.listdir(opts["data"])), "files", flush=True)
elif task == "fail":
    print("failing on purpose", flush=True)
    sys.exit(3)
elif task == "sleep":
    print("started", flush=True)
    time.sleep(600)
elif task == "flaky":  # fails while the marker in its output folder (in the vfolder) is missing
    marker = os.path.join(opts["out"], "marker")
    done = os.path.exists(marker)
    with open(marker, "a") as fh:
        fh.write("x")
    print("attempt", open(marker).read().count("x"), flush=True)
    sys.exit(0 if done else 3)
elif task == "env":
    os.makedirs(os.path.dirname(opts["out"]), exist_ok=True)
    with open(opts["out"], "w") as fh:
        json.dump({k: v for k, v in os.environ.items() if "CUDA" in k or k.startswith("BACKENDAI_MOCK")}, fh)
'''

DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY probe.py /app/probe.py
WORKDIR /app
ENTRYPOINT ["python3", "/app/probe.py"]
"""

CUBE = """\
name: bai_probe
docker:
  image: {image}
tasks:
  copy:
    parameters:
      inputs: {{data: data/}}
      outputs: {{out: copied/}}
  fail:
    parameters: {{}}
  sleep:
    parameters: {{}}
  env:
    parameters:
      outputs: {{out: {{type: file, default: env/env.json}}}}
  flaky:
    retries: 2
    parameters:
      outputs: {{out: flaky/}}
"""


class Cluster:
    def __init__(self, details: dict[str, Any], env: dict[str, str], image: str) -> None:
        self.details = details
        self.env = env
        self.image = image

    def cuberun(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=self.env, capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False, cwd=cwd)

    def client(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.details["client"], *args], env=self.env, capture_output=True, text=True, timeout=300, check=False,
                              stdin=subprocess.DEVNULL)

    def kernels(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-q", "--filter", "label=ai.backend.kernel-id"], env=self.env, capture_output=True,
                             text=True, timeout=60, check=False).stdout
        return out.split()

    def cube(self, dest: Path) -> Path:
        dest.mkdir(parents=True)
        (dest / "mlcube.yaml").write_text(CUBE.format(image=self.image))
        data = dest / "workspace" / "data"
        data.mkdir(parents=True)
        (data / "a.txt").write_text("alpha\n")
        (data / "b.txt").write_text("beta\n")
        return dest


def sh(argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def bai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with probe_cluster(tmp_path_factory.mktemp("backendai")) as cluster:
        yield cluster


@contextmanager
def probe_cluster(root: Path, name: str = "it-probe") -> Iterator[Cluster]:
    """The cluster with the probe image built, exported as a kernel image, pushed and rescanned
    (removed from the agent's engine at the end); `root`: the test's folder for settings and builds,
    `name`: the image's, one per module (a rescan names only the images it has not seen before)."""
    details = require_backend("backendai")
    registry = require_backend("registry")["address"]
    base = str(details["base_image"])
    env = {**os.environ, **backend_env("backendai"), "DOCKER_HOST": details["docker_host"],
           "CUBERUN_SETTINGS": str(root / "settings.yaml"), "MLCUBE_SYSTEM_SETTINGS": str(root / "none.yaml"),
           "CUBERUN_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(REPO / "src")}
    (root / "settings.yaml").write_text(json.dumps({"platforms": {"backendai-test": {
        "runner": "backendai", "client": details["client"], "log_interval": 2,
    }}}))
    # 1. the cube image, in the agent's Docker engine (backendai.sh imported the base image there)
    build = root / "build"
    build.mkdir()
    (build / "probe.py").write_text(PROBE_PY)
    (build / "Dockerfile").write_text(DOCKERFILE)
    image = f"{registry}/cuberun/{name}-{SESSION}:0.1"
    sh(["docker", "build", "-q", "--network", "none", "--build-arg", f"BASE_IMAGE={base}", "-t", image, str(build)], env)
    cluster = Cluster(details, env, image)
    cube = cluster.cube(root / "export")
    # 2. relabelled as a kernel image, 3. pushed and rescanned
    sh([sys.executable, "-m", "cuberun", "export", "backendai", "--mlcube", str(cube), "--base-distro", "ubuntu22.04", "--build"], env)
    kernel = f"{image}-backendai"
    pushed = sh(["docker", "push", kernel], env)
    assert "digest: sha256:" in pushed
    rescan = sh([details["client"], "mgr", "image", "rescan", registry], env, cwd=Path(details["manager_dir"]))
    assert "errors:0" in rescan and f"{name}-{SESSION}" in rescan, rescan[-2000:]
    try:
        yield cluster
    finally:
        subprocess.run(["docker", "rmi", "-f", image, kernel], env=env, capture_output=True, timeout=120, check=False)


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


def run(bai: Cluster, cube: Path, task: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return bai.cuberun("run", "--mlcube", str(cube), "--task", task, "--platform", "backendai-test", *extra)


def test_batch_session_moves_inputs_and_outputs_through_the_vfolder(bai: Cluster, tmp_path: Path) -> None:
    cube = bai.cube(tmp_path / "probe")
    proc = run(bai, cube, "copy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = cube / "workspace" / "copied"
    assert (out / "a.txt").read_text() == "alpha\n" and (out / "b.txt").read_text() == "beta\n"
    assert "copied 2 files" in proc.stdout  # the session's log, fetched while it ran
    assert "uploading 1 input(s)" in proc.stderr and "downloaded 2 output file(s)" in proc.stderr
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded" and record["details"]["image"] == bai.image + "-backendai"
    assert "BACKEND_SECRET_KEY" not in json.dumps(record) and bai.details["secret_key"] not in json.dumps(record)
    # the run policy on a real session: the API has no network-less session, so the run says so and the record names it
    assert "warning: task 'copy': Backend.AI cannot run a session without a network" in proc.stderr
    assert "network" in [r["name"] for r in record["policy"]["relaxations"] if r["source"] == "runner"]


def test_failing_task_is_a_failure(bai: Cluster, tmp_path: Path) -> None:
    """Backend.AI 26.9.6 does not pass the task's exit code on (its session_failure event carries
    exitCode None, the kernel's status data -1): cuberun reports 1, and the task's own output."""
    cube = bai.cube(tmp_path / "probe")
    proc = run(bai, cube, "fail")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failing on purpose" in proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "failed" and record["exit_code"] == 1 and "outputs" not in record


def test_a_flaky_task_succeeds_in_its_second_session(bai: Cluster, tmp_path: Path) -> None:
    """`retries: 2`: the first session fails, cuberun creates a second one, which finds the marker the
    first left in the vfolder and succeeds. Backend.AI passes no exit code on (see above): attempt 1
    is recorded with 1. A time limit far from reached (`--timeout=600`) changes nothing. The output folder has a name of this test's own (the cube's vfolder
    outlives the test)."""
    cube = bai.cube(tmp_path / "probe")
    out = f"flaky-{uuid.uuid4().hex[:8]}"
    proc = run(bai, cube, "flaky", "--retry-delay=0", "--timeout=600", f"out={out}/")
    ws = cube / "workspace"
    record = retries.check_second_attempt(ws, proc, ws / out / "marker", first_exit=1)
    assert "does not apply" not in proc.stderr and "timed out" not in proc.stderr  # a limit that is not reached changes nothing
    sessions = [a["session"] for a in record["attempts"]]
    assert len(set(sessions)) == 2 and record["details"]["session"] == sessions[1], record  # a new session per attempt

    def ended() -> bool:
        ps = bai.client("ps")
        return ps.returncode == 0 and not any(name in ps.stdout for name in sessions)

    assert wait_until(ended, 120, 2.0), bai.client("ps").stdout  # neither session is left running


def test_gpu_request_gets_mock_cuda_devices(bai: Cluster, tmp_path: Path) -> None:
    cube = bai.cube(tmp_path / "probe")
    proc = run(bai, cube, "env", "--gpus=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads((cube / "workspace" / "env" / "env.json").read_text())
    assert seen.get("BACKENDAI_MOCK_CUDA_DEVICE_COUNT") == "2", seen  # two of the agent's four mock devices
    assert len(seen["BACKENDAI_MOCK_CUDA_DEVICES"].split(",")) == 2
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded"


def test_a_task_over_its_time_limit_is_stopped_and_its_session_terminated(bai: Cluster, tmp_path: Path) -> None:
    """`--timeout=5` on a task that sleeps 600 s: counted from the session's start (not its queue
    and image wait), cuberun terminates the session at the limit (the Ctrl-C path): exit 124, the
    record says `timed_out`, the error line names the session, and the session and its kernel are gone."""
    cube = bai.cube(tmp_path / "probe")
    proc = run(bai, cube, "sleep", "--timeout=5")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    name = proc.stderr.split("created batch session ", 1)[1].split()[0]
    assert f"terminated session(s) {name}" in proc.stderr
    line = error_line(proc.stderr)
    assert f"timed out after 5 s (--timeout) and was stopped: session {name} was terminated" in line, proc.stderr
    assert "does not apply" not in proc.stderr and "Traceback" not in proc.stderr
    [record] = records(cube / "workspace")
    assert (record["status"], record["exit_code"]) == ("failed", 124)
    assert record["details"]["timed_out"] is True and record["details"]["timeout"] == 5 and record["details"]["session"] == name
    assert record["limits"]["timeout"] == 5 and record["limits"]["timeout_source"] == "cli"

    def gone() -> bool:
        ps = bai.client("ps")
        return ps.returncode == 0 and name not in ps.stdout

    assert wait_until(gone, 120, 2.0), bai.client("ps").stdout
    assert wait_until(lambda: not bai.kernels(), 120, 2.0), bai.kernels()


def test_ctrl_c_terminates_the_session(bai: Cluster, tmp_path: Path) -> None:
    cube = bai.cube(tmp_path / "probe")
    bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "backendai-test"], bai.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 600, 1.0), bg.stdout + bg.stderr
        name = bg.stderr.split("created batch session ", 1)[1].split()[0]
        bg.signal(signal.SIGINT)
        assert bg.wait(180) == 130
    finally:
        bg.stop()
    assert "the session was terminated" in bg.stderr, bg.stderr
    [record] = records(cube / "workspace")
    assert record["status"] == "interrupted"

    def gone() -> bool:
        ps = bai.client("ps")
        return ps.returncode == 0 and name not in ps.stdout

    assert wait_until(gone, 120, 2.0), bai.client("ps").stdout
    assert wait_until(lambda: not bai.kernels(), 120, 2.0), bai.kernels()


class OwnManager:
    """A second Backend.AI manager on ports of its own, sharing the cluster's database, etcd, Redis
    and agent (managers are built to run side by side); the test kills it, never the cluster's."""

    def __init__(self, bai: Cluster, root: Path) -> None:
        manager_dir = Path(bai.details["manager_dir"])
        self.port, internal, termui, webui = server_ports(4)
        conf = (manager_dir / "manager.toml").read_text()
        swaps = {
            r'service-addr = \{host = "127.0.0.1", port = \d+\}': f'service-addr = {{host = "127.0.0.1", port = {self.port}}}',
            r'announce-addr = \{host = "127.0.0.1", port = \d+\}': f'announce-addr = {{host = "127.0.0.1", port = {self.port}}}',
            r'internal-addr = \{host = "127.0.0.1", port = \d+\}': f'internal-addr = {{host = "127.0.0.1", port = {internal}}}',
            r'announce-internal-addr = \{host = "127.0.0.1", port = \d+\}':
                f'announce-internal-addr = {{host = "127.0.0.1", port = {internal}}}',
            r'pid-file = "[^"]*"': f'pid-file = "{root / "manager.pid"}"',
            r'ipc-base-path = "[^"]*"': f'ipc-base-path = "{root / "ipc"}"',
            r"aiomonitor-termui-port = \d+": f"aiomonitor-termui-port = {termui}",
            r"aiomonitor-webui-port = \d+": f"aiomonitor-webui-port = {webui}",
        }
        for pattern, value in swaps.items():
            conf, count = re.subn(pattern, value, conf)
            assert count >= 1, f"manager.toml has no {pattern}"
        (root / "ipc").mkdir(parents=True)
        self.conf = root / "own-manager.toml"
        self.conf.write_text(conf)
        self.root = root
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = root / "own-manager.log"
        # its own folder (run/, the ZeroMQ keypair at the config's relative path): nothing of the cluster's manager is written
        shutil.copytree(manager_dir / "fixtures" / "manager", root / "fixtures" / "manager")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([bai.details["client"], "mgr", "start-server", "-f", str(self.conf)], cwd=root, env=bai.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def ours(self) -> list[int]:
        """The manager and its workers: descendants of the process this test started that still
        show a manager's name and run in this test's folder (the workers rename themselves)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children(pid))
            if alive(pid) and self.is_ours(pid):
                found.append(pid)
        return found

    def is_ours(self, pid: int) -> bool:
        try:
            where = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        line = cmdline(pid)
        return where == str(self.root) and ("backend.ai: manager" in line or str(self.conf) in line)

    def kill(self) -> None:
        """SIGKILL to the manager and its workers at once (found first, each checked again)."""
        pids = self.ours()
        for pid in pids:
            if self.is_ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(timeout=30)
        assert wait_until(lambda: not any(alive(p) for p in pids), 30), [(p, cmdline(p)) for p in pids if alive(p)]


def test_manager_killed_during_a_session(bai: Cluster, tmp_path: Path) -> None:
    """The manager dies while the batch session runs: cuberun gives up within bounded waits with
    one error line that names the session it could not remove, exits non-zero, records no
    success; the session (still running on the agent) is then removed through the cluster's
    own manager, and no kernel is left."""
    own = OwnManager(bai, tmp_path / "mgr")
    name = ""
    bg: Background | None = None
    try:
        assert wait_until(own.answers, 240, 1.0), own.log.read_text()[-3000:]
        env = {**bai.env, "BACKEND_ENDPOINT": own.endpoint}
        cube = bai.cube(tmp_path / "probe")
        bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "backendai-test"], env, tmp_path)
        assert wait_until(lambda: "started" in bg.stdout, 600, 1.0), bg.stdout + bg.stderr
        name = bg.stderr.split("created batch session ", 1)[1].split()[0]
        killed_at = time.monotonic()
        own.kill()
        code = bg.wait(600)
        took = time.monotonic() - killed_at
        line = error_line(bg.stderr)
        assert code == 125, bg.stderr
        assert "lost contact with the Backend.AI manager" in line and name in line, line
        assert f"could not terminate session(s) {name}" in bg.stderr  # named again, with the command to check
        [record] = records(cube / "workspace")
        assert record["status"] != "succeeded" and record["exit_code"] == 125
        assert took < 600
    finally:
        if bg is not None:
            bg.stop()
        own.kill()
        if name:
            bai.client("session", "rm", name)  # through the cluster's own manager

    def gone() -> bool:
        ps = bai.client("ps")
        return ps.returncode == 0 and name not in ps.stdout

    assert wait_until(gone, 180, 2.0), bai.client("ps").stdout
    assert wait_until(lambda: not bai.kernels(), 180, 2.0), bai.kernels()
