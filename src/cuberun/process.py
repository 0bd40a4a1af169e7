"""The one module that starts subprocesses.

`stream()` runs a command with its output streamed to our stdout and a log file, forwards
Ctrl-C / SIGTERM, and escalates interrupt -> terminate -> kill on the child's process group.
`capture()` runs short probes (`docker info`, `sbatch --version`) and returns their output.
Argument lists only: nothing here ever goes through a shell.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

GRACE_INTERRUPT = float(os.environ.get("CUBERUN_GRACE_INTERRUPT", "5"))
GRACE_TERMINATE = float(os.environ.get("CUBERUN_GRACE_TERMINATE", "5"))


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    elapsed: float
    interrupted: bool = False
    signal: int | None = None  # the signal that killed the child, if any
    received: int | None = None  # the signal cuberun received (Ctrl-C / SIGTERM), if any

    def __bool__(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class Captured:
    returncode: int
    stdout: str
    stderr: str
    missing: bool = False  # the executable was not found


def exit_code_of(returncode: int) -> int:
    """Shell convention: 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def capture(
    argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 60.0, input: str | None = None
) -> Captured:
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return Captured(127, "", f"{argv[0]}: command not found", missing=True)
    except PermissionError:
        return Captured(126, "", f"{argv[0]}: permission denied")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return Captured(124, out, f"{argv[0]}: timed out after {timeout:g} s")
    return Captured(proc.returncode, proc.stdout, proc.stderr)


class _SignalState:
    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self.first_at = 0.0


def stream(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    log: IO[bytes] | None = None,
    echo: IO[bytes] | None = None,
    on_cancel: Callable[[], None] | None = None,
    grace: tuple[float, float] = (GRACE_INTERRUPT, GRACE_TERMINATE),
    stdin: int | None = subprocess.DEVNULL,
) -> Outcome:
    """Run argv to completion, streaming output; Ctrl-C and SIGTERM stop it and its children.

    The child runs in its own session (process group), so a terminal Ctrl-C reaches only us;
    we forward SIGINT to the child's group (or call `on_cancel`, e.g. `docker kill`), then
    after `grace[0]` seconds SIGTERM, after `grace[1]` more SIGKILL.
    """
    out = echo if echo is not None else getattr(sys.stdout, "buffer", None)
    start = time.monotonic()
    state = _SignalState()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        from cuberun.errors import BackendError

        missing = cwd if (cwd and not os.path.isdir(cwd)) else argv[0]
        raise BackendError(f"cannot start {argv[0]!r}: {missing} not found", "check the command and the PATH", exit_code=127) from exc
    except PermissionError as exc:
        from cuberun.errors import BackendError

        raise BackendError(f"cannot start {argv[0]!r}: permission denied", "make it executable", exit_code=126) from exc
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    def signal_group(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel() -> None:
        if on_cancel is not None:
            try:
                on_cancel()
            except Exception:
                pass
        signal_group(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        state.count += 1
        if state.received is None:
            state.received = signum
            state.first_at = time.monotonic()
            cancel()
        else:
            signal_group(signal.SIGKILL if state.count > 2 else signal.SIGTERM)

    previous: dict[int, Any] = {}
    in_main = _is_main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    escalated = 0
    try:
        exited_at: float | None = None
        while True:
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
            except InterruptedError:
                ready = []
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except InterruptedError:
                    continue
                if not chunk:
                    break
                _write(out, chunk)
                _write(log, chunk)
                continue
            if state.received is not None:
                waited = time.monotonic() - state.first_at
                if escalated == 0 and waited >= grace[0]:
                    signal_group(signal.SIGTERM)
                    escalated = 1
                elif escalated == 1 and waited >= grace[0] + grace[1]:
                    signal_group(signal.SIGKILL)
                    escalated = 2
            if proc.poll() is not None:
                # the child is gone; a grandchild may still hold the pipe open
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 0.5:
                    break
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            signal_group(signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        if in_main:
            for signum, old in previous.items():
                signal.signal(signum, old)
    if state.received is not None:
        signal_group(signal.SIGKILL)  # leave nothing of a cancelled run behind
    elapsed = time.monotonic() - start
    killed_by = -returncode if returncode < 0 else None
    if state.received is not None:
        return Outcome(128 + state.received, elapsed, interrupted=True, signal=killed_by, received=state.received)
    return Outcome(exit_code_of(returncode), elapsed, signal=killed_by)


def _write(stream: IO[bytes] | None, data: bytes) -> None:
    if stream is None:
        return
    try:
        stream.write(data)
        stream.flush()
    except (BrokenPipeError, ValueError):
        pass


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def which(name: str, path: str | None = None) -> str | None:
    import shutil

    return shutil.which(name, path=path)
