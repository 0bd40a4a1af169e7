"""The nested-cuberun handshake: the inner side's event lines, the outer side's parsing and filtering."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cuberun import handshake
from cuberun.errors import UsageError
from cuberun.runners import nested
from cuberun.runners.base import RunOptions


def line(**fields: object) -> bytes:
    return b"cuberun-handshake: " + json.dumps({"v": 1, **fields}).encode() + b"\n"


def test_run_argv_forwards_every_option_from_one_table() -> None:
    options = RunOptions(gpus="1", network="none", security="s", memory="4g", cpus="0-3", mount="rw", allow_missing_inputs=True,
                         config_overrides=("docker.image=x", "runner.port=22"), timeout=60.0, allow_run_args=True)
    argv = nested.run_argv(["cuberun"], cube="/c/mlcube.yaml", task="t", platform="docker", workspace="/c/ws", options=options,
                           params=["a=b"])
    assert argv == ["cuberun", "run", "--mlcube=/c/mlcube.yaml", "--task=t", "--platform=docker", "--workspace=/c/ws", "--no-deps", "--force",
                    "--handshake=1", "-Pdocker.image=x", "--gpus=1", "--network=none", "--security=s", "--memory=4g", "--cpu=0-3",
                    "--mount=rw", "--timeout=60.0", "--allow-missing-inputs", "--allow-run-args", "a=b"]
    assert "--gpus=1" not in nested.run_argv(["c"], cube="m", task="t", platform="local", workspace="w", options=options, forward_gpus=False)


def test_events_are_read_from_whole_marker_lines_only() -> None:
    text = (b"cuberun: running task 't' on local (run R-0)\n" + line(event="start", task="t", run_id="R-1")
            + b"some cuberun-handshake: {not at a line start}\n" + line(event="error", message="bad thing", kind="BackendError", exit_code=125)
            + b"cuberun-handshake: {broken json\n" + line(event="end", exit_code=125))
    found = nested.events(text)
    assert found.run_id == "R-1" and found.error == "bad thing" and found.error_kind == "BackendError" and found.exit_code == 125
    assert found.versions == (1, 1, 1) and nested.mismatch(found, text.decode(), "there") is None


def test_a_version_mismatch_is_named_on_both_sides() -> None:
    other = b"cuberun-handshake: " + json.dumps({"v": 2, "event": "start", "run_id": "R"}).encode() + b"\n"
    found = nested.events(other)
    assert found.run_id is None
    assert nested.mismatch(found, other.decode(), "on h") == "the cuberun on h speaks handshake version 2, this one 1"
    old = "cuberun: error: No such option: --handshake. Hint: see 'cuberun run --help'"
    assert nested.mismatch(nested.events(old), old, "on h") == "the cuberun on h is older than this one: it does not know --handshake"
    with pytest.raises(UsageError, match="the calling cuberun speaks handshake version 7, this one 1"):
        handshake.check_version(7)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_the_filter_drops_handshake_lines_and_passes_the_rest(chunk: int) -> None:
    data = (b"hello\n" + line(event="start", run_id="R") + b"cuberun-hand but not a marker\nprogress 10%\rprogress 20%"
            + b"\n" + line(event="end", exit_code=0) + b"cuberun-hands")
    out = io.BytesIO()
    f = nested.HandshakeFilter(out)
    for i in range(0, len(data), chunk):
        f.write(data[i : i + chunk])
    f.close()
    assert out.getvalue() == b"hello\ncuberun-hand but not a marker\nprogress 10%\rprogress 20%\ncuberun-hands"


def test_the_inner_cuberun_writes_events_only_when_asked(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "mlcube.yaml").write_text("name: n\ntasks:\n  t:\n    parameters: {outputs: {o: {type: file, default: o.txt}}}\n")
    base = [sys.executable, "-m", "cuberun", "run", f"--mlcube={tmp_path}", "--task=t", "--platform=nope"]
    plain = subprocess.run(base, capture_output=True, timeout=120, check=False, env=cli_env)
    asked = subprocess.run([*base, "--handshake=1"], capture_output=True, timeout=120, check=False, env=cli_env)
    assert b"cuberun-handshake" not in plain.stderr
    found = nested.events(asked.stderr)
    assert asked.returncode == plain.returncode != 0
    assert found.error is not None and "nope" in found.error and found.exit_code == asked.returncode
    wrong = subprocess.run([*base, "--handshake=9"], capture_output=True, text=True, timeout=120, check=False, env=cli_env)
    assert wrong.returncode != 0 and nested.mismatch(nested.events(wrong.stderr), wrong.stderr, "here") is not None


def test_a_task_stopped_at_its_time_limit_says_so_in_the_error_event(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A real local run over its limit: the `error` event carries the limit, so the outer cuberun
    (a Slurm job's) words and records it as a timeout, not as an exit code 124 of the task's own."""
    (tmp_path / "nap.py").write_text("import time\nprint('napping', flush=True)\ntime.sleep(600)\n")
    (tmp_path / "mlcube.yaml").write_text("name: n\nlocal: {command: python3 nap.py}\ntasks:\n  t:\n    timeout: 2\n")
    base = [sys.executable, "-m", "cuberun", "run", f"--mlcube={tmp_path}", "--task=t", "--handshake=1"]
    proc = subprocess.run(base, capture_output=True, timeout=300, check=False, env=cli_env)
    found = nested.events(proc.stderr)
    assert proc.returncode == 124 and found.timeout == 2.0 and found.error_kind == "TaskFailed", proc.stderr
    # an error event without a limit (or with a nonsense one) is no timeout
    marker = handshake.MARKER.decode()
    for extra in ("", ', "timeout": true', ', "timeout": -1', ', "timeout": "2"'):
        line = f'{marker}{{"v": {handshake.VERSION}, "event": "error", "message": "m", "kind": "TaskFailed"{extra}}}'
        assert nested.events(line).timeout is None, extra
