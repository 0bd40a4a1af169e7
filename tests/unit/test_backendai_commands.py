"""Golden tests of the Backend.AI runner's commands (pure): the `session create` command line, the
batch startup command (quoting of paths with spaces and quotes), resources and environment; the
parsers of `session watch` / `session info` output and the exit-code rules (the watch pitfalls);
safe unpacking of the outputs archive; unavailable_reason. No client or manager is used."""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.backendai import BackendAIRunner
from cuberun.runners.backendai.session import (
    Verdict,
    default_vfolder,
    exit_code_from,
    info_verdict,
    parse_watch_output,
    safe_extract,
    session_name,
    startup_command,
    watch_state,
    watch_verdict,
)
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube

HELLO = """
name: hello world
platform: {accelerator_count: 1, host_memory_gb: 8}
docker:
  image: cuberun/hello_world:0.1
  env_args: {HF_TOKEN: t0ps3cret, MODE: fast}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: "my names/o'brien \\"jr\\".txt"}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}, logs: {type: directory, default: logs/}}
  bye:
    entrypoint: python3 /app/bye.py
    parameters:
      inputs: {name: {type: file, default: "my names/o'brien \\"jr\\".txt"}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""
FIXED = ["-Prunner.entrypoint=python3 /workspace/hello_world.py", "-Prunner.workdir=/workspace", "-Prunner.engine=/nonexistent/docker"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))


def make_cube(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(HELLO))
    (root / "workspace" / "my names").mkdir(parents=True, exist_ok=True)
    (root / "workspace" / "my names" / "o'brien \"jr\".txt").write_text("Alice\n")
    return root


def runner_for(root: Path, params: list[str] | None = None, options: RunOptions | None = None) -> tuple[BackendAIRunner, Any]:
    params = [p[2:] if p.startswith("-P") else p for p in FIXED + (params or [])]
    cube = load_cube(root, overrides=params)
    runner = make_runner(cube, "backendai", options or RunOptions(), params)
    assert isinstance(runner, BackendAIRunner)
    return runner, cube


def fixed_names(runner: BackendAIRunner, task: Any, name: str) -> None:
    runner.new_session_name = lambda _task: name  # type: ignore[method-assign]


# -- the session create command and the startup command (golden) ----------------------------------
def test_create_command_golden(tmp_path: Path) -> None:
    runner, cube = runner_for(make_cube(tmp_path / "cube"))
    task = resolve_task(cube, "hello")
    fixed_names(runner, task, "cuberun-hello-0000aaaa")
    plan = runner.session_plan(task)
    ws = tmp_path / "cube" / "workspace"
    startup = (
        "cd /mlcube_ws || exit 125; "
        "if [ -f .cuberun-cuberun-hello-0000aaaa-in.tar ]; then tar -xf .cuberun-cuberun-hello-0000aaaa-in.tar || exit 125; "
        "rm -f .cuberun-cuberun-hello-0000aaaa-in.tar; fi; "
        "mkdir -p -- chats logs || exit 125; "
        "(cd /workspace && exec python3 /workspace/hello_world.py hello "
        "'--name=/mlcube_ws/my names/o'\"'\"'brien \"jr\".txt' --chat=/mlcube_ws/chats/chat_with_alice.txt --logs=/mlcube_ws/logs); "
        "rc=$?; "
        'cd /mlcube_ws && set -- && for p in chats/chat_with_alice.txt logs; do if [ -e "$p" ]; then set -- "$@" "$p"; fi; done; '
        'if [ $# -gt 0 ]; then tar -cf .cuberun-cuberun-hello-0000aaaa-out.tar -- "$@"; fi; '
        "exit $rc"
    )
    assert plan.startup == startup
    assert plan.command == ["python3", "/workspace/hello_world.py", "hello", "--name=/mlcube_ws/my names/o'brien \"jr\".txt",
                            "--chat=/mlcube_ws/chats/chat_with_alice.txt", "--logs=/mlcube_ws/logs"]
    assert plan.inputs == ["my names/o'brien \"jr\".txt"] and plan.outputs == ["chats/chat_with_alice.txt", "logs"]
    assert plan.create_argv == [
        "backend.ai", "session", "create", "cuberun/hello_world:0.1-backendai", "--type", "batch", "--enqueue-only",
        "-t", "cuberun-hello-0000aaaa", "-c", startup, "-m", "cuberun-hello-world:/mlcube_ws",
        "-r", "mem=8g", "-r", "cuda.device=1", "-e", "HF_TOKEN=<redacted>", "-e", "MODE=fast",
    ]
    assert plan.real_create_argv[plan.real_create_argv.index("HF_TOKEN=t0ps3cret")] == "HF_TOKEN=t0ps3cret"
    steps = runner.run_steps(task)
    assert [s.purpose for s in steps] == ["pack", "upload", "submit", "wait", "download"]
    assert steps[0].argv == ("tar", "-cf", f"{ws}/.cuberun/backendai/.cuberun-cuberun-hello-0000aaaa-in.tar", "-C", str(ws), "--",
                             "my names/o'brien \"jr\".txt")
    assert steps[1].argv == ("backend.ai", "vfolder", "upload", "cuberun-hello-world", ".cuberun-cuberun-hello-0000aaaa-in.tar",
                             "-b", f"{ws}/.cuberun/backendai")
    assert steps[3].argv == ("backend.ai", "session", "watch", "cuberun-hello-0000aaaa", "--output", "json", "--max-wait", "604800")
    assert steps[4].argv[:5] == ("backend.ai", "vfolder", "download", "cuberun-hello-world", ".cuberun-cuberun-hello-0000aaaa-out.tar")
    assert "t0ps3cret" not in " ".join(s.display() for s in steps)


def test_policy_closest_equivalent(tmp_path: Path) -> None:
    """What Backend.AI can map (a named project network) and what it cannot, recorded as such."""
    runner, cube = runner_for(make_cube(tmp_path / "cube"))
    task = resolve_task(cube, "hello")
    policy = runner.policy(task).to_json()
    assert policy["network"] == "default" and policy["inputs_read_only"] is False and policy["strict"] is False
    assert policy["relaxations"] == [
        {"name": "network", "detail": "not isolated: Backend.AI sessions keep the cluster's network (no API option turns it off)", "source": "runner"},
        {"name": "writable-inputs", "detail": "the inputs are unpacked into the read-write vfolder", "source": "runner"},
    ]
    assert "--network" not in runner.session_plan(task).create_argv
    runner, cube = runner_for(make_cube(tmp_path / "cube"), options=RunOptions(network="isolated-net"))
    task = resolve_task(cube, "hello")
    fixed_names(runner, task, "cuberun-hello-0000aaaa")
    argv = runner.session_plan(task).create_argv
    assert argv[argv.index("--network"):argv.index("--network") + 2] == ["--network", "isolated-net"]
    assert next(r.to_json() for r in runner.policy(task).relaxations) == {"name": "network", "detail": "--network=isolated-net", "source": "cli"}


def test_startup_command_runs_in_a_shell(tmp_path: Path) -> None:
    """The one string survives /bin/sh exactly: the program sees each argument as built."""
    mount = tmp_path / "vf ws"
    (mount / "my names").mkdir(parents=True)
    (mount / "my names" / "o'brien \"jr\".txt").write_text("x")
    probe = tmp_path / "probe.py"
    probe.write_text("import json, os, sys\nprint(json.dumps([os.getcwd(), *sys.argv[1:]]))\n")
    args = [f"--name={mount}/my names/o'brien \"jr\".txt", "--x=$HOME `id` $(id) ; rm -rf /"]
    command = startup_command(["python3", str(probe), "hello", *args], mount=str(mount), workdir=str(tmp_path), in_tar=None,
                              out_tar="out.tar", outputs=["out dir"], output_dirs=["out dir"])
    proc = subprocess.run(["/bin/sh", "-c", command + "; exit 7"], capture_output=True, text=True, timeout=30, check=False)
    import json

    assert json.loads(proc.stdout) == [str(tmp_path), "hello", *args]
    assert proc.returncode == 0  # `exit $rc` ends the script with the task's code
    assert (mount / "out dir").is_dir() and (mount / "out.tar").is_file()
    failing = startup_command(["sh", "-c", "exit 3"], mount=str(mount), workdir=None, in_tar=None, out_tar=None, outputs=[], output_dirs=[])
    assert subprocess.run(["/bin/sh", "-c", failing], timeout=30, check=False).returncode == 3


def test_entrypoint_task_chain_and_options(tmp_path: Path) -> None:
    runner, cube = runner_for(make_cube(tmp_path / "cube"),
                              ["-Prunner.resources={cpu: 4, mem: 16g}", "-Prunner.group=mlperf", "-Prunner.vfolder=data",
                               "-Prunner.mount_point=/home/work/ws", "-Prunner.image=cr.backend.ai/mlperf/hello:1"],
                              RunOptions(gpus="2"))
    task = resolve_task(cube, "bye")
    fixed_names(runner, task, "cuberun-bye-1")
    plan = runner.session_plan(task, produced=["my names"], after="cuberun-hello-0")
    assert plan.command[:3] == ["python3", "/app/bye.py", "--name=/home/work/ws/my names/o'brien \"jr\".txt"]  # entrypoint: no task name
    assert plan.inputs == [] and plan.in_tar is None  # produced by the task before it in the chain
    argv = plan.create_argv
    assert argv[3] == "cr.backend.ai/mlperf/hello:1"
    assert argv[argv.index("-m") + 1] == "data:/home/work/ws"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-r"] == ["cpu=4", "mem=16g", "cuda.device=2"]
    assert argv[-4:] == ["--depends", "cuberun-hello-0", "-g", "mlperf"]


def test_gpu_forms_and_outside_paths(tmp_path: Path) -> None:
    runner, cube = runner_for(make_cube(tmp_path / "cube"), options=RunOptions(gpus="all"))
    with pytest.raises(UsageError, match="--gpus=all cannot be requested"):
        runner.session_plan(resolve_task(cube, "hello"))
    runner, cube = runner_for(make_cube(tmp_path / "cube"), options=RunOptions(gpus="device=0,1"))
    with pytest.raises(UsageError, match="devices cannot be chosen"):
        runner.session_plan(resolve_task(cube, "hello"))
    runner, cube = runner_for(make_cube(tmp_path / "cube"))
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(UsageError, match="is outside the workspace"):
        runner.session_plan(resolve_task(cube, "hello", {"name": str(outside)}))


def test_entrypoint_unknown_without_a_local_image(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    cube = load_cube(root, overrides=["runner.engine=/nonexistent/docker"])
    runner = make_runner(cube, "backendai", RunOptions(), ["runner.engine=/nonexistent/docker"])
    with pytest.raises(UsageError, match="ENTRYPOINT of cuberun/hello_world:0.1-backendai is unknown"):
        runner.run_steps(resolve_task(cube, "hello"))
    assert len(runner.run_steps(resolve_task(cube, "bye"))) == 5  # a task entrypoint needs no image


def test_names() -> None:
    assert session_name("cuberun", "train model/v2", "ab12cd34") == "cuberun-train-model-v2-ab12cd34"
    long = session_name("cuberun", "t" * 100, "ab12cd34")
    assert len(long) <= 64 and long.endswith("-ab12cd34")
    assert default_vfolder("hello world") == "cuberun-hello-world"


# -- watch / info output and the exit-code rules ------------------------------------------------------
WATCH_SUCCESS = """\
{'sessionId': 'f1', 'event': 'session_enqueued'}
\x1b[2K{'sessionId': 'f1', 'event': 'session_started'}
{'sessionId': 'f1', 'exitCode': 0, 'event': 'session_success'}
"""


@pytest.mark.parametrize(
    ("text", "client_exit", "expected"),
    [
        (WATCH_SUCCESS, 0, Verdict("success", 0)),
        ("{'sessionId': 'f1', 'exitCode': 3, 'event': 'session_failure'}\n", 3, Verdict("failure", 3, "batch session failed with exit code 3")),
        ("{'sessionId': 'f1', 'exitCode': -9, 'event': 'session_failure'}\n", 1, Verdict("failure", 137, "batch session failed with exit code 137")),
        ("{'sessionId': 'f1', 'event': 'session_failure'}\n", 1, Verdict("failure", 1, "batch session failed with exit code 1")),
        # the pitfalls: terminated or cancelled without a success event exits 0 -> not a success
        ("{'sessionId': 'f1', 'reason': 'user-requested', 'event': 'session_terminated'}\n", 0,
         Verdict("ended", None, "session ended (session_terminated) without a success event")),
        ("{'sessionId': 'f1', 'event': 'kernel_cancelled'}\n", 0, Verdict("ended", None, "session ended (kernel_cancelled) without a success event")),
        # exit 3 without a failure event: the client's --max-wait, not the task
        ("{'sessionId': 'f1', 'event': 'session_started'}\n", 3, Verdict("timeout", None, "no result before max_wait")),
        ('{"ok": false, "reason": "No matching items."}\n', 1, Verdict("unknown", None, "session watch found no active session of that name")),
        ("Traceback ...\nConnectionRefusedError\n", 1, Verdict("unknown", None, "session watch exited 1 without a result")),
    ],
)
def test_watch_verdicts(text: str, client_exit: int, expected: Verdict) -> None:
    events, no_match = parse_watch_output(text)
    assert watch_verdict(events, client_exit, no_match) == expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"status": "RUNNING", "result": "UNDEFINED"}, None),
        ({"status": "TERMINATED", "result": "SUCCESS", "status_data": '{"kernel": {"exit_code": 0}}'}, Verdict("success", 0)),
        ({"status": "TERMINATED", "result": "FAILURE", "status_data": '{"kernel": {"exit_code": 2}}'},
         Verdict("failure", 2, "session ended TERMINATED with result FAILURE, exit code 2")),
        ({"status": "CANCELLED", "result": "UNDEFINED", "status_info": "dependency-failed"},
         Verdict("failure", 1, "session ended CANCELLED (dependency-failed) with result UNDEFINED, exit code 1")),
        ({"status": "SessionStatus.ERROR", "result": "SessionResult.FAILURE", "status_data": {"error": {"exitCode": -15}}},
         Verdict("failure", 143, "session ended ERROR with result FAILURE, exit code 143")),
        # Backend.AI 26.9.6 (seen on the real test cluster): no result, the status info tells
        ({"status": "TERMINATED", "result": None, "status_info": "task-finished", "status_data": None}, Verdict("success", 0)),
        ({"status": "TERMINATED", "status_info": "task-failed", "status_data": None},
         Verdict("failure", 1, "session ended TERMINATED (task-failed) with result UNDEFINED, exit code 1")),
    ],
)
def test_info_verdicts(item: dict[str, Any], expected: Verdict | None) -> None:
    assert info_verdict(item) == expected


def test_exit_codes() -> None:
    assert exit_code_from(0, failed=False) == 0
    assert exit_code_from(0, failed=True) == 1
    assert exit_code_from(None, failed=True) == 1
    assert exit_code_from(-9, failed=True) == 137
    assert exit_code_from(42, failed=True) == 42


# -- unpacking the outputs -----------------------------------------------------------------------------
def _tar(path: Path, entries: dict[str, bytes | None], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)


def test_safe_extract_only_declared_outputs(tmp_path: Path) -> None:
    archive = tmp_path / "out.tar"
    _tar(archive, {"logs": None, "logs/a/b.txt": b"b", "chats/chat.txt": b"hi", "chats/other.txt": b"no", "../evil": b"x", "/etc/evil": b"x",
                   "names/alice.txt": b"overwrite?"}, {"logs/link": "/etc/passwd"})
    ws = tmp_path / "ws"
    ws.mkdir()
    written = safe_extract(archive, ws, ["chats/chat.txt", "logs"])
    assert sorted(written) == ["chats/chat.txt", "logs/a/b.txt"]
    assert (ws / "chats" / "chat.txt").read_text() == "hi"
    assert not (ws / "chats" / "other.txt").exists() and not (ws / "names").exists() and not (ws / "logs" / "link").exists()
    assert not (tmp_path / "evil").exists()


# -- availability ------------------------------------------------------------------------------------------
def test_unavailable_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_cube(tmp_path / "cube")
    runner, _ = runner_for(root, ["-Prunner.client=/nonexistent/backend.ai"])
    reason = runner.unavailable_reason()
    assert reason is not None and "Backend.AI client is not installed" in reason and "pip install 'cuberun[backendai]'" in reason
    client = tmp_path / "bin" / "backend.ai"
    client.parent.mkdir()
    client.write_text("#!/bin/sh\nexit 0\n")
    client.chmod(0o755)
    for var in ("BACKEND_ENDPOINT", "BACKEND_ACCESS_KEY", "BACKEND_SECRET_KEY", "BACKEND_ENDPOINT_TYPE", "MY_AK"):
        monkeypatch.delenv(var, raising=False)
    runner, _ = runner_for(root, [f"-Prunner.client={client}"])
    assert runner.unavailable_reason() == ("no Backend.AI endpoint is configured. Hint: set BACKEND_ENDPOINT (and BACKEND_ACCESS_KEY, "
                                           "BACKEND_SECRET_KEY), or -Prunner.endpoint=URL")
    monkeypatch.setenv("BACKEND_ENDPOINT", "https://api.example.org")
    runner, _ = runner_for(root, [f"-Prunner.client={client}", "-Prunner.access_key_env=MY_AK"])
    assert runner.unavailable_reason() == "MY_AK is not set (the Backend.AI keypair). Hint: export MY_AK=..., or use endpoint_type: session"
    monkeypatch.setenv("MY_AK", "AKIA")
    monkeypatch.setenv("BACKEND_SECRET_KEY", "s")
    assert runner.unavailable_reason() is None
    env = runner.client_env()
    assert env["BACKEND_ACCESS_KEY"] == "AKIA" and "BACKEND_ACCESS_KEY" not in runner.public_env()


def test_dry_run_cli(tmp_path: Path) -> None:
    import os
    import sys

    root = make_cube(tmp_path / "cube")
    env = {**os.environ, "CUBERUN_SETTINGS": str(tmp_path / "settings.yaml"), "MLCUBE_SYSTEM_SETTINGS": str(tmp_path / "none.yaml")}
    proc = subprocess.run([sys.executable, "-m", "cuberun", "run", f"--mlcube={root}", "--platform=backendai", "--task=hello", "--dry-run", *FIXED],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "backend.ai vfolder info cuberun-hello-world"
    create = next(line for line in lines if " session create " in line)
    argv = shlex.split(create)
    assert argv[argv.index("-c") + 1].startswith("cd /mlcube_ws || exit 125; ")
    assert "HF_TOKEN=<redacted>" in argv and "t0ps3cret" not in proc.stdout
    assert lines[-1] == ("# hello: policy: relaxed: network: not isolated: Backend.AI sessions keep the cluster's network "
                         "(no API option turns it off) (from runner); writable-inputs: the inputs are unpacked into the read-write vfolder (from runner)")


def test_a_manager_that_refuses_every_call_is_lost_not_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the watch ended, `session info` refused (connection refused) for MANAGER_GRACE:
    ManagerLost names the session and how to remove it, without polling for INFO_GRACE."""
    from cuberun.process import Captured
    from cuberun.runners.backendai import sessions as bai_mod

    runner, cube = runner_for(make_cube(tmp_path / "c"))
    task = resolve_task(cube, "hello", {})
    plan = bai_mod.SessionPlan(task, "cuberun-hello-x", [], "", [], [], None, None, [], [], session_id="c4910666-08a4-4a5f-b5be-556687189f50")
    calls: list[tuple[str, ...]] = []
    refused = "ai.backend.client.exceptions.BackendClientError: Request to the API endpoint has failed.\nConnectionRefusedError(111)"

    def call(*args: str, **kwargs: Any) -> Captured:
        calls.append(args)
        return Captured(1, "", refused)

    clock = [0.0]
    monkeypatch.setattr(runner, "_call", call)
    monkeypatch.setattr(bai_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(bai_mod.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    class NoCancel:
        requested = False

    with pytest.raises(bai_mod.ManagerLost, match=r"lost contact with the Backend.AI manager .* session cuberun-hello-x") as exc:
        runner._confirm(plan, NoCancel())
    assert "session rm c4910666-08a4-4a5f-b5be-556687189f50" in (exc.value.hint or "")
    assert clock[0] < bai_mod.INFO_GRACE and len(calls) <= 10


def test_watch_events_show_the_wait_until_the_session_starts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cuberun import progress
    from cuberun.runners.backendai.session import WAITING_STATES

    monkeypatch.setenv("CUBERUN_PROGRESS", "plain")
    monkeypatch.setenv("CUBERUN_PROGRESS_INTERVAL", "0")
    assert watch_state("{'sessionId': 'f1', 'event': 'session_enqueued'}") == ("PENDING", "queued")
    assert watch_state('{"sessionId": "f1", "event": "kernel_pulling"}') == ("PULLING", "the agent pulls the image")
    assert watch_state("{'event': 'session_started'}") == ("RUNNING", "")
    assert watch_state("{'event': 'session_success', 'exitCode': 0}") == ("ENDED", "")
    assert watch_state("Traceback (most recent call last):") is None and watch_state("{'ok': False}") is None
    wait = progress.Waiting("Backend.AI session s-1 (task 'hello') waits to start", WAITING_STATES)
    sink = progress.line_sink(lambda line: wait.state(*found) if (found := watch_state(line)) else None)
    stream = (b"{'sessionId': 'f1', 'event': 'session_enqueued'}\n{'sessionId': 'f1', 'event': 'session_scheduled'}\n"
              b"{'sessionId': 'f1', 'event': 'kernel_pulling'}\n{'sessionId': 'f1', 'event': 'session_started'}\n"
              b"task output is not an event\n{'sessionId': 'f1', 'exitCode': 0, 'event': 'session_success'}\n")
    for i in range(0, len(stream), 5):  # in pieces, as a pipe delivers it
        sink.write(stream[i : i + 5])
    assert not wait.active  # taken down when the session started
    lines = [ln.rsplit(" (", 1)[0] for ln in capsys.readouterr().err.splitlines()]
    assert lines == ["cuberun: Backend.AI session s-1 (task 'hello') waits to start: PENDING: queued",
                     "cuberun: Backend.AI session s-1 (task 'hello') waits to start: SCHEDULED: an agent was chosen",
                     "cuberun: Backend.AI session s-1 (task 'hello') waits to start: PULLING: the agent pulls the image"]
