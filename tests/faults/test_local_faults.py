"""Faults on the local runner (the host, no container): the task crashes, is SIGKILLed, is
interrupted, fills a small tmpfs workspace; the workspace is full before the run.

The local runner has no backend process between cuberun and the task, so "the backend dies
mid-run" has no meaning here, and it applies no memory limit (an OOM kill on the host is a
SIGKILL, covered by the sigkill test). Both are skipped with that reason.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.faults import helpers as h

LOCAL_GRACE = {"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}


@pytest.fixture
def local(cli_env: dict[str, str], tmp_path: Path) -> h.Harness:
    return h.Harness(dict(cli_env, **LOCAL_GRACE), tmp_path)


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    return h.fault_cube(tmp_path)


def log_of(cube: Path, run_id: str) -> str:
    return str(cube / "workspace" / ".cuberun" / "runs" / run_id / "output.log")


def test_task_crash_after_a_successful_run(local: h.Harness, cube: Path) -> None:
    line, record, _ = h.crash_after_success(local, cube)
    assert line == f"cuberun: error: task 'work' failed with exit code 3 (run {record['run_id']}; log {log_of(cube, record['run_id'])})"
    assert "fault: crashing with exit 3" in Path(record["log"]).read_text()


def test_task_killed_by_sigkill_after_a_successful_run(local: h.Harness, cube: Path) -> None:
    line, record, _ = h.killed_after_success(local, cube)
    assert line == f"cuberun: error: task 'work' failed with exit code 137 (run {record['run_id']}; log {log_of(cube, record['run_id'])})"
    assert record["signal"] == signal.SIGKILL


def test_oom_kill() -> None:
    pytest.skip("the local runner applies no memory limit (no cgroup, no rlimit; --memory is not applied on the host): "
                "a kernel OOM kill reaches cuberun as SIGKILL, covered by test_task_killed_by_sigkill_after_a_successful_run")


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_stops_the_task_and_its_children(local: h.Harness, cube: Path, sig: int, name: str) -> None:
    line, record, gone = h.interrupted_after_success(local, cube, sig, gone_within=10)
    assert line == f"cuberun: error: task 'work' was interrupted (run {record['run_id']}; log {log_of(cube, record['run_id'])})"
    assert gone < 10
    print(f"local {name}: exit {128 + sig}, task and grandchild gone {gone:.2f} s after the signal")


def test_backend_dies_mid_run() -> None:
    pytest.skip("the local runner has no backend process between cuberun and the task (it starts the task itself): "
                "nothing can die but the task, which the crash and sigkill tests cover")


@pytest.mark.slow
def test_disk_fills_during_the_task(local: h.Harness, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        line, record = h.disk_fills_during_the_task(local, cube, ws)
    assert re.fullmatch(r"cuberun: error: task 'work' failed with exit code 28 \(run \S+; log \S+/output\.log\)", line), line


def test_workspace_full_before_the_run(local: h.Harness, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        h.workspace_full_before_the_run(local, cube, ws)


def test_cuberun_killed_with_sigkill(local: h.Harness, cube: Path) -> None:
    """kill -9 of cuberun: the task and its SIGTERM-proof grandchild are stopped by the watchdog,
    the record is `lost`, and the next run waits for that before it starts the task."""
    record, again, listing = h.cuberun_killed_mid_run(local, cube, orphans_visible=True)
    assert record["error"].startswith("cuberun (pid ") and record["error"].endswith(") ended without finishing this record")
    assert f"{record['run_id']}  work" in listing and " lost " in listing
    assert (cube / "workspace" / "out" / "result.txt").read_text() == "after the orphans\n"
