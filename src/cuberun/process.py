"""The one module that starts subprocesses.

`stream()` runs a command with its output streamed to our stdout and a log file, forwards
Ctrl-C / SIGTERM, and escalates interrupt -> terminate -> kill on the child's process group.
`capture()` runs short probes (`docker info`, `sbatch --version`) and returns their output.
Argument lists only: nothing here ever goes through a shell.
"""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType

from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

GRACE_INTERRUPT = float(os.environ.get("CUBERUN_GRACE_INTERRUPT", "5"))
GRACE_TERMINATE = float(os.environ.get("CUBERUN_GRACE_TERMINATE", "5"))
# Set by the ssh runner's remote command, whose ssh session keeps our stdin open and writes
# nothing to it: end of file there means the connection to the caller is gone (sshd died, the
# network broke, the local cuberun was killed), handled like a hangup so the task is stopped
# instead of running on unreachable. Removed at import (before any child starts: this module
# starts them all), so no task or nested cuberun inherits it.
HANGUP_ON_STDIN_EOF = "CUBERUN_HANGUP_ON_STDIN_EOF"
_WATCH_STDIN = [os.environ.pop(HANGUP_ON_STDIN_EOF, "") == "1"]
if _WATCH_STDIN[0]:
    try:
        os.fstat(0)
    except OSError:  # no stdin at all: nothing to watch
        _WATCH_STDIN[0] = False
STDIN_OPEN = subprocess.PIPE  # stream(stdin=STDIN_OPEN): a pipe kept open with nothing written, closed at the end


EXIT_TIMEOUT = 124  # a task stopped by --timeout (like coreutils' timeout)


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    elapsed: float
    interrupted: bool = False
    signal: int | None = None  # the signal that killed the child, if any
    received: int | None = None  # the signal cuberun received (Ctrl-C / SIGTERM), if any
    reason: str | None = None  # why a non-zero outcome happened, one line in the backend's terms (e.g. "job 12 ended TIMEOUT ...")
    details: Mapping[str, Any] | None = None  # backend facts for the run record (e.g. {"job_id": "12"})

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


class _Cancellation:
    """Process-wide cancellation: the first Ctrl-C/SIGTERM cancels every running task (there
    can be several, from parallel sweeps); a second one escalates to SIGTERM, a third to SIGKILL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: int | None = None
        self.count = 0
        self.at = 0.0
        self.depth = 0
        self.active: dict[int, Callable[[], None]] = {}  # pid -> cancel()
        self.groups: set[int] = set()

    def handler(self, signum: int, frame: FrameType | None) -> None:
        with self.lock:
            self.count += 1
            first = self.received is None
            if first:
                self.received = signum
                self.at = time.monotonic()
            cancels = list(self.active.values())
            groups = list(self.groups)
        if first:
            for cancel in cancels:
                cancel()
        else:
            for pgid in groups:
                _signal_group(pgid, signal.SIGKILL if self.count > 2 else signal.SIGTERM)

    @property
    def requested(self) -> bool:
        return self.received is not None


CANCEL = _Cancellation()
_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def handle_signals() -> Iterator[_Cancellation]:
    """Install the cancellation handlers (main thread only; nests). Code that runs tasks in
    worker threads wraps the whole pool in this, so Ctrl-C reaches every task."""
    if threading.current_thread() is not threading.main_thread():
        yield CANCEL
        return
    previous: dict[int, Any] = {}
    with CANCEL.lock:
        CANCEL.depth += 1
        outer = CANCEL.depth == 1
    if outer:
        for signum in _SIGNALS:
            previous[signum] = signal.signal(signum, CANCEL.handler)
    try:
        yield CANCEL
    finally:
        with CANCEL.lock:
            CANCEL.depth -= 1
        if outer:
            for signum, old in previous.items():
                signal.signal(signum, old)
            CANCEL.received = None
            CANCEL.count = 0


@contextmanager
def shielded() -> Iterator[None]:
    """Block Ctrl-C/SIGTERM/SIGHUP around a client call that must not die half-way (sbatch, a
    session create): the child inherits the mask, and the signal reaches our handler as soon as
    the call returns. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the watchdog: nothing cuberun started outlives it ----------------------------------------
# A tiny process per running task (watchdog.py, a small script on the standard library alone), started beside it, in its own session (a terminal's Ctrl-C
# never reaches it). It waits on a pipe that only cuberun holds open: a byte means "done, exit";
# end of file means cuberun is gone (kill -9 included). It then stops the task's process group
# (SIGTERM, after GRACE_TERMINATE seconds SIGKILL) and runs the runner's clean-up commands
# (`docker rm -f NAME`, `scancel JOB`). It holds the task's output locks (inherited descriptors)
# until that is done, so the next run cannot start the task while an orphan still writes.
_HELD = threading.local()  # descriptors the watchdogs this thread starts keep open (output locks)


@contextmanager
def kept_by_watchdog(fds: Sequence[int]) -> Iterator[None]:
    """Within this block, watchdogs started by this thread inherit `fds` (the task's output
    locks): when cuberun dies, they stay held until the task is stopped and cleaned up."""
    previous = getattr(_HELD, "fds", ())
    _HELD.fds = (*previous, *fds)
    try:
        yield
    finally:
        _HELD.fds = previous


_DISARMED: list[int] = []  # pids of watchdogs told to exit, not reaped yet
_DISARMED_LOCK = threading.Lock()
_REAP_AT_EXIT = False
REAP_TIMEOUT = 5.0  # s an exiting cuberun waits for the watchdogs it disarmed (each exits at once)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:  # reaped already (a SIGCHLD handler of an embedding program)
        return True


def _reap_disarmed(wait: bool = False) -> None:
    """Reap the disarmed watchdogs that have exited (all of them, bounded, with `wait`: at exit):
    a watchdog is never left a zombie while cuberun runs on."""
    end = time.monotonic() + (REAP_TIMEOUT if wait else 0.0)
    with _DISARMED_LOCK:
        for pid in list(_DISARMED):
            while not _reaped(pid):
                if time.monotonic() >= end:
                    break
                time.sleep(0.005)  # each exits on the byte it was sent: a few ms at most
            else:
                _DISARMED.remove(pid)


class Watchdog:
    """Armed until disarm(): if cuberun dies first, the task is stopped and cleaned up."""

    def __init__(self, fd: int | None, pid: int | None) -> None:
        self._fd = fd
        self._pid = pid

    def disarm(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, b"x")
        except OSError:
            pass
        os.close(fd)
        pid, self._pid = self._pid, None
        if pid is not None:  # it exits on that byte: reaped later, never waited for here
            global _REAP_AT_EXIT
            with _DISARMED_LOCK:
                if not _REAP_AT_EXIT:
                    import atexit

                    atexit.register(_reap_disarmed, wait=True)
                    _REAP_AT_EXIT = True
                _DISARMED.append(pid)
            _reap_disarmed()


def watchdog(*, group: int | None = None, cleanup: Sequence[Sequence[str]] = (), grace: float = GRACE_TERMINATE) -> Watchdog:
    """Start the watchdog of a task's process group and/or its clean-up commands.

    When cuberun has one thread (a single task: the common case) the watchdog is a fork of this
    process that runs watchdog.watch() at once: no second interpreter start-up beside the task.
    With other threads running (parallel tasks), a fork could inherit a lock held by one of them,
    so the watchdog is a fresh `python -I -S watchdog.py` instead. Both behave the same."""
    if os.environ.get("CUBERUN_NO_WATCHDOG") == "1" or (not group and not cleanup):
        return Watchdog(None, None)
    read, write = os.pipe()  # both ends close-on-exec: no task ever inherits the write end
    keep = [fd for fd in getattr(_HELD, "fds", ()) if _is_open(fd)]
    commands = [[str(w) for w in command] for command in cleanup]
    try:
        if threading.active_count() == 1:
            pid = _fork_watchdog(read, keep, group or 0, grace, commands)
        else:
            pid = _exec_watchdog(read, keep, group or 0, grace, commands)
    except OSError:  # no watchdog (no memory, no process slot): the run goes on as before
        os.close(write)
        return Watchdog(None, None)
    finally:
        os.close(read)
    return Watchdog(write, pid)


def _fork_watchdog(read: int, keep: list[int], group: int, grace: float, commands: list[list[str]]) -> int:
    from cuberun import watchdog as script  # standard library only, loaded before the fork

    pid = os.fork()
    if pid:
        return pid
    try:  # the child: only os-level calls until watch(), and never a return into cuberun
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        os.dup2(read, 0, inheritable=True)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        low = 3
        for fd in sorted(set(keep)):
            if fd >= low:
                os.closerange(low, fd)
                low = fd + 1
        os.closerange(low, _max_fd())
        script.watch(group, grace, commands)
    finally:
        os._exit(0)


def _max_fd() -> int:
    try:
        return max(int(name) for name in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return os.sysconf("SC_OPEN_MAX")


def _exec_watchdog(read: int, keep: list[int], group: int, grace: float, commands: list[list[str]]) -> int:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")  # small, standard library only
    words = [w for command in commands for w in (str(len(command)), *command)]
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", script, str(group), str(grace), *words],
        stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=keep, start_new_session=True, close_fds=True,
    )
    pid = proc.pid
    proc.returncode = 0  # reaped by pid (_reap_disarmed): the Popen object is let go
    return pid


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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
    cleanup: Sequence[Sequence[str]] = (),
    timeout: float | None = None,
    expired: Callable[[], bool] | None = None,
) -> Outcome:
    """Run argv to completion, streaming output; Ctrl-C and SIGTERM stop it and its children.
    After `timeout` seconds it is stopped the same way (on_cancel, then SIGINT/SIGTERM/SIGKILL to
    its group) and the outcome is exit code 124 (like coreutils' timeout) with a reason.
    `expired`: a time limit the caller counts itself (e.g. from when a remote task started),
    asked every 0.1 s; once it answers True the run is stopped as at `timeout`.

    The child runs in its own session (process group), so a terminal Ctrl-C reaches only us;
    we forward SIGINT to the child's group (and call `on_cancel`, e.g. `docker kill`), then
    after `grace[0]` seconds SIGTERM, after `grace[1]` more SIGKILL. If cuberun itself dies
    (kill -9), a watchdog stops the child's group and runs the `cleanup` commands.
    """
    with handle_signals():
        if CANCEL.requested:  # cancelled before this task could start
            sig = CANCEL.received or signal.SIGINT
            return Outcome(128 + sig, 0.0, interrupted=True, received=sig)
        return _stream(argv, cwd, env, log, echo, on_cancel, grace, stdin, cleanup, timeout, expired)


def _stream(
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    log: IO[bytes] | None,
    echo: IO[bytes] | None,
    on_cancel: Callable[[], None] | None,
    grace: tuple[float, float],
    stdin: int | None,
    cleanup: Sequence[Sequence[str]] = (),
    timeout: float | None = None,
    expired: Callable[[], bool] | None = None,
) -> Outcome:
    out = echo if echo is not None else getattr(sys.stdout, "buffer", None)
    start = time.monotonic()
    timed_out_at: float | None = None
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
    guard = watchdog(group=proc.pid, cleanup=cleanup, grace=grace[1])
    fd = proc.stdout.fileno()

    def cancel() -> None:
        if on_cancel is not None:
            try:
                on_cancel()
            except Exception:  # cancellation must go on to the escalation
                pass
        _signal_group(proc.pid, signal.SIGINT)

    with CANCEL.lock:
        CANCEL.active[proc.pid] = cancel
        CANCEL.groups.add(proc.pid)
        already = CANCEL.requested
    if already:
        cancel()
    escalated = 0
    try:
        exited_at: float | None = None
        while True:
            if timed_out_at is None and ((timeout is not None and time.monotonic() - start >= timeout) or (expired is not None and expired())):
                timed_out_at = time.monotonic()
                cancel()
            if timed_out_at is not None:
                waited = time.monotonic() - timed_out_at
                if escalated == 0 and waited >= grace[0]:
                    _signal_group(proc.pid, signal.SIGTERM)
                    escalated = 1
                elif escalated == 1 and waited >= grace[0] + grace[1]:
                    _signal_group(proc.pid, signal.SIGKILL)
                    escalated = 2
            watched = [fd, 0] if _WATCH_STDIN[0] else [fd]
            try:
                ready, _, _ = select.select(watched, [], [], 0.1)
            except InterruptedError:
                ready = []
            if 0 in ready and fd not in ready:
                _check_hangup()
                continue
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except InterruptedError:
                    continue
                if not chunk:
                    break
                write_best_effort(out, chunk)
                write_best_effort(log, chunk)
                continue
            if CANCEL.requested:
                waited = time.monotonic() - CANCEL.at
                if escalated == 0 and waited >= grace[0]:
                    _signal_group(proc.pid, signal.SIGTERM)
                    escalated = 1
                elif escalated == 1 and waited >= grace[0] + grace[1]:
                    _signal_group(proc.pid, signal.SIGKILL)
                    escalated = 2
            if proc.poll() is not None:
                # the child is gone; a grandchild may still hold the pipe open
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 0.5:
                    break
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        guard.disarm()
        proc.stdout.close()
        if proc.stdin is not None:
            proc.stdin.close()
        with CANCEL.lock:
            CANCEL.active.pop(proc.pid, None)
            CANCEL.groups.discard(proc.pid)
    received = CANCEL.received
    if received is not None or timed_out_at is not None:
        _signal_group(proc.pid, signal.SIGKILL)  # leave nothing of a cancelled or timed-out run behind (a grandchild ignoring SIGTERM)
    elapsed = time.monotonic() - start
    killed_by = -returncode if returncode < 0 else None
    if received is not None:
        return Outcome(128 + received, elapsed, interrupted=True, signal=killed_by, received=received)
    if timed_out_at is not None:
        limit = timeout if timeout is not None and timed_out_at - start >= timeout else None  # None: the caller's `expired`
        return Outcome(EXIT_TIMEOUT, elapsed, reason=f"timed out after {limit:g} s (--timeout) and was stopped" if limit is not None else
                       "timed out and was stopped", details={"timed_out": True, "timeout": limit})
    return Outcome(exit_code_of(returncode), elapsed, signal=killed_by)


def _check_hangup() -> None:
    """Our stdin is readable: end of file (or an error) means the caller is gone."""
    try:
        data = os.read(0, 4096)
    except OSError:
        data = b""
    if not data and _WATCH_STDIN[0]:
        _WATCH_STDIN[0] = False
        CANCEL.handler(signal.SIGHUP, None)


def write_best_effort(stream: IO[bytes] | None, data: bytes) -> None:
    """Best effort: a closed pipe, or a full disk under the log, never stops the task. A real file
    is written unbuffered, so a failed write leaves nothing for its close() to flush (and fail) later."""
    if stream is None:
        return
    try:
        if isinstance(stream, io.BufferedWriter):
            stream.flush()
            view = memoryview(data)
            while view:
                view = view[os.write(stream.fileno(), view) :]
        else:
            stream.write(data)
            stream.flush()
    except (OSError, ValueError):
        pass


def which(name: str, path: str | None = None) -> str | None:
    """The executable `name` would start (shutil.which, without importing shutil: the
    docker run path asks this once per run)."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    for folder in (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep):
        candidate = os.path.join(folder or os.curdir, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


class Piped:
    """A program whose standard output the caller reads as it comes (`stdout`, a pipe); its
    standard error goes to a temporary file (read by `finish`, so that a chatty program never
    blocks on a full pipe). Made by `piped()`, which always stops and reaps it."""

    def __init__(self, proc: subprocess.Popen[bytes], errors: IO[bytes]) -> None:
        self.proc = proc
        self.stdout: IO[bytes] = proc.stdout  # type: ignore[assignment]
        self._errors = errors

    def finish(self) -> tuple[int, str]:
        """Close our end of its output, wait for it; its return code (negative: killed by that
        signal, e.g. SIGPIPE when it had more to write) and the last line of its standard error."""
        self.stdout.close()
        code = self.proc.wait()
        self._errors.seek(0)
        lines = self._errors.read(1 << 16).decode("utf-8", "replace").strip().splitlines()
        return code, lines[-1].strip() if lines else ""


@contextmanager
def piped(argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL) -> Iterator[Piped]:
    """Start argv (a list: never a shell) with its output read by the caller; FileNotFoundError
    when the program is missing. Killed (if still running) and reaped when the block ends."""
    import tempfile

    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=errors)
        try:
            yield Piped(proc, errors)
        finally:
            if proc.poll() is None:
                proc.kill()  # our own child, by its Popen
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()
