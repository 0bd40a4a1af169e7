"""A task's time limit on Backend.AI (limit.py): the clock starts when the session starts (a
`*_started` watch event, or `session info` showing it RUNNING), never while it is queued; at the
limit cuberun removes the session (`session rm`, the Ctrl-C path), exit 124, `timed_out` in the
record, worded like the other runners and retried like them. The CLI runs against a FAKE
`backend.ai` client (a script of this test, recording its calls): command flow only; the real
session is stopped in tests/integration/test_backendai_real.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cuberun.runners.backendai.limit import SessionClock, limit_value, poll_start, timed_out
from tests.conftest import run_records

REPO = Path(__file__).resolve().parents[2]

FAKE_CLIENT = '''\
import json, os, re, signal, sys, time, uuid
state = os.environ["FAKE_BAI_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args[:2] == ["--output", "json"]:
    args = args[2:]
def removed(name):
    return os.path.exists(os.path.join(state, "removed-" + name))
if args[:2] == ["vfolder", "info"]:
    sys.exit(0)
if args[:2] == ["session", "create"]:
    name = args[args.index("-t") + 1]
    sid = str(uuid.uuid4())
    with open(os.path.join(state, "id-" + sid), "w") as fh:
        fh.write(name)
    print(f"Session ID {sid} is enqueued for scheduling.")
    sys.exit(0)
if args[:2] == ["session", "rm"]:
    for name in args[2:]:
        open(os.path.join(state, "removed-" + name), "w").close()
    print("Done.")
    sys.exit(0)
if args[:2] == ["session", "logs"]:
    print("started")
    sys.exit(0)
if args[:2] == ["session", "info"]:
    ref = args[2]
    path = os.path.join(state, "id-" + ref)
    name = open(path).read() if os.path.exists(path) else ref
    print(json.dumps({"items": [{"status": "TERMINATED" if removed(name) else "RUNNING", "result": "FAILURE"}]}))
    sys.exit(0)
if args[:2] == ["session", "watch"]:
    name = args[2]
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    if os.environ.get("FAKE_BAI_WATCH") != "silent":  # "silent": the watch began after the session started
        print("{'sessionId': 'x', 'event': 'session_scheduled'}", flush=True)
        print("{'sessionId': 'x', 'event': 'session_started'}", flush=True)
    for _ in range(3000):  # bounded: 300 s
        if removed(name):
            print("{'sessionId': 'x', 'event': 'session_terminated'}", flush=True)
            sys.exit(0)
        time.sleep(0.1)
    sys.exit(3)
print("fake backend.ai: unexpected " + " ".join(args), file=sys.stderr)
sys.exit(2)
'''

CUBE = """\
name: nap
docker: {image: example/nap:1}
tasks:
  nap:
    timeout: 1
    parameters: {}
"""


def fake_cluster(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    state = tmp_path / "state"
    state.mkdir()
    client = tmp_path / "fake_backend_ai.py"
    client.write_text(FAKE_CLIENT)
    cube = tmp_path / "cube"
    cube.mkdir()
    (cube / "mlcube.yaml").write_text(CUBE)
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {"bai": {"runner": "backendai", "client": [sys.executable, str(client)], "log_interval": 0,
                                                           "entrypoint": "sleep 600", "workdir": "/", "engine": "/nonexistent/docker"}}}))
    env = {**os.environ, "CUBERUN_SETTINGS": str(settings), "MLCUBE_SYSTEM_SETTINGS": str(tmp_path / "none.yaml"),
           "PYTHONPATH": str(REPO / "src"), "FAKE_BAI_STATE": str(state), "BACKEND_ENDPOINT": "http://127.0.0.1:9",
           "BACKEND_ACCESS_KEY": "AKIAFAKE", "BACKEND_SECRET_KEY": "fake-secret", "CUBERUN_PROGRESS": "plain"}
    return cube, env, state


def calls(state: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def cuberun(cube: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--platform=bai", *extra], env=env,
                          capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]


def test_a_task_over_its_cube_limit_is_stopped_and_retried(tmp_path: Path) -> None:
    cube, env, state = fake_cluster(tmp_path)
    proc = cuberun(cube, env, "--retries=1", "--retry-delay=0")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    sessions = [c[c.index("-t") + 1] for c in calls(state) if c[:2] == ["session", "create"]]
    removed = [c[2:] for c in calls(state) if c[:2] == ["session", "rm"]]
    assert len(set(sessions)) == 2 and removed == [[sessions[0]], [sessions[1]]]  # a new session per attempt, each removed once
    for name in sessions:
        assert f"terminated session(s) {name}" in proc.stderr
    assert "task 'nap' timed out on attempt 1 of 2; attempt 2 in 0 s" in proc.stderr
    [line] = error_lines(proc)
    assert f"timed out after 1 s (tasks.nap.timeout) and was stopped: session {sessions[1]} was terminated" in line
    assert "every attempt failed" in line and "does not apply" not in proc.stderr and "Traceback" not in proc.stderr
    [record] = run_records(cube / "workspace")
    assert (record["status"], record["exit_code"]) == ("failed", 124)
    assert record["details"]["timed_out"] is True and record["details"]["timeout"] == 1 and record["details"]["session"] == sessions[1]
    assert [(a["exit_code"], a.get("timed_out"), a["session"]) for a in record["attempts"]] == [(124, True, sessions[0]), (124, True, sessions[1])]
    assert (record["limits"]["timeout"], record["limits"]["timeout_source"]) == (1, "cube")


def test_a_session_the_watch_saw_start_before_it_began_is_timed_from_session_info(tmp_path: Path) -> None:
    """The watch shows no event (the session was running before it subscribed): `session info`
    says RUNNING, which starts the clock; `--timeout` wins over the cube's limit."""
    cube, env, state = fake_cluster(tmp_path)
    proc = cuberun(cube, {**env, "FAKE_BAI_WATCH": "silent"}, "--timeout=2")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    [name] = [c[c.index("-t") + 1] for c in calls(state) if c[:2] == ["session", "create"]]
    assert any(c[:4] == ["--output", "json", "session", "info"] for c in calls(state))
    [line] = error_lines(proc)
    assert f"timed out after 2 s (--timeout) and was stopped: session {name} was terminated" in line
    [record] = run_records(cube / "workspace")
    assert record["exit_code"] == 124 and record["details"]["timed_out"] is True and record["details"]["timeout"] == 2


def test_dry_run_no_longer_says_the_limit_is_ignored(tmp_path: Path) -> None:
    cube, env, _ = fake_cluster(tmp_path)
    proc = cuberun(cube, env, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "# nap: limits: timeout 1 s (cube)" in proc.stdout and "ignored" not in proc.stdout


class Now:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_starts_with_the_session_not_with_the_queue() -> None:
    now = Now()
    clock = SessionClock(5, now)
    for state in ("PENDING", "SCHEDULED", "PULLING", "CREATING"):
        clock.event(state)
    now.t += 3600  # an hour in the queue
    assert not clock.expired() and clock.started_at is None
    clock.event("RUNNING")
    now.t += 4.9
    assert not clock.expired()
    clock.event("RUNNING")  # a second start event (kernel, then session) does not restart it
    now.t += 0.1
    assert clock.expired() and clock.fired
    now.t -= 10
    assert clock.expired()  # once fired, it stays fired


def test_session_info_starts_the_clock_only_when_running() -> None:
    now = Now()
    clock = SessionClock(2, now)
    for status in ("PENDING", "PREPARING", "PULLING", "TERMINATED", "ERROR", ""):
        clock.observed(status)
    assert clock.started_at is None
    clock.observed("RUNNING")
    assert clock.started_at == 100.0
    now.t = 150.0
    clock.observed("RUNNING_DEGRADED")
    clock.event("RUNNING")
    assert clock.started_at == 100.0


class Stop:
    """stop.wait(seconds): records the waits, set after `rounds` of them."""

    def __init__(self, rounds: int) -> None:
        self.waits: list[float] = []
        self.rounds = rounds

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return len(self.waits) > self.rounds


def test_poll_start_backs_off_and_ends_once_started_or_stopped() -> None:
    clock = SessionClock(1, Now())
    answers = iter(["PENDING", None, "PULLING", "RUNNING", "RUNNING"])
    stop = Stop(100)
    poll_start(lambda: next(answers), clock, stop, first=1.0, most=2.0)
    assert clock.started_at is not None and stop.waits == [1.0, 1.5, 2.0, 2.0]  # asked four times, then started
    idle = SessionClock(1, Now())
    stop = Stop(3)
    poll_start(lambda: "PENDING", idle, stop)
    assert idle.started_at is None and len(stop.waits) == 4  # the follow ended first


@pytest.mark.parametrize("limit, terminated, words, recorded", [
    (3.0, True, "timed out after 3 s (--timeout) and was stopped: session s-1 was terminated", 3),
    (2.5, True, "timed out after 2.5 s (--timeout) and was stopped: session s-1 was terminated", 2.5),
    (3.0, False, "timed out after 3 s (--timeout) and was stopped; session s-1 could not be terminated: check with backend.ai ps, "
                 "remove it with backend.ai session rm s-1", 3),
])
def test_the_wording_and_the_record(limit: float, terminated: bool, words: str, recorded: Any) -> None:
    reason, details = timed_out(limit, "s-1", terminated)
    assert reason == words and details == {"timed_out": True, "timeout": recorded}
    assert type(limit_value(limit)) is type(recorded)


def test_the_stream_stops_at_the_callers_own_limit(tmp_path: Path) -> None:
    """process.stream(expired=...): stopped as at `timeout` (on_cancel, then the signals), exit 124."""
    from cuberun.process import stream

    marker = tmp_path / "cancelled"
    asked: list[int] = []

    def expired() -> bool:
        asked.append(1)
        return len(asked) > 3

    script = textwrap.dedent("""\
        import signal, sys, time
        signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
        for _ in range(3000):
            time.sleep(0.1)
    """)
    with open(os.devnull, "wb") as sink:
        outcome = stream([sys.executable, "-c", script], echo=sink, on_cancel=lambda: marker.write_text("x"), expired=expired)
    assert outcome.exit_code == 124 and outcome.details == {"timed_out": True, "timeout": None}
    assert outcome.reason == "timed out and was stopped" and marker.exists()
