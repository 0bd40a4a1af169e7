"""process.stream with real child processes: output, exit codes, signals, cancellation."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from cuberun.errors import BackendError
from cuberun.process import capture, stream


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_streams_to_echo_and_log() -> None:
    echo, log = io.BytesIO(), io.BytesIO()
    outcome = stream(py("import sys; print('out'); print('err', file=sys.stderr)"), echo=echo, log=log)
    assert outcome.exit_code == 0 and bool(outcome)
    assert sorted(echo.getvalue().decode().split()) == ["err", "out"]
    assert log.getvalue() == echo.getvalue()


def test_exit_code_passes_through() -> None:
    assert stream(py("raise SystemExit(3)"), echo=io.BytesIO()).exit_code == 3


def test_killed_by_signal_is_128_plus_n() -> None:
    outcome = stream(py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), echo=io.BytesIO())
    assert outcome.exit_code == 137 and outcome.signal == signal.SIGKILL


def test_missing_executable_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as info:
        stream([str(tmp_path / "nope")], echo=io.BytesIO())
    assert info.value.exit_code == 127


def test_grandchild_holding_the_pipe_does_not_hang(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
    )
    start = time.monotonic()
    outcome = stream(py(code), echo=io.BytesIO())
    assert outcome.exit_code == 0
    assert time.monotonic() - start < 300  # had stream() waited for the grandchild, it would take 600 s
    os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _wait_for(path: Path, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.02)


def _alive(pid: int, deadline: float = 5.0) -> bool:
    """Whether pid is still running after waiting (bounded) for it to go: signals are asynchronous."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_us_stops_child_and_grandchild(tmp_path: Path, sig: int) -> None:
    ready = tmp_path / "ready"
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # a stubborn task: needs the escalation
        "g = subprocess.Popen([sys.executable, '-c', 'import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(ready) + '.tmp'!r}, 'w').write(str(g.pid))\n"
        f"os.rename({str(ready) + '.tmp'!r}, {str(ready)!r})\n"  # whole: the reader never sees an empty file
        "time.sleep(60)\n"
    )
    result: dict[str, object] = {}
    child_pid: list[int] = []

    def fire() -> None:
        _wait_for(ready)
        child_pid.append(int(ready.read_text()))
        os.kill(os.getpid(), sig)

    timer = threading.Thread(target=fire)
    timer.start()
    start = time.monotonic()
    outcome = stream(py(code), echo=io.BytesIO(), grace=(0.5, 0.5))
    timer.join()
    result["elapsed"] = time.monotonic() - start
    assert outcome.interrupted and outcome.exit_code == 128 + sig and outcome.received == sig
    assert not _alive(child_pid[0])


def test_on_cancel_is_called(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    called: list[bool] = []

    def fire() -> None:
        _wait_for(ready)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=fire)
    t.start()
    outcome = stream(py(f"import time; open({str(ready)!r}, 'w').write('1'); time.sleep(30)"), echo=io.BytesIO(),
                     on_cancel=lambda: called.append(True))
    t.join()
    assert called == [True] and outcome.exit_code == 130


def test_capture() -> None:
    got = capture(py("import sys; print('a'); print('b', file=sys.stderr); raise SystemExit(4)"))
    assert (got.returncode, got.stdout, got.stderr) == (4, "a\n", "b\n")
    assert capture(["/nonexistent/binary"]).missing
    assert capture(py("import time; time.sleep(5)"), timeout=0.3).returncode == 124


def test_disarmed_watchdogs_are_reaped_never_dropped_running() -> None:
    import gc
    import warnings

    from cuberun import process

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert stream(py("pass"), echo=io.BytesIO()).exit_code == 0
        gc.collect()  # a Popen dropped while its watchdog still ran would warn here
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    process._reap_disarmed(wait=True)  # what the atexit hook does: each exits on the byte disarm wrote
    assert process._DISARMED == []


# -- the watchdog: forked, or the standard-library script -----------------------------------------
def test_watchdog_script_reads_length_prefixed_commands() -> None:
    from cuberun.watchdog import commands

    assert commands(["3", "docker", "rm", "-f", "1", "true", "0"]) == [["docker", "rm", "-f"], ["true"]]
    assert commands([]) == []


def _touch(path: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(path)!r}, 'w').close()"]


def _wait_exit(pid: int) -> None:
    """Reap pid, bounded (the watchdog exits once its clean-up is done)."""
    import select

    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], 60)[0], f"watchdog {pid} still runs after 60 s"
    finally:
        os.close(fd)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("kind", ["forked", "script"])
def test_watchdog_cleans_up_when_cuberun_is_gone_and_not_after_disarm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    kind: str) -> None:
    """End of file on its pipe (cuberun gone, kill -9 included): the clean-up runs; a disarmed
    watchdog exits without it. One thread: a fork of cuberun; more (parallel tasks): the script."""
    from cuberun import process

    if kind == "script":
        monkeypatch.setattr(process.threading, "active_count", lambda: 2)
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    guard = process.watchdog(cleanup=[_touch(gone)])
    assert guard._fd is not None and guard._pid is not None
    with open(f"/proc/{guard._pid}/cmdline", "rb") as f:
        cmdline = f.read()
    assert (b"watchdog.py" in cmdline) == (kind == "script")
    os.close(guard._fd)  # as if cuberun died: the pipe ends without the byte
    guard._fd = None
    _wait_exit(guard._pid)  # the watchdog waits for its clean-up before it exits
    assert gone.exists()
    guard = process.watchdog(cleanup=[_touch(kept)])
    assert guard._pid is not None
    guard.disarm()
    process._reap_disarmed(wait=True)
    assert process._DISARMED == []
    assert not kept.exists()


def test_piped_output_is_read_as_it_comes_and_the_child_is_reaped() -> None:
    from cuberun.process import piped

    with piped(py("import sys; sys.stdout.write('x' * 100000); sys.stderr.write('warn\\nlast words\\n'); raise SystemExit(4)")) as pipe:
        assert pipe.stdout.read() == b"x" * 100000
        assert pipe.finish() == (4, "last words")  # the last line of its stderr (kept in a file, never a full pipe)
    # left early (a reader that stops): killed, and reaped when the block ends
    with piped(py("import sys\nwhile True: sys.stdout.write('y' * 65536)")) as pipe:
        assert pipe.stdout.read(10) == b"y" * 10
    assert pipe.proc.returncode is not None
    with pytest.raises(FileNotFoundError):
        with piped(["/nonexistent/program"]):
            pass
