"""The local runner for real: every test runs `python -m cuberun` as a subprocess.

Several cube wrappers ignore their program's exit code, so each test checks the output files'
contents as well as the exit code and the run records (`<workspace>/.cuberun/runs/*/record.json`).
The examples are copied into tmp_path first: nothing is ever written into the repository.
Only loopback is contacted (the MNIST download comes from an http.server on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from cuberun.runners.pyenv import MARKER
from tests.conftest import CLI, EXAMPLES
from tests.integration import cubes

# -------------------------------------------------------------------------------- helpers


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(".cuberun", "__pycache__", "*.pyc"))
    return target


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    """The run records of a workspace, oldest first."""
    found = [json.loads(p.read_text(encoding="utf-8")) for p in (workspace / ".cuberun" / "runs").glob("*/record.json")]
    return sorted(found, key=lambda r: str(r["start"]))


def check_record(record: dict[str, Any], task: str, status: str, exit_code: int, log_has: str | None = None) -> None:
    assert record["task"] == task, record
    assert record["status"] == status, record
    assert record["exit_code"] == exit_code, record
    assert record["platform"] == "local" and record["runner"] == "local"
    assert record["end"] is not None and record["duration_s"] >= 0
    assert record["command"] == record["steps"][-1]["argv"]
    log = Path(record["log"])
    assert log == Path(record["workspace"]) / ".cuberun" / "runs" / record["run_id"] / "output.log"
    if log_has is not None:
        assert log_has in log.read_text(encoding="utf-8"), f"{log_has!r} not in {log}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cuberun: error:")]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its content) and directory under root."""
    snapshot: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        snapshot[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return snapshot


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (an unreaped corpse is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def read_until(stream: IO[bytes], marker: bytes, timeout: float) -> bytes:
    """Read a pipe until `marker` appears; fail after `timeout` seconds or at end of file."""
    fd = stream.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while marker not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} within {timeout} s; got {buffer!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"end of output before {marker!r}; got {buffer!r}")
            buffer += chunk
    return buffer


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 (a free port) serving `root`; yields its URL and the paths requested."""
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -------------------------------------------------------------------------------- hello_world


def test_hello_world_hello_then_bye_append_to_the_chat(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    ws = cube / "workspace"
    who = (ws / "names" / "alice.txt").read_text(encoding="utf-8").strip()
    proc = ok(cli("run", f"--mlcube={cube}", "--task=hello,bye"))
    hello, bye = f"Hi, {who}! Nice to meet you.", f"Bye, {who}! Talk to you soon."
    chat = ws / "chats" / "chat_with_alice.txt"
    assert chat.read_text(encoding="utf-8") == f"{hello}\n{bye}\n"
    assert proc.stdout.splitlines() == [hello, bye]
    assert "derived the host command from" in proc.stderr

    runs = records(ws)
    assert [r["task"] for r in runs] == ["hello", "bye"]
    for record, line in zip(runs, (hello, bye), strict=True):
        check_record(record, record["task"], "succeeded", 0, log_has=line)
        assert record["command"] == [
            "python3",
            str(cube / "hello_world.py"),
            record["task"],
            f"--name={ws / 'names' / 'alice.txt'}",
            f"--chat={chat}",
        ]
        assert record["steps"][-1]["cwd"] == str(cube)
        assert record["parameters"] == {
            "name": {"io": "input", "type": "file", "path": str(ws / "names" / "alice.txt")},
            "chat": {"io": "output", "type": "file", "path": str(chat)},
        }
        assert {k: record["cube"][k] for k in ("name", "version", "path")} == {"name": "hello_world", "version": "0.1", "path": str(cube / "mlcube.yaml")}
        assert record["workspace"] == str(ws)

    listed = json.loads(ok(cli("runs", f"--mlcube={cube}", "--json")).stdout)
    assert [(r["task"], r["status"], r["exit_code"]) for r in listed] == [("hello", "succeeded", 0), ("bye", "succeeded", 0)]

    ok(cli("run", f"--mlcube={cube}", "--task=hello", "--force"))  # the chat is appended to, never overwritten
    assert chat.read_text(encoding="utf-8") == f"{hello}\n{bye}\n{hello}\n"


def test_hello_world_workspace_with_spaces_and_quotes(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    ws = tmp_path / "my ws 'q'"
    ws.mkdir()
    shutil.copytree(cube / "workspace" / "names", ws / "names")
    name, chat = ws / "names" / "alice.txt", ws / "chats" / "chat_with_alice.txt"

    dry = ok(cli("run", f"--mlcube={cube}", "--task=hello", "--workspace", str(ws), "--dry-run"))
    [line] = dry.stdout.splitlines()
    assert shlex.split(line) == ["cd", str(cube), "&&", "python3", str(cube / "hello_world.py"), "hello", f"--name={name}", f"--chat={chat}"]
    assert not chat.parent.exists()

    ok(cli("run", f"--mlcube={cube}", "--task=hello,bye", "--workspace", str(ws)))
    assert chat.read_text(encoding="utf-8") == "Hi, Alice! Nice to meet you.\nBye, Alice! Talk to you soon.\n"
    assert not (cube / "workspace" / "chats").exists()
    assert not (cube / "workspace" / ".cuberun").exists()
    runs = records(ws)
    assert [r["task"] for r in runs] == ["hello", "bye"]
    for record in runs:
        check_record(record, record["task"], "succeeded", 0, log_has="Alice")
        assert record["workspace"] == str(ws)
        assert record["command"][-2:] == [f"--name={name}", f"--chat={chat}"]
    listed = json.loads(ok(cli("runs", "--workspace", str(ws), "--json")).stdout)
    assert [r["run_id"] for r in listed] == [r["run_id"] for r in runs]


def test_dry_run_prints_the_exact_commands_and_creates_nothing(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    ws = cube / "workspace"
    before = tree(tmp_path)
    script, name, chat = cube / "hello_world.py", ws / "names" / "alice.txt", ws / "chats" / "chat_with_alice.txt"
    argv = {t: ["python3", str(script), t, f"--name={name}", f"--chat={chat}"] for t in ("hello", "bye")}

    text = ok(cli("run", f"--mlcube={cube}", "--task=hello,bye", "--dry-run"))
    assert text.stdout.splitlines() == [f"cd {shlex.quote(str(cube))} && {shlex.join(argv[t])}" for t in ("hello", "bye")]

    plan = json.loads(ok(cli("run", f"--mlcube={cube}", "--task=hello,bye", "--json", "--dry-run")).stdout)
    assert plan["platform"] == "local" and plan["runner"] == "local"
    assert plan["steps"] == [{"purpose": "run", "argv": argv[t], "cwd": str(cube), "env": {}} for t in ("hello", "bye")]

    assert tree(tmp_path) == before  # no chats/, no .cuberun/, nothing else


def test_parameter_overrides_are_relative_to_the_workspace(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    ws = cube / "workspace"
    (ws / "a=b.txt").write_text("Bob\n", encoding="utf-8")

    ok(cli("run", f"--mlcube={cube}", "--task=hello", "chat=other/chat.txt"))
    assert (ws / "other" / "chat.txt").read_text(encoding="utf-8") == "Hi, Alice! Nice to meet you.\n"
    ok(cli("run", f"--mlcube={cube}", "--task=bye", "--chat=dash/chat.txt"))
    assert (ws / "dash" / "chat.txt").read_text(encoding="utf-8") == "Bye, Alice! Talk to you soon.\n"
    ok(cli("run", f"--mlcube={cube}", "--task=hello", "name=a=b.txt", "chat=bob.txt"))
    assert (ws / "bob.txt").read_text(encoding="utf-8") == "Hi, Bob! Nice to meet you.\n"
    assert not (ws / "chats").exists()

    by_overrides = {json.dumps(r["overrides"], sort_keys=True): r for r in records(ws)}
    first, second, third = (by_overrides[json.dumps(o, sort_keys=True)] for o in (
        {"chat": "other/chat.txt"}, {"chat": "dash/chat.txt"}, {"name": "a=b.txt", "chat": "bob.txt"}))
    assert len(by_overrides) == 3
    assert first["task"] == "hello" and second["task"] == "bye" and third["task"] == "hello"
    assert first["parameters"]["chat"]["path"] == str(ws / "other" / "chat.txt")
    assert second["command"][-1] == f"--chat={ws / 'dash' / 'chat.txt'}"
    assert third["command"][-2:] == [f"--name={ws / 'a=b.txt'}", f"--chat={ws / 'bob.txt'}"]
    for record in (first, second, third):
        check_record(record, record["task"], "succeeded", 0)


# -------------------------------------------------------------------------------- matmul, mnist, digits


def test_matmul(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("matmul", tmp_path)
    ws = cube / "workspace"
    proc = ok(cli("run", f"--mlcube={cube}"))
    [record] = records(ws)
    check_record(record, "matmul", "succeeded", 0, log_has="checksum:")
    python = Path(record["command"][0])  # the managed env's interpreter
    assert python.parent.name == "bin" and (python.parents[1] / MARKER).is_file()
    assert record["command"][1:] == ["matmul.py", "matmul", f"--parameters_file={ws / 'shapes.yaml'}", f"--output_file={ws / 'matmul.txt'}"]

    shapes = yaml.safe_load((ws / "shapes.yaml").read_text(encoding="utf-8"))
    report = dict(line.split(": ", 1) for line in (ws / "matmul.txt").read_text(encoding="utf-8").splitlines())
    assert report["shape"] == f"{shapes['matrix_a'][0]}x{shapes['matrix_b'][1]}"
    assert float(report["elapsed_seconds"]) >= 0
    assert "checksum:" in proc.stdout
    # the same product, computed independently with the env's NumPy
    check = (
        "import numpy as np, sys; rng = np.random.default_rng(int(sys.argv[1])); "
        "a = rng.standard_normal((int(sys.argv[2]), int(sys.argv[3]))); b = rng.standard_normal((int(sys.argv[4]), int(sys.argv[5]))); "
        "print(float((a @ b).sum()))"
    )
    dims = [str(shapes["seed"]), *map(str, shapes["matrix_a"]), *map(str, shapes["matrix_b"])]
    expected = float(subprocess.run([str(python), "-c", check, *dims], capture_output=True, text=True, check=True, timeout=120).stdout)
    assert float(report["checksum"]) == pytest.approx(expected, rel=1e-6, abs=1e-3)


def _npy(data: bytes, shape: tuple[int, ...]) -> bytes:
    """A uint8 array in the .npy format (version 1.0), written without NumPy."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


def _tiny_mnist(path: Path, n_train: int = 300, n_test: int = 100) -> None:
    """A learnable MNIST look-alike (no NumPy needed here): class k is a bright 6x6 block at a
    k-dependent place on 28x28 noise."""
    rng = random.Random(7)
    arrays: dict[str, bytes] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = bytes(rng.randrange(10) for _ in range(n))
        images = bytearray(b % 60 for b in rng.randbytes(n * 28 * 28))
        for i, k in enumerate(labels):
            row, col = 2 + (k // 5) * 12, 1 + (k % 5) * 5
            for r in range(row, row + 6):
                start = i * 784 + r * 28 + col
                images[start : start + 6] = b"\xff" * 6
        arrays[f"x_{split}"] = _npy(bytes(images), (n, 28, 28))
        arrays[f"y_{split}"] = _npy(labels, (n,))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as npz:
        for name, content in arrays.items():
            npz.writestr(f"{name}.npy", content)


def test_mnist_download_train_evaluate_from_a_loopback_server(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("mnist", tmp_path)
    ws = cube / "workspace"
    served = tmp_path / "served"
    served.mkdir()
    _tiny_mnist(served / "mnist.npz")
    digest = hashlib.sha256((served / "mnist.npz").read_bytes()).hexdigest()
    (ws / "train.yaml").write_text(
        "optimizer: adam\ntrain_epochs: 2\nbatch_size: 32\nlearning_rate: 0.01\nhidden_units: 32\nseed: 0\nmax_samples: 250\n", encoding="utf-8"
    )
    with serve_directory(served) as (url, requests):
        (ws / "data.yaml").write_text(f"uri: {url}/mnist.npz\nhash: '{digest}'\n", encoding="utf-8")
        proc = cli("run", f"--mlcube={cube}", "--task=download,train,evaluate", env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    ok(proc)
    assert requests == ["/mnist.npz"]
    assert hashlib.sha256((ws / "data" / "mnist.npz").read_bytes()).hexdigest() == digest
    assert (ws / "model" / "model.npz").is_file()
    train_log = (ws / "logs" / "train.log").read_text(encoding="utf-8")
    assert ":::MLLOG" in train_log and '"key": "run_start"' in train_log and '"status": "success"' in train_log
    epochs = [json.loads(line) for line in (ws / "logs" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    metrics = json.loads((ws / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["samples"] == 100
    assert metrics["accuracy"] > 0.5, metrics  # the look-alike is easy: chance is 0.1

    runs = records(ws)
    assert [r["task"] for r in runs] == ["download", "train", "evaluate"]
    for record, line in zip(runs, ("sha256 verified", "run_start", "accuracy"), strict=True):
        check_record(record, record["task"], "succeeded", 0, log_has=line)
    assert runs[1]["parameters"]["data_dir"] == {"io": "input", "type": "directory", "path": str(ws / "data")}
    assert runs[1]["command"][1:3] == ["mnist.py", "train"]


def test_digits_prepare_train_evaluate(cli: CLI, tmp_path: Path) -> None:
    cube = copy_example("digits", tmp_path)
    ws = cube / "workspace"
    ok(cli("run", f"--mlcube={cube}", "--task=prepare,train,evaluate", timeout=900))
    report = json.loads((ws / "report.json").read_text(encoding="utf-8"))
    assert report["accuracy"] > 0.9, report
    assert report["samples"] > 300
    assert len(report["confusion_matrix"]) == 10
    runs = records(ws)
    assert [r["task"] for r in runs] == ["prepare", "train", "evaluate"]
    for record in runs:
        check_record(record, record["task"], "succeeded", 0)
    assert "test accuracy" in Path(runs[2]["log"]).read_text(encoding="utf-8")


# -------------------------------------------------------------------------------- third-party-style cubes


def test_medperf_style_app_behind_entrypoint_chained(cli: CLI, tmp_path: Path, cache_dir: Path) -> None:
    cube = cubes.medperf_chain_cube(tmp_path)
    ws = cube / "workspace"
    for produced in ("data", "labels", "predictions", "results.yaml"):
        assert not (ws / produced).exists()
    # the later tasks' inputs do not exist yet; without its prerequisites, infer is refused before anything runs
    alone = cli("run", f"--mlcube={cube}", "--task=infer", "--no-deps")
    assert alone.returncode == 2, alone.stderr
    assert error_lines(alone.stderr) == [
        f"cuberun: error: task 'infer', input 'data_path': {ws / 'data'} does not exist (workspace {ws}). "
        "Hint: run the task that produces it, or override data_path=PATH"
    ]
    assert not (ws / "predictions").exists() and not (ws / ".cuberun").exists()

    proc = ok(cli("run", f"--mlcube={cube}", "--task=prepare,infer,evaluate"))
    assert "warning: Dockerfile installs system packages that cuberun does not install on the host (the task may need them): gcc" in proc.stderr
    assert "RUN steps of Dockerfile not replicated on the host: rm -rf '/var/lib/apt/lists/*'" in proc.stderr
    assert json.loads((ws / "data" / "case1.json").read_text()) == [1, 2, 3]
    assert json.loads((ws / "labels" / "labels.json").read_text()) == {"case1": 6, "case2": 16}
    assert json.loads((ws / "predictions" / "predictions.json").read_text()) == {"case1": 6, "case2": 15}
    assert (ws / "results.yaml").read_text() == "accuracy: 0.5\ncases: 2\n"

    runs = records(ws)
    assert [r["task"] for r in runs] == ["prepare", "infer", "evaluate"]
    for record, line in zip(runs, ("prepared 2 cases", "predicted 2 cases", "evaluated 2 cases"), strict=True):
        check_record(record, record["task"], "succeeded", 0, log_has=line)
        python = Path(record["command"][0])
        assert python.name == "python" and python.parents[1].parent == cache_dir / "envs", record["command"]
        assert (python.parents[1] / MARKER).is_file()
        assert record["command"][1:3] == [str(cube / "mlcube.py"), record["task"]]
        assert record["steps"][-1]["cwd"] == str(cube.resolve())  # WORKDIR /mlcube_project <- COPY . /mlcube_project
    assert runs[0]["command"][3:] == [
        f"--data_path={ws / 'input_data'}",
        f"--labels_path={ws / 'input_labels'}",
        f"--parameters_file={ws / 'parameters.yaml'}",
        f"--output_path={ws / 'data'}",
        f"--output_labels_path={ws / 'labels'}",
    ]
    assert runs[2]["parameters"]["output_path"] == {"io": "output", "type": "file", "path": str(ws / "results.yaml")}


def test_getting_started_style_task_entrypoints_untyped_parameters(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.getting_started_cube(tmp_path)
    ws = cube / "workspace"
    proc = ok(cli("run", f"--mlcube={cube}", "--task=download_data,preprocess_data,train"))
    assert proc.stdout.splitlines() == ["downloaded 5 rows", "preprocessed 5 rows", "trained on 5 rows"]
    # the task name is not passed when the task has an entrypoint
    assert json.loads((ws / "data" / "download.argv.json").read_text()) == [
        f"--parameters_file={ws / 'parameters.yaml'}",
        f"--data_dir={ws / 'data'}",
    ]
    assert json.loads((ws / "processed" / "preprocess.argv.json").read_text()) == [
        f"--raw_file={ws / 'data' / 'raw.csv'}",
        f"--output_dir={ws / 'processed'}",
    ]
    assert json.loads((ws / "model" / "train.argv.json").read_text()) == [
        "--verbose",
        f"--data_dir={ws / 'processed'}",
        f"--parameters_file={ws / 'parameters.yaml'}",
        f"--model_dir={ws / 'model'}",
    ]
    assert json.loads((ws / "model" / "model.json").read_text()) == {"sum_of_squares": 30, "verbose": True}

    runs = records(ws)
    assert [r["task"] for r in runs] == ["download_data", "preprocess_data", "train"]
    for record, script in zip(runs, ("01_download.py", "02_preprocess.py", "03_train.py"), strict=True):
        check_record(record, record["task"], "succeeded", 0)
        assert Path(record["command"][0]).name == "python" and record["command"][1] == script
        assert record["task"] not in record["command"]
        assert record["steps"][-1]["cwd"] == str(cube.resolve())  # WORKDIR /workspace <- COPY . /workspace/
    # an untyped input is typed by what exists at run time
    assert runs[1]["parameters"]["raw_file"] == {"io": "input", "type": "file", "path": str(ws / "data" / "raw.csv")}
    assert runs[2]["parameters"]["data_dir"] == {"io": "input", "type": "directory", "path": str(ws / "processed")}


def test_single_token_entrypoint_gets_the_parameters(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.check_gpus_cube(tmp_path)
    ws = cube / "workspace"
    proc = ok(cli("run", f"--mlcube={cube}", "--gpus=device=1"))
    report = ws / "reports" / "gpus.txt"
    assert report.read_text().splitlines() == [
        f"--parameters_file={ws / 'parameters.yaml'}",
        f"--report={report}",
        "CUDA_VISIBLE_DEVICES=1",
    ]
    assert f"check.sh: wrote {report}" in proc.stdout
    [record] = records(ws)
    check_record(record, "check_gpus", "succeeded", 0, log_has="check.sh: wrote")
    assert record["command"] == ["./check.sh", f"--parameters_file={ws / 'parameters.yaml'}", f"--report={report}"]
    assert record["steps"][-1]["env"] == {"CUDA_VISIBLE_DEVICES": "1"}


def test_null_defaults_pass_with_a_warning(cli: CLI, tmp_path: Path) -> None:
    """fets/model leaves inputs "null" on purpose (the program falls back to defaults of its own):
    as the reference does, they are passed on, with a warning instead of a refusal."""
    cube = cubes.fets_model_cube(tmp_path)
    ws = cube / "workspace"
    missing = ws / "null"

    proc = ok(cli("run", f"--mlcube={cube}"))
    assert f"cuberun: warning: task 'infer', input 'parameters_file' is \"null\" (not given): it is passed as {missing}" in proc.stderr
    assert "give one with parameters_file=PATH" in proc.stderr
    assert error_lines(proc.stderr) == []
    result = json.loads((ws / "output" / "result.json").read_text())
    assert result == {"cases": ["case_001.nii"], "params": {"threshold": 0.5}, "fallback": True, "parameters_file": str(missing)}
    assert not missing.exists()
    [record] = records(ws)
    check_record(record, "infer", "succeeded", 0, log_has="fallback parameters: True")
    assert record["parameters"]["parameters_file"] == {"io": "input", "type": "file", "path": str(missing)}


def test_name_with_spaces_and_no_trailing_newline(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.spaces_cube(tmp_path)
    ws = cube / "workspace"
    assert " " in str(cube) and not (cube / "mlcube.yaml").read_bytes().endswith(b"\n")
    proc = ok(cli("run", f"--mlcube={cube}"))
    assert proc.stdout == "greeted world\n"
    assert (ws / "out" / "greeting.txt").read_text() == "greet: hello world\n"
    [record] = records(ws)
    check_record(record, "greet", "succeeded", 0, log_has="greeted world")
    assert record["cube"]["name"] == "MLCommons Getting Started"
    assert record["command"] == ["python3", str(cube / "greet.py"), "greet", f"--parameters_file={ws / 'parameters.yaml'}",
                                 f"--greeting={ws / 'out' / 'greeting.txt'}"]
    assert json.loads(ok(cli("describe", f"--mlcube={cube}", "--json")).stdout)["name"] == "MLCommons Getting Started"


def test_build_context_in_a_sibling_directory(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.sibling_project_cube(tmp_path)
    ws = cube / "workspace"
    project = (tmp_path / "project").resolve()
    proc = ok(cli("run", f"--mlcube={cube}"))
    assert f"derived the host command from {project / 'Dockerfile'}" in proc.stderr
    assert json.loads((ws / "result.json").read_text()) == {"task": "run", "cwd": str(project), "result": 42}
    [record] = records(ws)
    check_record(record, "run", "succeeded", 0)
    assert record["command"] == ["python3", "main.py", "run", f"--parameters_file={ws / 'parameters.yaml'}", f"--output_file={ws / 'result.json'}"]
    assert record["steps"][-1]["cwd"] == str(project)


# -------------------------------------------------------------------------------- exit codes


def test_task_exit_code_is_passed_through_and_the_chain_stops(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.tool_cube(tmp_path)
    ws = cube / "workspace"
    proc = cli("run", f"--mlcube={cube}", "--task=fail,after")
    assert proc.returncode == 3, proc.stderr
    [line] = error_lines(proc.stderr)
    match = re.fullmatch(r"cuberun: error: task 'fail' failed with exit code 3 \(run (\S+); log (.+)\)", line)
    assert match, line
    assert proc.stdout == "fail: exiting with 3\n"
    assert (ws / "fail.txt").read_text() == "about to fail\n"
    assert not (ws / "after.txt").exists()  # b did not run

    [record] = records(ws)  # and has no record
    check_record(record, "fail", "failed", 3, log_has="fail: exiting with 3")
    assert record["run_id"] == match.group(1)
    assert record["log"] == match.group(2)
    failed = json.loads(ok(cli("runs", f"--mlcube={cube}", "--json", "--status=failed")).stdout)
    assert [r["run_id"] for r in failed] == [record["run_id"]]


def test_task_killed_by_sigkill_gives_137(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.tool_cube(tmp_path)
    ws = cube / "workspace"
    proc = cli("run", f"--mlcube={cube}", "--task=suicide")
    assert proc.returncode == 137, proc.stderr
    [line] = error_lines(proc.stderr)
    assert line.startswith("cuberun: error: task 'suicide' failed with exit code 137 (run ")
    assert (ws / "suicide.txt").read_text() == "about to die\n"
    [record] = records(ws)
    check_record(record, "suicide", "failed", 137, log_has="SIGKILL to myself")
    assert record["signal"] == signal.SIGKILL


@pytest.mark.parametrize(
    ("sig", "code", "task_ignores_sigint"),
    [
        pytest.param(signal.SIGINT, 130, False, id="SIGINT"),
        # the task ignores the forwarded SIGINT: cuberun escalates to SIGTERM after the grace period
        pytest.param(signal.SIGTERM, 143, True, id="SIGTERM-escalated"),
    ],
)
def test_interrupt_stops_the_task_and_its_children(
    cli_env: dict[str, str], tmp_path: Path, sig: signal.Signals, code: int, task_ignores_sigint: bool
) -> None:
    cube = cubes.tool_cube(tmp_path)
    ws = cube / "workspace"
    env = dict(cli_env, CUBERUN_GRACE_INTERRUPT="1", CUBERUN_GRACE_TERMINATE="2", TOOL_IGNORE_SIGINT="1" if task_ignores_sigint else "0")
    pids: list[int] = []
    with (tmp_path / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--task=wait"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            assert proc.stdout is not None
            read_until(proc.stdout, b"READY\n", timeout=60)
            pids = [int(p) for p in (ws / "pids.txt").read_text().split()]  # written before READY
            assert all(alive(pid) for pid in pids)
            proc.send_signal(sig)
            returncode = proc.wait(timeout=120)  # a hang guard only: the task itself never ends
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()  # filterwarnings=error: an unclosed pipe is a ResourceWarning
            for pid in pids:  # never leave a stray process behind, whatever the outcome
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert returncode == code, stderr
    task_pid, grandchild_pid = pids
    # the runner SIGKILLs the task's process group before it returns; the kernel finishes the job
    assert wait_until(lambda: not alive(task_pid) and not alive(grandchild_pid), timeout=5), (task_pid, grandchild_pid)
    [line] = error_lines(stderr)
    assert line.startswith("cuberun: error: task 'wait' was interrupted (run ")
    [record] = records(ws)
    check_record(record, "wait", "interrupted", code, log_has="READY")


# -------------------------------------------------------------------------------- managed env


def test_managed_env_is_created_once_reused_and_rebuilt_on_change(cli: CLI, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"CUBERUN_CACHE_DIR": str(cache)}
    cube = cubes.managed_env_cube(tmp_path)
    ws = cube / "workspace"
    report = ws / "report.json"

    def envs() -> list[Path]:
        return sorted(p for p in (cache / "envs").iterdir() if p.is_dir()) if (cache / "envs").is_dir() else []

    first = ok(cli("run", f"--mlcube={cube}", env=env))
    [env_a] = envs()
    assert re.fullmatch(r"[0-9a-f]{20}", env_a.name)
    assert f"creating Python environment {env_a}" in first.stderr
    assert (env_a / MARKER).is_file()
    probe = json.loads(report.read_text())
    assert probe["task"] == "probe"
    assert Path(probe["six"]).is_relative_to(env_a) and Path(probe["prefix"]) == env_a
    assert first.stdout.startswith("probe: six ")

    report.unlink()
    second = ok(cli("run", f"--mlcube={cube}", "--force", env=env))  # --force: really run, not an up-to-date skip
    assert "creating Python environment" not in second.stderr
    assert second.stdout.startswith("probe: six ")
    assert envs() == [env_a]
    assert Path(json.loads(report.read_text())["prefix"]) == env_a
    runs = records(ws)
    assert len(runs) == 2
    for record in runs:
        check_record(record, "probe", "succeeded", 0, log_has="probe: six")
        assert record["command"] == [str(env_a / "bin" / "python"), "x.py", "probe", f"--report={report}"]
        assert record["steps"][-1]["env"] == {"VIRTUAL_ENV": str(env_a)}

    # a changed requirements file is another env; --dry-run shows how it would be made and makes nothing
    (cube / "requirements.txt").write_text(cubes.SHARED_REQUIREMENTS + "# pinned later\n")
    dry = ok(cli("run", f"--mlcube={cube}", "--dry-run", env=env)).stdout.splitlines()
    assert len(dry) == 3, dry
    venv_argv = shlex.split(dry[0])
    env_b = Path(venv_argv[-1])
    assert venv_argv[1:] == ["-m", "venv", str(env_b)] and env_b.parent == cache / "envs" and env_b != env_a
    assert shlex.split(dry[1])[:4] == [str(env_b / "bin" / "python"), "-m", "pip", "install"]
    assert str(cube / "requirements.txt") in shlex.split(dry[1])
    run_b = ["cd", str(cube), "&&", f"VIRTUAL_ENV={env_b}", str(env_b / "bin" / "python"), "x.py", "probe", f"--report={report}"]
    assert shlex.split(dry[2]) == run_b
    assert envs() == [env_a]

    configured = ok(cli("configure", f"--mlcube={cube}", env=env))
    assert f"creating Python environment {env_b}" in configured.stderr
    assert envs() == sorted([env_a, env_b]) and (env_b / MARKER).is_file()
    assert ok(cli("configure", f"--mlcube={cube}", env=env)).stderr.count("creating Python environment") == 0
    assert ok(cli("configure", f"--mlcube={cube}", "--dry-run", env=env)).stdout == ""

    dry = ok(cli("run", f"--mlcube={cube}", "--dry-run", env=env)).stdout.splitlines()
    assert [shlex.split(line) for line in dry] == [run_b]
    third = ok(cli("run", f"--mlcube={cube}", "--force", env=env))
    assert "creating Python environment" not in third.stderr
    assert third.stdout.startswith("probe: six ")
    assert Path(json.loads(report.read_text())["prefix"]) == env_b


# -------------------------------------------------------------------------------- environment


def test_env_vars_and_gpus_reach_the_task(cli: CLI, tmp_path: Path) -> None:
    cube = cubes.tool_cube(tmp_path)
    ws = cube / "workspace"
    args = (f"--mlcube={cube}", "--task=envprobe", "-Plocal.env_vars.FOO=bar", "--gpus=device=0,1")
    [line] = ok(cli("run", *args, "--dry-run")).stdout.splitlines()
    assert shlex.split(line)[:5] == ["cd", str(cube), "&&", "CUDA_VISIBLE_DEVICES=0,1", "FOO=bar"]
    assert shlex.split(line)[5:] == [sys.executable, "tool.py", "envprobe", f"--config={ws / 'config.txt'}", f"--report={ws / 'env.json'}"]

    ok(cli("run", *args))
    report = json.loads((ws / "env.json").read_text())
    assert report["FOO"] == "bar"
    assert report["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert report["VIRTUAL_ENV"] == os.environ.get("VIRTUAL_ENV")  # env: current, no managed env
    assert report["config"] == "cfg\n"
    [record] = records(ws)
    check_record(record, "envprobe", "succeeded", 0, log_has="envprobe: done")
    assert record["steps"][-1]["env"] == {"FOO": "bar", "CUDA_VISIBLE_DEVICES": "0,1"}
