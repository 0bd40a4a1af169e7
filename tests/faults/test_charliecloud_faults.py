"""Faults on the charliecloud runner: `ch-run` (charliecloud-runtime 0.31) on a directory image,
a hard-linked copy of the debootstrap rootfs of scripts/backends/up.sh (the runner creates the
/mlcube_ioN mount points in it; the shared rootfs is never written).

Cases: the task crashes, is SIGKILLed, is interrupted (SIGINT and SIGTERM to cuberun), fills a
small tmpfs workspace; the workspace is full before the run. Skipped, with the reason: an OOM
kill under a memory limit (ch-run has none) and the backend's death (ch-run has no daemon: it
execs the task in place, so the backend process IS the task; its death is the SIGKILL case).
ch-run shares the host's pid namespace: the task's READY pids are real.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cuberun.runners.charliecloud import sandbox
from tests.backends import backend_env, require_backend, skip_or_fail
from tests.faults import helpers as h

pytestmark = pytest.mark.charliecloud


@pytest.fixture(scope="module")
def image_dir() -> Iterator[Path]:
    details = require_backend("charliecloud")
    shared = Path(tempfile.mkdtemp(prefix="crfch-", dir="/tmp"))
    shared.chmod(0o755)
    image = shared / "rootfs"
    # hard links: fast; ch-run mounts the image read-only and the runner only adds directories
    subprocess.run(["cp", "-al", str(details["rootfs"]), str(image)], check=True, timeout=300)
    yield image
    subprocess.run(["rm", "-rf", "--one-file-system", str(shared)], check=False, timeout=300)


class Charlie(h.Harness):
    platform = "charliecloud"

    def leftovers(self, workspace: Path, pids: Sequence[int]) -> list[str]:
        left = super().leftovers(workspace, pids)
        return left + [f"pid {p}: {line}" for p, line in h.processes_mentioning("ch-run") if str(workspace) in line]


@pytest.fixture
def charlie(cli_env: dict[str, str], tmp_path: Path, image_dir: Path) -> Iterator[Charlie]:
    env = {**cli_env, **backend_env("charliecloud"), "CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}
    env.pop("DOCKER_HOST", None)
    harness = Charlie(env, tmp_path)
    yield harness
    harness.cleanup(tmp_path / "faults" / "workspace", [])


@pytest.fixture
def cube(tmp_path: Path, image_dir: Path) -> Path:
    return h.fault_cube(tmp_path, {"charliecloud": {"image_dir": str(image_dir)}})


def test_task_crash_after_a_successful_run(charlie: Charlie, cube: Path) -> None:
    line, record, _ = h.crash_after_success(charlie, cube)
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 3 (run {record['run_id']}; log "), line
    # the network off: ch-run runs inside a user and network namespace of its own (the run policy)
    command = record["command"]
    assert command[:5] == [sys.executable, "-I", "-S", sandbox.__file__, "--net"] and "ch-run" in command, command


def test_task_killed_by_sigkill_after_a_successful_run(charlie: Charlie, cube: Path) -> None:
    line, record, _ = h.killed_after_success(charlie, cube)
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 137 (run {record['run_id']}; log "), line
    assert record["signal"] == signal.SIGKILL


def test_oom_kill() -> None:
    pytest.skip("ch-run has no memory limit (no cgroup, no rlimit option) and the charliecloud runner applies none: "
                "a kernel OOM kill reaches cuberun as SIGKILL, covered by test_task_killed_by_sigkill_after_a_successful_run")


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_stops_ch_run_and_the_task(charlie: Charlie, cube: Path, sig: int, name: str) -> None:
    line, record, gone = h.interrupted_after_success(charlie, cube, sig, gone_within=10)
    assert line.startswith(f"cuberun: error: task 'work' was interrupted (run {record['run_id']}; log "), line
    print(f"charliecloud {name}: exit {128 + sig}, task and grandchild gone {gone:.2f} s after the signal")


def test_backend_dies_mid_run() -> None:
    pytest.skip("ch-run has no daemon and execs the task in place (the ch-run process becomes the task): "
                "its death is the task's, covered by test_task_killed_by_sigkill_after_a_successful_run")


@pytest.mark.slow
def test_disk_fills_during_the_task(charlie: Charlie, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        line, _ = h.disk_fills_during_the_task(charlie, cube, ws)
    assert line.startswith("cuberun: error: task 'work' failed with exit code 28 (run "), line


def test_workspace_full_before_the_run(charlie: Charlie, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        h.workspace_full_before_the_run(charlie, cube, ws)

