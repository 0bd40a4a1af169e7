"""The Backend.AI runner end to end, with no Backend.AI manager (none can run here).

What is real and what is simulated:

- Real: cuberun itself (`python -m cuberun run --platform=backendai`), the archives it packs and
  unpacks, and the startup command, which the simulated client runs with /bin/sh exactly as an
  agent would (`/bin/sh -c <command>`), in a directory standing in for the mounted vfolder.
- Simulated (tests/backendai_fake.py): the `backend.ai` executable. It records argv, keeps
  vfolders as directories and sessions in a JSON file, and imitates the client's observable
  behaviour (messages, event output, exit codes, refusals). Scenarios cover the `session watch`
  pitfalls: terminated without a success event, "No matching items", --max-wait (exit 3).
- Real client, fake manager (`test_real_client_*`): when backend.ai-client is installed (in
  $CUBERUN_TEST_BACKENDAI_CLIENT, on the PATH, or in $CUBERUN_TEST_STATE/backendai-venv), the
  real `backend.ai session create`/`logs`/`rm` run with the argument lists cuberun builds, against
  an HTTP server on 127.0.0.1 that answers the three REST calls they make (GET /, POST /session,
  GET /session/NAME/logs, DELETE /session/NAME) and records the requests: this checks that the
  real client accepts cuberun's options and sends the intended request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests import backendai_fake
from tests.backends import skip_or_fail
from tests.conftest import CLI, run_records

SECRET = "sk-very-secret-0042"
ACCESS = "AKTESTACCESS"
APP = """\
import os, pathlib, sys
task, *rest = sys.argv[1:]
args = dict(a[2:].split("=", 1) for a in rest)
print("task", task, "cwd", os.getcwd(), flush=True)
if task == "hello":
    name = open(args["name"]).read().strip()
    pathlib.Path(args["chat"]).open("a").write(f"Hi, {name}\\n")
elif task == "shout":
    out = pathlib.Path(args["loud"])
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "sub" / "x.txt").write_text(open(args["chat"]).read().upper())
sys.exit(int(os.environ.get("TASK_EXIT", "0")))
"""
CUBE = """\
name: greet
docker:
  image: localhost/cuberun-test/greet:0.1
  env_args: {API_TOKEN: tok-123, GREETING: hi}
platform: {host_memory_gb: 2}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: "my names/o'brien.txt"}}
      outputs: {chat: {type: file, default: "my chats/chat with \\"o'brien\\".txt"}}
  shout:
    parameters:
      inputs: {chat: {type: file, default: "my chats/chat with \\"o'brien\\".txt"}}
      outputs: {loud: {type: directory, default: loud/}}
"""


class Fake:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "fake-state"
        self.exe = backendai_fake.install(tmp / "fake-bin", self.state)
        self.cube = tmp / "cube"
        (self.cube / "workspace" / "my names").mkdir(parents=True)
        (self.cube / "workspace" / "my names" / "o'brien.txt").write_text("O'Brien\n")
        (self.cube / "mlcube.yaml").write_text(CUBE)
        (self.cube / "app.py").write_text(APP)
        self.vfolder = self.state / "vfolders" / "cuberun-greet"

    def scenario(self, **values: Any) -> None:
        (self.state / "scenario.json").write_text(json.dumps(values))

    def params(self, *extra: str) -> list[str]:
        return [f"--mlcube={self.cube}", "--platform=backendai", f"-Prunner.client={self.exe}", f"-Prunner.mount_point={self.vfolder}",
                f"-Prunner.entrypoint=python3 {self.cube / 'app.py'}", f"-Prunner.workdir={self.cube}", "-Prunner.log_interval=0.2",
                "-Prunner.access_key_env=MY_BAI_ACCESS", *extra]

    def env(self) -> dict[str, str]:
        return {"BACKEND_ENDPOINT": "http://127.0.0.1:9/", "MY_BAI_ACCESS": ACCESS, "BACKEND_SECRET_KEY": SECRET}

    def calls(self) -> list[list[str]]:
        return [c["argv"] for c in backendai_fake.calls(self.state)]

    def sessions(self) -> dict[str, Any]:
        return json.loads((self.state / "sessions.json").read_text())

    def records(self) -> list[dict[str, Any]]:
        return run_records(self.cube / "workspace")


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def test_chain_runs_and_outputs_come_back(cli: CLI, fake: Fake) -> None:
    proc = cli("run", *fake.params("--task=hello,shout"), env=fake.env())
    assert proc.returncode == 0, proc.stderr
    ws = fake.cube / "workspace"
    assert (ws / "my chats" / "chat with \"o'brien\".txt").read_text() == "Hi, O'Brien\n"
    assert (ws / "loud" / "sub" / "x.txt").read_text() == "HI, O'BRIEN\n"
    assert "task hello cwd " + str(fake.cube) in proc.stdout  # the session log is streamed
    # the wait before the task runs is shown from the session's events (a line at each new state)
    waits = [ln for ln in proc.stderr.splitlines() if "waits to start" in ln]
    assert [re.sub(r"cuberun-\S+", "NAME", ln.rsplit(" (", 1)[0]) for ln in waits] == [
        "cuberun: Backend.AI session NAME (task 'hello') waits to start: PENDING: queued",
        "cuberun: Backend.AI session NAME (task 'shout') waits to start: PENDING: queued"], proc.stderr
    calls = fake.calls()
    kinds = [" ".join(c[:2]) for c in calls]
    assert kinds[:2] == ["vfolder info", "vfolder create"]
    assert kinds.count("session create") == 2 and kinds.count("vfolder upload") == 1  # shout's input comes from hello, in the vfolder
    creates = [c for c in calls if c[:2] == ["session", "create"]]
    first = json.loads((fake.state / "sessions.json").read_text())
    hello = next(s for s in first.values() if "-hello-" in s["name"])
    assert creates[1][creates[1].index("--depends") + 1] == hello["id"]
    assert all(s["type"] == "batch" and s["enqueue_only"] for s in first.values())
    assert hello["resources"] == ["mem=2g"] and hello["env"] == {"API_TOKEN": "tok-123", "GREETING": "hi"}
    # keys: the client gets them from its environment; records and logs never contain the secret
    entries = backendai_fake.calls(fake.state)
    assert all(e["access_key"] == ACCESS and e["secret_key_set"] and e["endpoint"] == "http://127.0.0.1:9/" for e in entries)
    for record in fake.records():
        text = json.dumps(record)
        assert SECRET not in text and "tok-123" not in text and "API_TOKEN=<redacted>" in text
        assert record["status"] == "succeeded" and record["details"]["session"].startswith("cuberun-")
    # the transfer archives are gone from the vfolder; the outputs stay there for later tasks
    assert not list(fake.vfolder.glob(".cuberun-*.tar"))
    assert (fake.vfolder / "loud" / "sub" / "x.txt").is_file()
    # later runs are up to date (execute's chain logic records shout's input as it was before the
    # chain ran, so shout runs once more first): then nothing is submitted
    again = cli("run", *fake.params("--task=hello,shout"), env=fake.env())
    assert again.returncode == 0 and "skipping task 'hello'" in again.stderr
    before = len(fake.calls())
    third = cli("run", *fake.params("--task=hello,shout"), env=fake.env())
    assert third.returncode == 0 and "skipping task 'shout'" in third.stderr
    assert not [c for c in fake.calls()[before:] if c[:2] == ["session", "create"]]


def test_task_exit_code_passes_through_and_the_chain_stops(cli: CLI, fake: Fake) -> None:
    proc = cli("run", *fake.params("--task=hello,shout", "-Prunner.env_args={TASK_EXIT: 3}"), env=fake.env())
    assert proc.returncode == 3, proc.stderr
    assert "batch session failed with exit code 3" in proc.stderr
    rm = [c for c in fake.calls() if c[:2] == ["session", "rm"]]
    assert rm and "-shout-" in rm[0][2]  # the dependent session is terminated
    statuses = {s["name"].split("-")[1]: s["status"] for s in fake.sessions().values()}
    assert statuses == {"hello": "TERMINATED", "shout": "CANCELLED"}
    records = {r["task"]: r for r in fake.records()}
    assert records["hello"]["status"] == "failed" and records["hello"]["exit_code"] == 3
    assert records["shout"]["status"] == "cancelled"


@pytest.mark.parametrize("mode", ["terminated-only", "no-match"])
def test_watch_without_a_result_is_confirmed_by_session_info(cli: CLI, fake: Fake, mode: str) -> None:
    fake.scenario(watch=mode)
    ok = cli("run", *fake.params("--task=hello"), env=fake.env())
    assert ok.returncode == 0, ok.stderr
    assert any(c[:4] == ["--output", "json", "session", "info"] for c in fake.calls())
    fake.scenario(watch=mode)
    bad = cli("run", *fake.params("--task=hello", "--force", "-Prunner.env_args={TASK_EXIT: 5}"), env=fake.env())
    assert bad.returncode == 5, bad.stderr
    assert "session ended TERMINATED with result FAILURE, exit code 5" in bad.stderr


def test_max_wait_is_not_a_task_exit_3(cli: CLI, fake: Fake) -> None:
    fake.scenario(watch="timeout")
    proc = cli("run", *fake.params("--task=hello", "-Prunner.max_wait=30"), env=fake.env())
    assert proc.returncode == 124, proc.stderr
    assert "gave no result within 30 s" in proc.stderr
    assert [c for c in fake.calls() if c[:2] == ["session", "rm"]]


def test_create_refused_and_unavailable(cli: CLI, fake: Fake) -> None:
    fake.scenario(create_fail="Unknown image localhost/cuberun-test/greet:0.1-backendai")
    proc = cli("run", *fake.params("--task=hello"), env=fake.env())
    assert proc.returncode == 125
    assert "backend.ai session create localhost/cuberun-test/greet:0.1-backendai (task 'hello') failed (exit 1)" in proc.stderr
    assert "backend.ai admin image list" in proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    missing = cli("run", *fake.params("--task=hello"), env={**env, "BACKEND_ENDPOINT": ""})
    assert missing.returncode == 125
    assert "cuberun: error: no Backend.AI endpoint is configured. Hint: set BACKEND_ENDPOINT" in missing.stderr
    noclient = cli("run", *fake.params("--task=hello", "-Prunner.client=/nonexistent/backend.ai"), env=fake.env())
    assert noclient.returncode == 125 and "pip install 'cuberun[backendai]'" in noclient.stderr


def test_ctrl_c_terminates_the_session(fake: Fake, cli_env: dict[str, str]) -> None:
    fake.scenario(watch="hang")
    proc = subprocess.Popen([sys.executable, "-m", "cuberun", "run", *fake.params("--task=hello")], env={**cli_env, **fake.env()},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (fake.state / "watch-started").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert (fake.state / "watch-started").exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    rm = [c for c in fake.calls() if c[:2] == ["session", "rm"]]
    assert rm and rm[0][2].startswith("cuberun-hello-")
    assert all(s["status"] in ("TERMINATED", "CANCELLED") for s in fake.sessions().values())


# -- the real client against an in-test HTTP server ----------------------------------------------------
def _real_client() -> str | None:
    candidates = [os.environ.get("CUBERUN_TEST_BACKENDAI_CLIENT"), shutil.which("backend.ai"),
                  str(Path(os.environ.get("CUBERUN_TEST_STATE") or "/tmp/cuberun-test-state") / "backendai-venv" / "bin" / "backend.ai")]
    for c in candidates:
        if c and os.access(c, os.X_OK) and "fake-bin" not in c:
            return c
    return None


class _Manager(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": json.loads(raw) if raw else None}
        type(self).requests.append(entry)
        return entry

    def do_GET(self) -> None:
        entry = self._record()
        if entry["path"] in ("/", ""):
            self._reply(200, {"version": "v7.20230615", "manager": "23.09.10"})
        elif entry["path"].startswith("/session/") and entry["path"].split("?")[0].endswith("/logs"):
            self._reply(200, {"result": {"logs": "task hello done\n"}})
        else:
            self._reply(404, {"type": "https://api.backend.ai/probs/not-found", "title": "not found"})

    def do_POST(self) -> None:
        entry = self._record()
        if entry["path"].split("?")[0] == "/session":
            self._reply(201, {"sessionId": str(uuid.uuid4()), "sessionName": entry["body"].get("name"), "status": "PENDING",
                              "servicePorts": [], "created": True})
        else:
            self._reply(404, {"type": "https://api.backend.ai/probs/not-found", "title": "not found"})

    def do_DELETE(self) -> None:
        self._record()
        self._reply(200, {"stats": {}})


@pytest.fixture
def manager() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Manager.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Manager)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Manager.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_real_client_accepts_the_commands(fake: Fake, manager: tuple[str, list[dict[str, Any]]], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    client = _real_client()
    if client is None:
        skip_or_fail("backend.ai-client is not installed (python -m venv $CUBERUN_TEST_STATE/backendai-venv && "
                    "$CUBERUN_TEST_STATE/backendai-venv/bin/pip install 'backend.ai-client==23.9.10' 'yarl<1.10')")
    url, requests = manager
    from cuberun.execute import make_runner
    from cuberun.resolve import resolve_task
    from cuberun.runners.backendai import BackendAIRunner
    from cuberun.runners.backendai.sessions import _UUID
    from cuberun.runners.base import RunOptions
    from cuberun.spec.load import load_cube

    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "none.yaml"))
    params = [p[2:] for p in fake.params() if p.startswith("-P")]
    params = [p for p in params if not p.startswith(("runner.client=", "runner.mount_point="))] + [f"runner.client={client}"]
    cube = load_cube(fake.cube, overrides=params)
    runner = make_runner(cube, "backendai", RunOptions(gpus="1"), params)
    assert isinstance(runner, BackendAIRunner)
    plan = runner.session_plan(resolve_task(cube, "hello"), after="cuberun-previous-00000000")
    env = {**os.environ, "BACKEND_ENDPOINT": url, "BACKEND_ACCESS_KEY": ACCESS, "BACKEND_SECRET_KEY": SECRET, "BACKEND_ENDPOINT_TYPE": "api"}
    run = subprocess.run(plan.real_create_argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _UUID.search(run.stdout + run.stderr), run.stderr  # cuberun reads the session id from this message
    create = next(r for r in requests if r["method"] == "POST")
    body = create["body"]
    assert body["image"] == "localhost/cuberun-test/greet:0.1-backendai"
    assert body["type"] == "batch" and body["enqueueOnly"] is True and body["name"] == plan.name
    assert body["startupCommand"] == plan.startup
    assert body["config"]["mounts"] == ["cuberun-greet"] and body["config"]["mount_map"] == {"cuberun-greet": "/mlcube_ws"}
    assert body["config"]["resources"] == {"mem": "2g", "cuda.device": "1"}
    assert body["config"]["environ"] == {"API_TOKEN": "tok-123", "GREETING": "hi"}
    assert body["dependencies"] == ["cuberun-previous-00000000"]
    auth = create["headers"].get("Authorization", "")
    assert auth.startswith(f"BackendAI signMethod=HMAC-SHA256, credential={ACCESS}:") and SECRET not in json.dumps(create)
    logs = subprocess.run([client, "session", "logs", plan.name], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert logs.returncode == 0 and "task hello done" in logs.stdout  # cuberun copies stdout only
    rm = subprocess.run([client, "session", "rm", plan.name], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert rm.returncode == 0, rm.stderr
    assert any(r["method"] == "DELETE" and r["path"].startswith(f"/session/{plan.name}") for r in requests)


def test_fake_client_is_strict_about_options(fake: Fake) -> None:
    """The simulated client rejects unknown options like click does, so a typo in cuberun's
    command lines fails these tests rather than passing silently."""
    env = {**os.environ, "FAKE_BAI_STATE": str(fake.state)}
    proc = subprocess.run([str(fake.exe), "session", "create", "img", "--bogus", "1"], env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 2 and "No such option: --bogus" in proc.stderr
    assert textwrap.dedent(backendai_fake.__doc__ or "").strip()
