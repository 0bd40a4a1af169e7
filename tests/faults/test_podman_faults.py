"""Faults on the docker runner with Podman (`--platform=podman`) against the real Podman 4.3.

The task crashes, is SIGKILLed, is OOM-killed under `--memory=64m`, is interrupted (SIGINT and
SIGTERM to cuberun), fills a small tmpfs workspace; the workspace is full before the run.
Podman has no daemon: the backend process of a run is the `podman run` client cuberun started
(conmon keeps the container alive without it). "The backend dies mid-run" is that client killed
with SIGKILL: cuberun must say so (not blame the task) and remove the container, conmon included.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import backend_env, require_backend, skip_or_fail
from tests.faults import helpers as h
from tests.faults.containers import Engine, container_names, processes_in_cgroup

pytestmark = pytest.mark.podman

GRACE = {"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}


@pytest.fixture
def podman(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Engine]:
    details = require_backend("podman")
    env = {**cli_env, **backend_env("podman"), **GRACE}
    env.pop("DOCKER_HOST", None)
    engine = Engine("podman", str(details["base_image"]), env, tmp_path)
    yield engine
    engine.cleanup(tmp_path / "faults" / "workspace", [])


@pytest.fixture
def cube(podman: Engine, tmp_path: Path) -> Path:
    return h.fault_cube(tmp_path, podman.sections())


def test_task_crash_after_a_successful_run(podman: Engine, cube: Path) -> None:
    line, record, _ = h.crash_after_success(podman, cube)
    assert line.startswith(f"cuberun: error: task 'work' failed with exit code 3 (run {record['run_id']}; log ")
    assert record["command"][:3] == ["podman", "run", "--rm"]


def test_task_killed_by_sigkill_after_a_successful_run(podman: Engine, cube: Path) -> None:
    line, record, _ = h.killed_from_outside_after_success(podman, cube, lambda _: podman.task_pid(cube / "workspace"), status=("error", "failed"))
    assert line.startswith("cuberun: error: task 'work' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory, ")


def test_oom_kill_under_a_memory_limit(podman: Engine, cube: Path) -> None:
    line, record, _ = h.killed_after_success(podman, cube, "--memory=64m", mode="hog 400", status=("error", "failed"))
    assert line.startswith("cuberun: error: task 'work' was killed (SIGKILL, exit 137): possibly out of memory. Hint: raise --memory (now 64m)")
    assert "--memory=64m" in record["command"]


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_removes_the_container(podman: Engine, cube: Path, sig: int, name: str) -> None:
    ws = cube / "workspace"
    line, record, gone = h.interrupted_after_success(podman, cube, sig, ready=lambda _: podman.remember_running(ws))
    assert line.startswith(f"cuberun: error: task 'work' was interrupted (run {record['run_id']}; log ")
    print(f"podman {name}: exit {128 + sig}, container and conmon gone {gone:.2f} s after the signal")


def test_the_engine_client_dies_mid_run(podman: Engine, cube: Path) -> None:
    """After the client dies, cuberun ends the container with `podman kill` (SIGKILL) and then
    `rm -f`: `rm -f` (or `stop`) alone would give the task, which ignores SIGTERM as PID 1,
    podman's 10 s grace. Checked in Podman's own event log: a `kill` event before `died` (a
    stop's SIGTERM and its SIGKILL after the grace log no `kill` event), then `remove`."""
    ws = cube / "workspace"
    podman.ok(cube)
    before = h.completed(ws)
    h.set_mode(ws, f"sleep {h.SLEEP_S}")
    since = str(int(time.time()) - 60)  # the event log is read from here on (wall clock, with a margin)
    run = podman.start(cube, name="client-dies")
    try:
        run.wait_ready()
        cid = podman.remember_running(ws)
        name = container_names(ws)[-1]
        [client] = [p for p in h.children(run.proc.pid) if h.cmdline(p).startswith("podman run ") and f"--name={name}" in h.cmdline(p)]
        assert any("conmon" in line for _, line in h.processes_mentioning(name)), "no conmon for the container"
        started = time.monotonic()
        os.kill(client, signal.SIGKILL)  # the `podman run` this run started (parent and --name checked)
        code = run.wait(60)
        took = time.monotonic() - started
        podman.assert_nothing_left(ws, timeout=15)
    finally:
        run.stop()
        podman.cleanup(ws, [])
    assert code == 125, f"exit {code}\n{run.stdout}\n{run.stderr}"
    line = h.error_line(run.stderr)
    assert line == ("cuberun: error: 'podman run' was killed by SIGKILL while task 'work' was running; its container was removed. "
                    "Hint: the task did not fail by itself: find what killed the engine client, then run again"), line
    record = h.records(ws, "podman")[-1]
    h.check_record(record, "error", 125)
    h.assert_completed_intact(ws, before)
    assert not processes_in_cgroup(cid)
    events = podman.engine("events", "--stream=false", "--since", since, "--filter", f"container={cid}", "--format", "{{.Status}}").stdout.split()
    assert "kill" in events and "died" in events and events.index("kill") < events.index("died"), (
        f"the container was not ended by `podman kill` (a stop/rm -f grace instead?): events {events}")
    assert events[-1] == "remove", events
    print(f"podman client killed: cuberun exited 125 after {took:.2f} s (information only); events {' '.join(events)}")


@pytest.mark.slow
def test_disk_fills_during_the_task(podman: Engine, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        line, _ = h.disk_fills_during_the_task(podman, cube, ws)
    assert line.startswith("cuberun: error: task 'work' failed with exit code 28 (run ")


def test_workspace_full_before_the_run(podman: Engine, cube: Path, tmp_path: Path) -> None:
    reason = h.can_mount()
    if reason:
        skip_or_fail(reason)
    with h.tmpfs(tmp_path / "small-ws") as ws:
        h.workspace_full_before_the_run(podman, cube, ws)


def test_cuberun_killed_with_sigkill_removes_the_container(podman: Engine, cube: Path) -> None:
    """kill -9 of cuberun while its container runs: the watchdog removes the container."""
    ws = cube / "workspace"
    record, _, _ = h.cuberun_killed_mid_run(podman, cube, orphans_visible=False, ready=lambda _: podman.remember_running(ws))
    assert podman.ids, "the running container was not seen"
    podman.assert_nothing_left(ws)
    assert record["status"] == "lost"
    assert (ws / "out" / "result.txt").read_text() == "after the kill\n"
