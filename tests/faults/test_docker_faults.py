"""Faults on the docker runner against the real engine of scripts/backends/docker.sh.

The task crashes, is SIGKILLed, is OOM-killed under `--memory=64m`, is interrupted (SIGINT and
SIGTERM to cuberun), fills a small tmpfs workspace; the workspace is full before the run; and
the daemon dies mid-run. For that last one the test starts a SECOND dockerd of its own (own
socket, data root, exec root and pid file under /tmp, no bridge network), loads the base image
into it with `docker save` / `docker load` through a file, runs the task there and stops that
daemon with SIGTERM (its recorded PID, command line checked). The shared daemon is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import backend_env, require_backend, skip_or_fail
from tests.faults import helpers as h
from tests.faults.containers import Engine, container_names, processes_in_cgroup

pytestmark = pytest.mark.docker

GRACE = {"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}


@pytest.fixture
def docker(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Engine]:
    details = require_backend("docker")
    env = {**cli_env, **backend_env("docker"), **GRACE}
    engine = Engine("docker", str(details["base_image"]), env, tmp_path)
    yield engine
    engine.cleanup(tmp_path / "faults" / "workspace", [])


@pytest.fixture
def cube(docker: Engine, tmp_path: Path) -> Path:
    return h.fault_cube(tmp_path, docker.sections())


def test_task_crash_after_a_successful_run(docker: Engine, cube: Path) -> None:
    line, record, _ = h.crash_after_success(docker, cube)
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 3 (run {record['run_id']}; log ")
    assert container_names(cube / "workspace"), "no record names its container"


def test_task_killed_by_sigkill_after_a_successful_run(docker: Engine, cube: Path) -> None:
    # SIGKILL to the container's task from the host (in the container it is PID 1, which cannot
    # kill itself). `docker run` exits 137; with the container gone (--rm) the runner cannot tell
    # this from an OOM kill, and says "possibly"
    line, record, _ = h.killed_from_outside_after_success(docker, cube, lambda _: docker.task_pid(cube / "workspace"), status=("error", "failed"))
    assert line.startswith("cuberun: error: task 'work' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory, ")
    assert "possibly out of memory" in (record.get("error") or record.get("reason") or "")


def test_oom_kill_under_a_memory_limit(docker: Engine, cube: Path) -> None:
    line, record, _ = h.killed_after_success(docker, cube, "--memory=64m", mode="hog 400", status=("error", "failed"))
    assert line.startswith("cuberun: error: task 'work' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory (now 64m)")
    assert "--memory=64m" in record["command"]
    assert "possibly out of memory" in (record.get("error") or record.get("reason") or "")


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_removes_the_container(docker: Engine, cube: Path, sig: int, name: str) -> None:
    ws = cube / "workspace"
    line, record, gone = h.interrupted_after_success(docker, cube, sig, ready=lambda _: docker.remember_running(ws))
    assert line.startswith(f"cuberun: error: task 'work' was interrupted (run {record['run_id']}; log ")
    assert docker.ids, "the running container was not seen"
    print(f"docker {name}: exit {128 + sig}, container gone {gone:.2f} s after the signal")


@pytest.mark.slow
def test_disk_fills_during_the_task(docker: Engine, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        line, _ = h.disk_fills_during_the_task(docker, cube, ws)
        docker.assert_nothing_left(ws)
    assert line.startswith("cuberun: error: task 'work' failed with exit code 28 (run ")


def test_workspace_full_before_the_run(docker: Engine, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        h.workspace_full_before_the_run(docker, cube, ws)


# -- the daemon dies mid-run ------------------------------------------------------------------------------
class PrivateDockerd:
    """A dockerd of this test only, side by side with the shared one, under a short /tmp path."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="crfd-", dir="/tmp"))
        self.sock = self.dir / "d.sock"
        self.host = f"unix://{self.sock}"
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return dict(base, DOCKER_HOST=self.host)

    def start(self, timeout: float = 60.0) -> None:
        argv = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false", "-H", self.host,
                "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid")]
        with (self.dir / "dockerd.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        env = self.env(dict(os.environ))
        up = h.wait_until(lambda: subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=30, check=False).returncode == 0,
                          timeout, 0.25)
        assert up, f"the private dockerd did not answer within {timeout} s: {(self.dir / 'dockerd.log').read_text()[-2000:]}"
        recorded = int((self.dir / "dockerd.pid").read_text().strip())
        assert recorded == self.pid, (recorded, self.pid)

    def load(self, image: str, shared_env: dict[str, str]) -> None:
        """The base image from the shared daemon, through a file (no shell pipe)."""
        archive = self.dir / "base.tar"
        for argv, env in ((["docker", "save", "-o", str(archive), image], shared_env), (["docker", "load", "-i", str(archive)], self.env(shared_env))):
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        archive.unlink()

    def stop(self) -> bool:
        """SIGTERM to our dockerd (command line checked), bounded wait, SIGKILL."""
        if self.pid is None:
            return True
        gone = h.stop_pid(self.pid, str(self.dir), timeout=40)
        if self.proc is not None and gone:
            self.proc.wait(timeout=10)
        return gone

    def teardown(self) -> None:
        self.stop()
        # its containerd and shims (they name our directories), then its mounts, then the files
        h.kill_ours([p for p, _ in h.processes_mentioning(str(self.dir))], str(self.dir))
        h.wait_until(lambda: not h.processes_mentioning(str(self.dir)), 10)
        with open("/proc/mounts") as fh:
            mounts = [line.split()[1] for line in fh if str(self.dir) in line.split()[1]]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.slow
def test_the_daemon_dies_mid_run(docker: Engine, cube: Path, tmp_path: Path) -> None:
    if shutil.which("dockerd") is None:
        skip_or_fail("no dockerd binary to start a private daemon with")
    ws = cube / "workspace"
    shared_env = dict(docker.env)
    daemon = PrivateDockerd()
    run: h.Background | None = None
    try:
        daemon.start()
        daemon.load(docker.base_image, shared_env)
        docker.env = daemon.env(shared_env)  # every cuberun and engine call of this test: the private daemon
        docker.ok(cube)
        before = h.completed(ws)
        h.set_mode(ws, f"sleep {h.SLEEP_S}")
        run = docker.start(cube, name="daemon-dies")
        run.wait_ready()
        cid = docker.remember_running(ws)
        assert processes_in_cgroup(cid), "the container's processes are not visible in its cgroup"
        assert daemon.pid is not None and str(daemon.dir) in h.cmdline(daemon.pid)
        started = time.monotonic()
        assert daemon.stop(), "the private dockerd did not stop"
        code = run.wait(timeout=90)
        took = time.monotonic() - started
    finally:
        if run is not None:
            run.stop()
        daemon.teardown()
        docker.env = shared_env
    assert code == 125, f"exit {code}\n{run.stdout}\n{run.stderr}"
    line = h.error_line(run.stderr)
    assert line == (
        f"cuberun: error: the docker daemon at {daemon.host} went away while task 'work' was running (its container exited with 137). "
        "Hint: start the daemon again (check its log), then run again; docker ps -a --filter label=cuberun.run=1 lists what is left"
    ), line
    record = h.records(ws, "docker")[-1]
    h.check_record(record, "error", 125)
    assert record["error"] == line[len("cuberun: error: "):]
    h.assert_completed_intact(ws, before)
    docker.ids = {cid}
    left = [f"{p}: {c}" for p, c in processes_in_cgroup(cid)] + [f"{p}: {c}" for p, c in h.processes_mentioning(str(daemon.dir))]
    assert not left, f"still running after the daemon stopped: {left}"
    print(f"docker daemon stopped: cuberun exited 125 after {took:.2f} s (dockerd's shutdown kills the container after its 10 s stop timeout)")


def test_cuberun_killed_with_sigkill_removes_the_container(docker: Engine, cube: Path) -> None:
    """kill -9 of cuberun while its container runs: the watchdog stops the client and removes
    the container (`docker rm -f`), the record is `lost`, the lock is free, the next run works."""
    ws = cube / "workspace"
    record, again, _ = h.cuberun_killed_mid_run(docker, cube, orphans_visible=False, ready=lambda _: docker.remember_running(ws))
    assert docker.ids, "the running container was not seen"
    docker.assert_nothing_left(ws)
    assert record["status"] == "lost"
    assert (ws / "out" / "result.txt").read_text() == "after the kill\n"
