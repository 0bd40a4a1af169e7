"""The ssh runner for real: `python -m cuberun` against the test sshd on 127.0.0.1:2222
(`cuberun-local`) and the second host in the cuberun-h2 network namespace (`cuberun-h2`).

Both "hosts" share this machine's filesystem, so every remote root is a distinct directory under
/tmp/cuberun-remote-<unique>/ (removed at the end), and a test can look at the remote side
directly (the remote task's pid, the remote cube directory). The remote cuberun is installed by
the runner itself (`cuberun: venv`) once per host and session. The ssh control sockets live in a
directory of this session; the masters are closed at the end (only those, by their socket).
Only loopback and the namespace are contacted; pip reads the machine's local package index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backends import require_backend
from tests.conftest import CLI, EXAMPLES, run_records
from tests.integration import cubes, retries

pytestmark = pytest.mark.ssh

HOSTS = ("cuberun-local", "cuberun-h2")
LOCAL_INDEX = "/opt/pypi/simple"  # the test machines' offline package index (no traffic beyond loopback)
MiB = 1 << 20


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def ssh_details() -> dict[str, Any]:
    details = require_backend("ssh")
    for key in ("ssh_config", "known_hosts"):
        assert Path(details[key]).is_file(), details
    return details


@pytest.fixture(scope="session")
def remote_base(ssh_details: dict[str, Any]) -> Iterator[Path]:
    base = Path(f"/tmp/cuberun-remote-{uuid.uuid4().hex[:10]}")
    base.mkdir(mode=0o700)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def control_dir(ssh_details: dict[str, Any]) -> Iterator[Path]:
    """Short (unix sockets have ~100 bytes) and private; at the end close our masters only."""
    path = Path(tempfile.mkdtemp(prefix="crssh-", dir="/tmp"))
    yield path
    for sock in path.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "cuberun-test-master"], capture_output=True, timeout=20, check=False)
    shutil.rmtree(path, ignore_errors=True)


def platform_entry(host: str, details: dict[str, Any], base: Path, cache: Path, **extra: Any) -> dict[str, Any]:
    remote_env = {
        "CUBERUN_CACHE_DIR": str(cache),  # managed envs shared with the local tests (same filesystem)
        "CUBERUN_SETTINGS": str(base / "remote-settings.yaml"),
        "MLCUBE_SYSTEM_SETTINGS": str(base / "no-mlcube.yaml"),
    }
    if Path(LOCAL_INDEX).is_dir():
        remote_env["PIP_INDEX_URL"] = "file://" + LOCAL_INDEX
    entry = {
        "runner": "ssh",
        "host": host,
        "ssh_config": details["ssh_config"],
        "cuberun": "venv",
        "remote_root": str(base / host),
        "remote_env": remote_env,
    }
    entry.update(extra)
    return entry


class SSH:
    """Runs the CLI with a settings file whose platforms reach the test hosts."""

    def __init__(self, cli: CLI, settings: Path, env: dict[str, str], details: dict[str, Any], base: Path, cache: Path) -> None:
        self.cli, self.settings, self.env, self.details, self.base, self.cache = cli, settings, env, details, base, cache
        self.platforms: dict[str, dict[str, Any]] = {}
        for host in HOSTS:
            self.add(host, host)

    def add(self, name: str, host: str, **extra: Any) -> str:
        self.platforms[name] = platform_entry(host, self.details, self.base, self.cache, **extra)
        self.settings.parent.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(yaml.safe_dump({"platforms": self.platforms}), encoding="utf-8")
        return name

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, env=self.env, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env, "CUBERUN_SETTINGS": str(self.settings)}
        return subprocess.Popen([sys.executable, "-m", "cuberun", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def ssh(cli: CLI, cli_env: dict[str, str], cache_dir: Path, ssh_details: dict[str, Any], remote_base: Path, control_dir: Path) -> SSH:
    env = {"CUBERUN_SSH_CONTROL_DIR": str(control_dir)}
    for var in ("CUBERUN_CACHE_DIR", "MLCUBE_SYSTEM_SETTINGS"):
        env[var] = cli_env[var]
    return SSH(cli, Path(cli_env["CUBERUN_SETTINGS"]), env, ssh_details, remote_base, cache_dir)


# -------------------------------------------------------------------------------- helpers


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(".cuberun", "__pycache__", "*.pyc", "matmul.txt", "chats"))
    return target


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


def remote_of(record: dict[str, Any]) -> dict[str, Any]:
    details = record.get("details") or {}
    remote = details.get("remote")
    assert isinstance(remote, dict), record
    return remote


def check_remote_record(record: dict[str, Any], task: str, host: str, platform: str, exit_code: int = 0) -> dict[str, Any]:
    assert record["task"] == task and record["runner"] == "ssh" and record["platform"] == platform, record
    assert record["exit_code"] == exit_code, record
    assert record["status"] == ("succeeded" if exit_code == 0 else "failed"), record
    remote = remote_of(record)
    assert remote["host"] == host and remote["exit_code"] == exit_code
    assert remote["run_id"], remote
    # the remote run's own record, fetched next to the local one
    fetched = Path(remote["record"])
    assert fetched.parent == Path(record["log"]).parent and (fetched / "record.json").is_file()
    remote_record = json.loads((fetched / "record.json").read_text())
    assert remote_record["run_id"] == remote["run_id"] and remote_record["task"] == task and remote_record["exit_code"] == exit_code
    assert remote["hostname"] == remote_record.get("host")
    return remote


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -------------------------------------------------------------------------------- examples


@pytest.mark.parametrize("host", HOSTS)
def test_hello_world_remote(ssh: SSH, tmp_path: Path, host: str) -> None:
    cube = copy_example("hello_world", tmp_path)
    ws = cube / "workspace"
    ok(ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={host}"))
    ok(ssh("run", f"--mlcube={cube}", "--task=bye", f"--platform={host}"))
    assert (ws / "chats" / "chat_with_alice.txt").read_text() == "Hi, Alice! Nice to meet you.\nBye, Alice! Talk to you soon.\n"
    hello, bye = records(ws)
    first = check_remote_record(hello, "hello", host, host)
    check_remote_record(bye, "bye", host, host)
    assert "Hi, Alice!" in Path(hello["log"]).read_text()  # the remote output, streamed into the local log
    # the remote cube copy holds the sources but none of the local records
    remote_cube = Path(first["cube_dir"])
    assert (remote_cube / "hello_world.py").is_file() and (remote_cube / "mlcube.yaml").is_file()
    assert not (remote_cube / "workspace" / ".cuberun" / "runs" / hello["run_id"]).exists()
    assert str(remote_cube).startswith(str(ssh.base / host))


@pytest.mark.parametrize("host", HOSTS)
def test_matmul_remote(ssh: SSH, tmp_path: Path, host: str) -> None:
    cube = copy_example("matmul", tmp_path)
    proc = ok(ssh("run", f"--mlcube={cube}", f"--platform={host}"))
    out = cube / "workspace" / "matmul.txt"
    assert out.is_file() and out.stat().st_size > 0, proc.stderr
    (record,) = records(cube / "workspace")
    remote = check_remote_record(record, "matmul", host, host)
    assert remote["upload"]["files"] >= 1 and remote["download"]["files"] >= 1


def test_third_party_cube_remote(ssh: SSH, tmp_path: Path) -> None:
    """A MedPerf-style cube: Dockerfile ENTRYPOINT only (no local: section), chained tasks."""
    cube = cubes.medperf_chain_cube(tmp_path)
    ok(ssh("run", f"--mlcube={cube}", "--task=prepare,infer,evaluate", "--platform=cuberun-h2"))
    ws = cube / "workspace"
    assert (ws / "results.yaml").read_text() == "accuracy: 0.5\ncases: 2\n"
    assert json.loads((ws / "predictions" / "predictions.json").read_text()) == {"case1": 6, "case2": 15}
    assert [r["task"] for r in records(ws)] == ["prepare", "infer", "evaluate"]
    for record in records(ws):
        check_remote_record(record, record["task"], "cuberun-h2", "cuberun-h2")


# -------------------------------------------------------------------------------- arguments


def test_overrides_with_spaces_quotes_and_shell_characters(ssh: SSH, tmp_path: Path) -> None:
    root = tmp_path / "my cubes 'x'"
    root.mkdir()
    cube = copy_example("hello_world", root)
    ws = cube / "workspace"
    name_rel = "my names/it's $(touch PWNED); `touch PWNED` & a.txt"
    (ws / name_rel).parent.mkdir(parents=True)
    (ws / name_rel).write_text("Zoë\n")
    chat_rel = 'chats dir/o"k; $(x) it\'s.txt'
    external = tmp_path / "outside dir; $(touch PWNED)"
    external.mkdir()
    (external / "bob's name.txt").write_text("Bob\n")
    ext_chat = tmp_path / "external out" / "chat 'ext'.txt"
    ok(ssh("run", f"--mlcube={cube}", "--task=hello", "--platform=cuberun-local", f"name={name_rel}", f"chat={chat_rel}"))
    assert (ws / chat_rel).read_text() == "Hi, Zoë! Nice to meet you.\n"
    ok(ssh("run", f"--mlcube={cube}", "--task=hello", "--platform=cuberun-local", "name=" + str(external / "bob's name.txt"),
           f"chat={ext_chat}"))
    assert ext_chat.read_text() == "Hi, Bob! Nice to meet you.\n"
    record = records(ws)[-1]
    assert record["overrides"]["chat"] == str(ext_chat)
    check_remote_record(record, "hello", "cuberun-local", "cuberun-local")
    assert not list(tmp_path.rglob("PWNED")) and not list(ssh.base.rglob("PWNED")) and not (Path.home() / "PWNED").exists()


def test_task_exit_code_passes_through(ssh: SSH, tmp_path: Path) -> None:
    cube = cubes.write(tmp_path / "failing", {
        "mlcube.yaml": cubes.dedent("""
            name: failing
            local: {command: python3 fail.py}
            tasks:
              check:
                parameters:
                  inputs: {data: {type: file, default: data.txt}}
                  outputs: {report: {type: file, default: report.txt}}
            """),
        "fail.py": "import sys\nprint('checking', sys.argv[1:])\nopen(sys.argv[-1].split('=', 1)[1], 'w').write('partial\\n')\nsys.exit(3)\n",
        "workspace/data.txt": "x\n",
    })
    proc = ssh("run", f"--mlcube={cube}", "--platform=cuberun-local")
    assert proc.returncode == 3, proc.stderr
    assert "failed with exit code 3 on cuberun-local" in error_line(proc)
    (record,) = records(cube / "workspace")
    check_remote_record(record, "check", "cuberun-local", "cuberun-local", exit_code=3)
    assert (cube / "workspace" / "report.txt").read_text() == "partial\n"  # what the failed task left is fetched too


# -------------------------------------------------------------------------------- sync


@pytest.mark.slow
def test_unchanged_200mb_input_is_not_sent_again(ssh: SSH, tmp_path: Path) -> None:
    cube = cubes.write(tmp_path / "big", {
        "mlcube.yaml": cubes.dedent("""
            name: big
            local: {command: python3 size.py}
            tasks:
              size:
                parameters:
                  inputs: {data: {type: directory, default: data}}
                  outputs: {report: {type: file, default: report.txt}}
            """),
        "size.py": cubes.dedent("""
            import os, sys
            args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
            total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args["data"]) for f in fs)
            open(args["report"], "w").write(f"{total}\\n")
            """),
    })
    data = cube / "workspace" / "data"
    data.mkdir(parents=True)
    with open(data / "blob.bin", "wb") as fh:
        for _ in range(200):
            fh.write(os.urandom(MiB))
    ok(ssh("run", f"--mlcube={cube}", "--platform=cuberun-local"))
    ok(ssh("run", f"--mlcube={cube}", "--platform=cuberun-local", "--force"))
    assert (cube / "workspace" / "report.txt").read_text() == f"{200 * MiB}\n"
    first, second = (remote_of(r) for r in records(cube / "workspace"))
    assert first["upload"]["transferred_bytes"] >= 200 * MiB
    assert second["upload"]["files"] == 0 and second["upload"]["transferred_bytes"] == 0
    assert second["upload"]["bytes_sent"] < 64 * 1024, second["upload"]  # the file list, not the data
    print(f"\n200 MiB input: first upload {first['upload']['seconds']} s, unchanged second upload {second['upload']['seconds']} s")


def size_cube(root: Path) -> Path:
    return cubes.write(root, {
        "mlcube.yaml": cubes.dedent("""
            name: big
            local: {command: python3 size.py}
            tasks:
              size:
                parameters:
                  inputs: {data: {type: directory, default: data}}
                  outputs: {report: {type: file, default: report.txt}}
            """),
        "size.py": cubes.dedent("""
            import os, sys
            args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
            total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args["data"]) for f in fs)
            open(args["report"], "w").write(f"{total}\\n")
            """),
    })


def test_transfers_show_their_progress(ssh: SSH, tmp_path: Path) -> None:
    """rsync's overall progress as plain lines (stderr is a pipe here): bytes done of the total and
    the rate, a line for every update with the interval at 0; nothing with --quiet."""
    cube = size_cube(tmp_path / "prog")
    data = cube / "workspace" / "data"
    data.mkdir(parents=True)
    (data / "blob.bin").write_bytes(os.urandom(6 * MiB))
    env = {**ssh.env, "CUBERUN_PROGRESS_INTERVAL": "0"}
    proc = ok(ssh.cli("run", f"--mlcube={cube}", "--platform=cuberun-local", env=env, timeout=600))
    assert (cube / "workspace" / "report.txt").read_text() == f"{6 * MiB}\n"
    up = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: uploading inputs of task 'size' to cuberun-local: ")]
    byte_count = r"\d+(?:\.\d)? (?:B|KiB|MiB)"
    shape = re.compile(rf": ({byte_count})(?: of ({byte_count}))? \(({byte_count})/s\) \(\d+ s\)$")
    shown = [m for m in map(shape.search, up) if m]
    assert shown, proc.stderr
    # the end: all 6 MiB sent, of a total estimated from rsync's whole percentage (the sources,
    # sent before by configure and unchanged, count in the total but are not sent again)
    assert shown[-1].group(1) == "6.0 MiB" and shown[-1].group(2) in ("6.0 MiB", "6.1 MiB"), up
    down = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: downloading outputs of task 'size' from cuberun-local: ")]
    assert down and shape.search(down[-1]), proc.stderr
    (data / "blob.bin").write_bytes(os.urandom(6 * MiB))
    quiet = ok(ssh.cli("run", f"--mlcube={cube}", "--platform=cuberun-local", "-q", env=env, timeout=600))
    assert "uploading" not in quiet.stderr and "downloading" not in quiet.stderr, quiet.stderr
    assert remote_of(records(cube / "workspace")[-1])["upload"]["transferred_bytes"] >= 6 * MiB  # it was sent, quietly


# -------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_the_remote_task(ssh: SSH, tmp_path: Path) -> None:
    pid_file = tmp_path / "remote-task.pid"
    cube = cubes.write(tmp_path / "sleeper", {
        "mlcube.yaml": cubes.dedent("""
            name: sleeper
            local: {command: python3 sleep.py}
            tasks:
              nap:
                parameters:
                  inputs: {seconds: {type: file, default: seconds.txt}}
                  outputs: {done: {type: file, default: done.txt}}
            """),
        "sleep.py": cubes.dedent(f"""
            import os, sys, time
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            print("sleeping", flush=True)
            time.sleep(300)
            """),
        "workspace/seconds.txt": "300\n",
    })
    proc = ssh.popen("run", f"--mlcube={cube}", "--platform=cuberun-local")
    task_pid = None
    try:
        wait_for(lambda: (pid_file.is_file() and pid_file.read_text().strip().isdigit()) or proc.poll() is not None, 300, "the remote task")
        assert proc.poll() is None, proc.communicate()
        task_pid = int(pid_file.read_text())
        assert "sleep.py" in Path(f"/proc/{task_pid}/cmdline").read_bytes().decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "was interrupted" in err
        wait_for(lambda: not Path(f"/proc/{task_pid}").exists(), 20, f"remote task {task_pid} to exit")
        (record,) = records(cube / "workspace")
        assert record["status"] == "interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        if task_pid is not None and Path(f"/proc/{task_pid}").exists():
            cmdline = Path(f"/proc/{task_pid}/cmdline").read_bytes()
            if str(cube).encode() in cmdline or b"sleep.py" in cmdline:  # still ours (no pid reuse)
                os.kill(task_pid, signal.SIGKILL)


# -------------------------------------------------------------------------------- errors


def test_host_keys_are_checked_by_default(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    plan = ok(ssh("run", f"--mlcube={cube}", "--task=hello", "--platform=cuberun-local", "--dry-run"))
    assert "StrictHostKeyChecking" not in plan.stdout
    wrong = tmp_path / "known_hosts"
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    wrong.write_text("[127.0.0.1]:2222 " + " ".join(key.with_suffix(".pub").read_text().split()[:2]) + "\n")
    name = ssh.add("wrong-key", "cuberun-local", known_hosts=str(wrong))
    proc = ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={name}")
    assert proc.returncode == 125, proc.stderr
    line = error_line(proc)
    assert line.startswith("cuberun: error: host key verification failed for cuberun-local") and "Hint: " in line
    assert not (cube / "workspace" / "chats").exists()


def test_unreachable_host(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    name = ssh.add("nobody-home", "127.0.0.1", port=1)
    proc = ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={name}")
    assert proc.returncode == 125, proc.stderr
    assert error_line(proc).startswith("cuberun: error: cannot connect to 127.0.0.1 (port 1): connection refused. Hint: ")


def test_authentication_refused(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    name = ssh.add("stranger", "cuberun-local", user="nobody")
    proc = ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={name}")
    assert proc.returncode == 125, proc.stderr
    assert error_line(proc).startswith("cuberun: error: authentication refused by nobody@cuberun-local. Hint: ")


def test_remote_cuberun_missing(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    name = ssh.add("bare", "cuberun-local", cuberun="installed", cuberun_path="/nonexistent/bin/cuberun")
    proc = ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={name}")
    assert proc.returncode == 125, proc.stderr
    line = error_line(proc)
    assert line.startswith("cuberun: error: cuberun is not installed on cuberun-local")
    assert "cuberun: venv" in line and f"cuberun configure --platform={name}" in line


def test_remote_rsync_missing(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    name = ssh.add("no-rsync", "cuberun-local", rsync_path="/nonexistent/rsync")
    proc = ssh("run", f"--mlcube={cube}", "--task=hello", f"--platform={name}")
    assert proc.returncode == 125, proc.stderr
    assert error_line(proc).startswith("cuberun: error: rsync is not installed on cuberun-local. Hint: ")


# -------------------------------------------------------------------------------- configure / inspect


def test_configure_then_inspect(ssh: SSH, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    ok(ssh("configure", f"--mlcube={cube}", "--platform=cuberun-local"))
    again = ok(ssh("configure", f"--mlcube={cube}", "--platform=cuberun-local"))
    assert "configuring cube" not in again.stderr  # nothing changed: no remote round trip
    info = json.loads(ok(ssh("inspect", f"--mlcube={cube}", "--platform=cuberun-local")).stdout)
    assert info["host"] == "cuberun-local" and info["runner"] == "ssh" and info["remote_platform"] == "local"
    assert info["connection"] == {"hostname": "127.0.0.1", "user": "root", "port": 2222}
    from cuberun import __version__

    assert info["cuberun"]["version"] == __version__
    assert (Path(info["remote_dir"]) / "hello_world.py").is_file()


# -------------------------------------------------------------------------------- the far end's identity


def test_a_changed_far_end_reruns_the_task(ssh: SSH, tmp_path: Path) -> None:
    """What runs on the remote host is part of the task's identity: a change there (the remote
    platform's environment, nothing changed here) re-runs the task and says what changed; when
    nothing changed on either side, the remote cuberun is asked and the task is skipped."""
    settings = tmp_path / "remote-settings.yaml"
    settings.write_text(yaml.safe_dump({"platforms": {"far-local": {"runner": "local", "env_vars": {"SEED": "1"}}}}))
    entry = platform_entry("cuberun-local", ssh.details, ssh.base, ssh.cache)
    remote_env = {**entry["remote_env"], "CUBERUN_SETTINGS": str(settings)}
    ssh.add("far", "cuberun-local", platform="far-local", remote_env=remote_env, remote_root=str(ssh.base / "far"))
    cube = copy_example("hello_world", tmp_path)
    args = ("run", f"--mlcube={cube}", "--task=hello", "--platform=far")
    ok(ssh(*args))
    state = json.loads((cube / "workspace" / ".cuberun" / "state" / "hello.json").read_text())
    assert state["far_end"]["env"] == {"SEED": "1"} and state["far_end"]["program"]["version"], state["far_end"]
    again = ok(ssh(*args))
    assert "cuberun: skipping task 'hello': up to date" in again.stderr, again.stderr
    settings.write_text(yaml.safe_dump({"platforms": {"far-local": {"runner": "local", "env_vars": {"SEED": "2"}}}}))
    changed = ok(ssh(*args))
    assert "cuberun: task 'hello' will run: far end: env var SEED changed" in changed.stderr, changed.stderr
    assert "cuberun: skipping task 'hello'" in ok(ssh(*args)).stderr


# -------------------------------------------------------------------------------- time limits and retries


def flaky_cube(root: Path, **task: Any) -> Path:
    spec = {"name": "flaky", "local": {"command": "python3 flaky.py", "env": "current"},
            "tasks": {"flaky": {**task, "parameters": {"outputs": {"out": "out/"}}}}}
    return cubes.write(root, {"mlcube.yaml": yaml.safe_dump(spec), "flaky.py": retries.FLAKY_PY})


def test_a_flaky_remote_task_succeeds_on_its_second_attempt(ssh: SSH, tmp_path: Path) -> None:
    """`retries: 2`: this side retries (the remote cuberun runs each attempt once, `--retries=0`);
    the marker the first remote attempt left comes back, and is sent again with the second."""
    cube = flaky_cube(tmp_path / "flaky", retries=2)
    ws = cube / "workspace"
    proc = ssh("run", f"--mlcube={cube}", "--platform=cuberun-local", "--retry-delay=0.1")
    record = retries.check_second_attempt(ws, proc, ws / "out" / "marker")
    remote = check_remote_record(record, "flaky", "cuberun-local", "cuberun-local")
    assert "--retries=0" in json.dumps(record["command"])
    assert Path(remote["workspace"], "out", "marker").read_text() == "xx"
    first, second = (a["remote_run"] for a in record["attempts"])
    assert first != second == remote["run_id"]
    run_dir = Path(record["log"]).parent
    assert json.loads((run_dir / "remote" / "record.json").read_text())["exit_code"] == 3  # the first attempt's remote record is kept


NAP_PY = """\
import os, sys, time
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--out="))
with open(os.path.join(out, "pids"), "a") as f:
    f.write(f"{os.getpid()}\\n")
print("started", flush=True)
time.sleep(300)
"""


def test_a_remote_task_over_its_time_limit_is_stopped(ssh: SSH, tmp_path: Path) -> None:
    """The cube's `timeout: 3` and `--retries=1`: the remote cuberun (which reads the cube's limit)
    stops each attempt, exit 124; this side words and records it as a timeout (from the remote
    run's record), keeps the remote record of each attempt, and no remote task is left."""
    cube = flaky_cube(tmp_path / "nap", timeout=3)
    (cube / "flaky.py").write_text(NAP_PY)
    ws = cube / "workspace"
    proc = ssh("run", f"--mlcube={cube}", "--platform=cuberun-local", "--retries=1", "--retry-delay=0")
    assert proc.returncode == 124, proc.stderr
    assert "task 'flaky' timed out on attempt 1 of 2" in proc.stderr
    line = error_line(proc)
    assert "timed out after 3 s (tasks.flaky.timeout) and was stopped on cuberun-local" in line and "every attempt failed" in line, line
    (record,) = records(ws)
    assert (record["status"], record["exit_code"], record["details"]["timed_out"], record["details"]["timeout"]) == ("failed", 124, True, 3)
    assert [(a["exit_code"], a.get("timed_out")) for a in record["attempts"]] == [(124, True), (124, True)]
    first, second = (a["remote_run"] for a in record["attempts"])
    run_dir = Path(record["log"]).parent
    assert record["details"]["remote"]["run_id"] == second and record["details"]["remote"]["record"] == str(run_dir / f"remote-{second}")
    for folder, run_id in (("remote", first), (f"remote-{second}", second)):  # each attempt's remote record, fetched
        far = json.loads((run_dir / folder / "record.json").read_text())
        assert (far["run_id"], far["exit_code"], far["details"]["timed_out"]) == (run_id, 124, True)
    pids = [int(p) for p in (ws / "out" / "pids").read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: not any("flaky.py" in proc_cmdline(p) for p in pids), 60, "the remote tasks to be gone")  # (a reused pid runs another program)


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""  # gone
