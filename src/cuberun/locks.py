"""Per-output locks, so two runs on one workspace never write the same output at once.

A lock is an flock on a file under <workspace>/.cuberun/locks/ that names its owner (task,
invocation, host, pid). The task's watchdog (process.watchdog) inherits the lock descriptors: when
cuberun is killed, the locks stay held until the task is stopped and cleaned up, and a new run
waits for that clean-up (a bounded wait) instead of starting the task beside an orphan.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cuberun.digests import sha256
from cuberun.errors import BusyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LOCK_DIR = Path(".cuberun") / "locks"
HELD_BY_PARENT_ENV = "CUBERUN_OUTPUT_LOCKS"  # "held-by-parent" in a job that a locking cuberun submitted (Slurm)
ORPHAN_WAIT = float(os.environ.get("CUBERUN_ORPHAN_WAIT", "60"))  # seconds to wait for a killed run's clean-up


@contextmanager
def output_locks(workspace: Path, paths: Sequence[str], owner: dict[str, str]) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock for every output path (in a fixed order)."""
    if os.environ.get(HELD_BY_PARENT_ENV) == "held-by-parent":  # a batch job: the cuberun that submitted it holds them
        yield
        return
    from cuberun.process import kept_by_watchdog
    from cuberun.records import process_start
    from cuberun.safeio import make_dirs, open_lock_file

    folder = workspace / LOCK_DIR
    make_dirs(folder, what="cuberun's lock folder")
    held: list[int] = []
    me = {**owner, "pid": str(os.getpid()), "host": os.uname().nodename, "pid_start": str(process_start(os.getpid()) or "")}
    try:
        for path in sorted(set(paths)):
            name = sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".lock"
            fd = open_lock_file(folder / name)
            try:
                _acquire(fd, path, owner)
            except BaseException:
                os.close(fd)
                raise
            held.append(fd)
            try:  # unbuffered: a full disk fails here, naming the file, and leaves nothing to flush later
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({**me, "path": path}).encode("utf-8", "surrogateescape"), 0)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(folder / name)) from None
        with kept_by_watchdog(held):
            yield
    finally:
        for fd in reversed(held):
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            finally:
                os.close(fd)


def _owner(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 64 * 1024, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _acquire(fd: int, path: str, me: dict[str, str]) -> None:
    """The lock, or a BusyError naming who holds it. When its holder is a cuberun that is gone
    (killed), its watchdog is still stopping the orphaned task: wait for that, bounded."""
    from cuberun.records import process_alive

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    other = _owner(fd)
    if other.get("invocation") and other.get("invocation") == me.get("invocation"):
        raise BusyError(f"output {path} is also written by task '{other.get('task', '?')}' of this run, at the same time",
                        "give one of the tasks another output path, or run them one after the other (--jobs 1)")
    gone = other.get("host") == os.uname().nodename and str(other.get("pid", "")).isdigit() and not process_alive(
        int(other["pid"]), other.get("pid_start") or None)
    if gone:
        from cuberun.console import say

        say(f"waiting for the clean-up of task '{other.get('task', '?')}' of a killed cuberun run (pid {other['pid']}), "
            f"which wrote {path}")
        deadline = time.monotonic() + ORPHAN_WAIT
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.05)
        raise BusyError(f"output {path} is still held by the clean-up of a killed cuberun run (pid {other['pid']}) after {ORPHAN_WAIT:g} s",
                        "a process of that run may not stop; look for it (ps -ef) and stop it")
    who = f"task '{other.get('task', '?')}', pid {other.get('pid', '?')}"
    if other.get("host") and other.get("host") != os.uname().nodename:
        who += f" on {other['host']}"
    raise BusyError(f"output {path} is in use by another cuberun run ({who})", "wait for it to finish, or use another --workspace")
