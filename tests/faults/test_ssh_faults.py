"""Faults on the ssh runner: the shared test sshd (`cuberun-local`, 127.0.0.1:2222) for the task's
own faults, and a private sshd of one test on another loopback port for the backend's death.

The remote cuberun is this machine's (`cuberun: installed`, `cuberun_path: <python> -m cuberun`:
no venv to build); both "hosts" share this machine's filesystem and process table, so a test
sees the remote task's real pids. Remote roots live under /tmp/cuberun-remote-<hex> (removed at
the end); ssh control sockets in a directory of this module, their masters closed at the end.

Cases: the task crashes, is SIGKILLed, is OOM-killed (through the remote platform `docker` with
`--memory=64m`: the remote platform `local` has no memory limit), is interrupted (SIGINT and
SIGTERM to cuberun), fills the remote disk (a tmpfs remote_root); the local workspace is full
before the run; the remote disk is full before the run; sshd is killed mid-run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backends import backend_env, require_backend, skip_or_fail, unavailable_reason
from tests.conftest import server_ports
from tests.faults import helpers as h

pytestmark = pytest.mark.ssh

HOST = "cuberun-local"
PLATFORM = "fault-ssh"


@pytest.fixture(scope="module")
def ssh_details() -> dict[str, Any]:
    details = require_backend("ssh")
    assert HOST in details.get("hosts", []), details
    return details


@pytest.fixture(scope="module")
def remote_base(ssh_details: dict[str, Any]) -> Iterator[Path]:
    base = Path(f"/tmp/cuberun-remote-{uuid.uuid4().hex[:10]}")
    base.mkdir(mode=0o700)
    yield base
    h.kill_ours([p for p, _ in h.processes_mentioning(str(base))], str(base))
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def control_dir(ssh_details: dict[str, Any]) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crfs-", dir="/tmp"))  # short: unix socket paths
    yield path
    for sock in path.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "cuberun-fault-master"], capture_output=True, timeout=20, check=False)
    shutil.rmtree(path, ignore_errors=True)


class Remote(h.Harness):
    """The ssh platform(s) of one test, in its own settings file."""

    platform = PLATFORM

    def __init__(self, env: dict[str, str], cwd: Path, remote_base: Path, settings: Path) -> None:
        super().__init__(env, cwd)
        self.remote_base = remote_base
        self.settings = settings
        self.platforms: dict[str, dict[str, Any]] = {}

    def add(self, name: str, host: str, ssh_config: str, root: Path, **extra: Any) -> None:
        self.platforms[name] = {
            "runner": "ssh",
            "host": host,
            "ssh_config": ssh_config,
            "cuberun": "installed",
            "cuberun_path": f"{sys.executable} -m cuberun",
            "remote_root": str(root),
            "remote_env": {
                "CUBERUN_SETTINGS": str(self.remote_base / "remote-settings.yaml"),
                "MLCUBE_SYSTEM_SETTINGS": str(self.remote_base / "no-mlcube.yaml"),
                "CUBERUN_CACHE_DIR": self.env["CUBERUN_CACHE_DIR"],
                "CUBERUN_GRACE_INTERRUPT": "1",
                "CUBERUN_GRACE_TERMINATE": "1",
                **extra.pop("remote_env", {}),
            },
            **extra,
        }
        self.settings.parent.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(yaml.safe_dump({"platforms": self.platforms}), encoding="utf-8")

    def leftovers(self, workspace: Path, pids: Sequence[int]) -> list[str]:
        left = super().leftovers(workspace, pids)
        return left + [f"pid {p}: {line}" for p, line in h.processes_mentioning(str(self.remote_base))]

    def cleanup(self, workspace: Path, pids: Sequence[int]) -> None:
        super().cleanup(workspace, pids)
        h.kill_ours([p for p, _ in h.processes_mentioning(str(self.remote_base))], str(self.remote_base))


@pytest.fixture
def remote(cli_env: dict[str, str], tmp_path: Path, ssh_details: dict[str, Any], remote_base: Path, control_dir: Path) -> Iterator[Remote]:
    base = remote_base / tmp_path.name  # one remote root per test
    env = dict(cli_env, CUBERUN_SSH_CONTROL_DIR=str(control_dir))
    harness = Remote(env, tmp_path, base, Path(cli_env["CUBERUN_SETTINGS"]))
    harness.add(PLATFORM, HOST, str(ssh_details["ssh_config"]), base / "root")
    yield harness
    harness.cleanup(tmp_path / "faults" / "workspace", [])


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    return h.fault_cube(tmp_path)


def test_task_crash_after_a_successful_run(remote: Remote, cube: Path) -> None:
    line, record, _ = h.crash_after_success(remote, cube)
    remote_id = record["details"]["remote"]["run_id"]
    assert line == (f"cuberun: error: task 'work' failed with exit code 3 on {HOST} (remote run {remote_id}; log {record['log']}) "
                    f"(run {record['run_id']})"), line
    assert record["details"]["remote"]["exit_code"] == 3


def test_task_killed_by_sigkill_after_a_successful_run(remote: Remote, cube: Path) -> None:
    line, record, _ = h.killed_after_success(remote, cube)
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 137 on {HOST} (remote run "), line


def test_oom_kill_through_the_remote_docker_platform(remote: Remote, cube: Path, tmp_path: Path) -> None:
    reason = unavailable_reason("docker")
    if reason:
        skip_or_fail(f"the remote platform 'local' has no memory limit, and docker (for an enforced one) is unavailable: {reason}")
    details = require_backend("docker")
    remote.add(PLATFORM, HOST, remote.platforms[PLATFORM]["ssh_config"], remote.remote_base / "root", platform="docker",
               remote_env=backend_env("docker"))
    cube = h.fault_cube(tmp_path / "in-docker", {"docker": {"image": str(details["base_image"])}})
    line, record, proc = h.killed_after_success(remote, cube, "--memory=64m", "--network=none", mode="hog 400")
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 137 on {HOST} (remote run "), line
    # the remote cuberun's own account, streamed back over ssh
    assert "cuberun: error: task 'work' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory (now 64m)" in proc.stdout


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_stops_the_remote_task(remote: Remote, cube: Path, sig: int, name: str) -> None:
    line, record, gone = h.interrupted_after_success(remote, cube, sig)
    assert line.startswith(f"cuberun: error: task 'work' was interrupted (run {record['run_id']}; log "), line
    print(f"ssh {name}: exit {128 + sig}, remote task and grandchild gone {gone:.2f} s after the signal")


@pytest.mark.slow
def test_remote_disk_fills_during_the_task(remote: Remote, cube: Path, tmp_path: Path) -> None:
    """remote_root is a small tmpfs: the task fills the remote disk and exits 28; the remote
    cuberun still finishes its record; the local side passes 28 through. Then, with the remote
    disk completely full, the remote side cannot start (one line, its exit 1), and a changed
    input cannot even be sent (one line, 125)."""
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    ws = cube / "workspace"
    with h.tmpfs(tmp_path / "remote-disk") as disk:
        remote.add(PLATFORM, HOST, remote.platforms[PLATFORM]["ssh_config"], disk)
        remote.ok(cube)
        before = h.completed(ws)
        h.set_mode(ws, "fill 64")
        proc = remote.run(cube)
        assert proc.returncode == 28, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr}"
        line = h.error_line(proc.stderr)
        assert line.startswith(f"cuberun: error: task 'work' failed with exit code 28 on {HOST} (remote run "), line
        assert "fault: fill stopped after" in proc.stdout and "line 399" in proc.stdout
        assert h.free_bytes(disk) < 512 * 1024  # full, but for what cuberun held back to finish its records
        record = h.records(ws, PLATFORM)[-1]
        h.check_record(record, "failed", 28)
        fetched = record["details"]["remote"]["record"]
        remote_record = yaml.safe_load(Path(fetched, "record.json").read_text())
        assert (remote_record["status"], remote_record["exit_code"]) == ("failed", 28)  # finished on the full disk
        h.assert_completed_intact(ws, before)
        remote.assert_nothing_left(ws)

        # the remote disk is full: the remote command cannot even record its pid (nothing new to
        # upload with --force); the shell's own words come back in one line, with its exit code
        h.fill(disk)
        proc = remote.run(cube, "--force")
        assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        line = h.error_line(proc.stderr)
        assert line.startswith(f"cuberun: error: the remote cuberun on {HOST} stopped before task 'work' ran (exit 1): "), line
        assert re.search(r"I/O error|No space left on device", line), line
        assert "fault: mode" not in proc.stdout
        record = h.records(ws, PLATFORM)[-1]
        h.check_record(record, "error", 1)
        h.assert_completed_intact(ws, before)

        # a changed input cannot even be sent
        h.set_mode(ws, "ok second")
        proc = remote.run(cube)
        assert proc.returncode == 125, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        line = h.error_line(proc.stderr)
        assert line.startswith(f"cuberun: error: the remote host is out of disk space while copying to {HOST}. Hint: free space"), line
        record = h.records(ws, PLATFORM)[-1]
        h.check_record(record, "error", 125)
        h.assert_completed_intact(ws, before)
        remote.assert_nothing_left(ws)


def test_local_workspace_full_before_the_run(remote: Remote, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        h.workspace_full_before_the_run(remote, cube, ws)


# -- sshd dies mid-run ------------------------------------------------------------------------------------
class PrivateSshd:
    """An sshd of this test only on a free loopback port, with the test backend's keys (read-only)
    and its own config, pid file, log, known_hosts line and client config."""

    def __init__(self, state: Path) -> None:
        self.state = state  # the shared ssh state dir: host key, client key, authorized_keys
        self.dir = Path(tempfile.mkdtemp(prefix="crfsd-", dir="/tmp"))
        [self.port] = server_ports(1)
        self.config = self.dir / "sshd_config"
        self.client_config = self.dir / "ssh_config"
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self) -> None:
        self.config.write_text(textwrap.dedent(f"""\
            Port {self.port}
            ListenAddress 127.0.0.1
            HostKey {self.state}/ssh_host_ed25519_key
            PidFile {self.dir}/sshd.pid
            AuthorizedKeysFile {self.state}/authorized_keys
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            UsePAM no
            StrictModes no
            UseDNS no
            MaxStartups 64:30:128
            MaxSessions 64
            """))
        key = " ".join((self.state / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key}\n")
        self.client_config.write_text(textwrap.dedent(f"""\
            Host cuberun-fault
                HostName 127.0.0.1
                Port {self.port}
                User root
                IdentityFile {self.state}/id_ed25519
                IdentitiesOnly yes
                UserKnownHostsFile {self.dir}/known_hosts
                GlobalKnownHostsFile /dev/null
                StrictHostKeyChecking yes
                UpdateHostKeys no
                BatchMode yes
                ConnectTimeout 5
                LogLevel ERROR
            """))
        self.client_config.chmod(0o600)

    def start(self, timeout: float = 10.0) -> None:
        self.write()
        os.makedirs("/run/sshd", exist_ok=True)
        check = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(self.config)], capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(self.config), "-E", str(self.dir / "sshd.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        probe = ["ssh", "-F", str(self.client_config), "cuberun-fault", "true"]
        up = h.wait_until(lambda: subprocess.run(probe, capture_output=True, timeout=15, stdin=subprocess.DEVNULL, check=False).returncode == 0,
                          timeout, 0.1)
        assert up, f"the private sshd did not answer within {timeout} s: {(self.dir / 'sshd.log').read_text()[-1000:]}"
        assert int((self.dir / "sshd.pid").read_text()) == self.pid

    def sshd_tree(self) -> list[int]:
        """Our listener and the per-connection sshd processes under it (not the sessions' commands)."""
        assert self.pid is not None
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                found.append(pid)
                todo += h.children(pid)
        return found

    def kill(self) -> list[int]:
        """sshd dies: SIGKILL to the listener (command line checked) and its session sshds."""
        assert self.pid is not None and str(self.config) in h.cmdline(self.pid), h.cmdline(self.pid or 0)
        tree = self.sshd_tree()
        assert len(tree) >= 2, f"no session sshd under our listener: {tree}"
        for pid in tree:
            if h.alive(pid):
                os.kill(pid, signal.SIGKILL)
        return tree

    def teardown(self) -> None:
        if self.pid is not None and h.alive(self.pid):
            for pid in self.sshd_tree():
                h.kill_ours([pid], "sshd")
        if self.proc is not None:
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.slow
def test_sshd_killed_mid_run(remote: Remote, cube: Path, ssh_details: dict[str, Any]) -> None:
    ws = cube / "workspace"
    sshd = PrivateSshd(Path(ssh_details["state"]))
    run: h.Background | None = None
    pids: list[int] = []
    try:
        sshd.start()
        remote.add(PLATFORM, "cuberun-fault", str(sshd.client_config), remote.remote_base / "root")
        remote.ok(cube)
        before = h.completed(ws)
        h.set_mode(ws, f"sleep {h.SLEEP_S}")
        run = remote.start(cube, name="sshd-dies")
        pids = run.wait_ready()
        assert all(h.alive(p) for p in pids)
        killed = sshd.kill()
        started = time.monotonic()
        code = run.wait(60)
        took = time.monotonic() - started
        # the remote cuberun saw its session end (stdin closed) and stopped the task like a hangup
        remote.assert_nothing_left(ws, pids, timeout=15)
        gone = time.monotonic() - started
    finally:
        if run is not None:
            run.stop()
        remote.cleanup(ws, pids)
        sshd.teardown()
    assert code == 125, f"exit {code}\n{run.stdout}\n{run.stderr}"
    line = h.error_line(run.stderr)
    assert line == (
        "cuberun: error: lost the connection to cuberun-fault while task 'work' was running "
        "(ssh exit 255; reconnecting: cannot connect to cuberun-fault: connection refused). "
        "Hint: the remote cuberun stops the task when its session ends; check sshd and the network there, then run again; "
        f"try: ssh -F {sshd.client_config} cuberun-fault true"
    ), line
    record = h.records(ws, PLATFORM)[-1]
    h.check_record(record, "error", 125)
    h.assert_completed_intact(ws, before)
    # the remote run's own record says what happened there: stopped by the hangup (128 + SIGHUP)
    remote_runs = [p for p in (remote.remote_base / "root").rglob("record.json") if ".cuberun/runs/" in str(p)]
    statuses = sorted((r["status"], r["exit_code"]) for r in (yaml.safe_load(p.read_text()) for p in remote_runs))
    assert ("interrupted", 128 + signal.SIGHUP) in statuses, statuses
    print(f"sshd killed (pids {killed}): cuberun exited 125 after {took:.2f} s; remote task gone after {gone:.2f} s")
