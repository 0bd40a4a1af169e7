"""Per-output locks, so two runs on one workspace never write the same output at once."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cuberun.errors import BusyError

LOCK_DIR = Path(".cuberun") / "locks"
HELD_BY_PARENT_ENV = "CUBERUN_OUTPUT_LOCKS"  # "held-by-parent" in a job that a locking cuberun submitted (Slurm)


@contextmanager
def output_locks(workspace: Path, paths: Sequence[str], owner: dict[str, str]) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock for every output path (in a fixed order)."""
    if os.environ.get(HELD_BY_PARENT_ENV) == "held-by-parent":  # a batch job: the cuberun that submitted it holds them
        yield
        return
    folder = workspace / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    held: list[IO[str]] = []
    try:
        for path in sorted(set(paths)):
            name = hashlib.sha256(path.encode()).hexdigest()[:24] + ".lock"
            fh = open(folder / name, "a+", encoding="utf-8")  # closed in finally
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                try:
                    other = json.loads(fh.read() or "{}")
                except ValueError:
                    other = {}
                fh.close()
                who = f"task '{other.get('task', '?')}', pid {other.get('pid', '?')}, run {other.get('run', '?')}"
                raise BusyError(f"output {path} is in use by another cuberun run ({who})", "wait for it to finish, or use another --workspace") from None
            fh.seek(0)
            fh.truncate()
            held.append(fh)
            try:  # unbuffered: a full disk fails here, naming the file, and leaves nothing to flush later
                os.write(fh.fileno(), json.dumps({**owner, "pid": str(os.getpid()), "path": path}).encode())
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(folder / name)) from None
        yield
    finally:
        for lock in reversed(held):
            try:
                lock.seek(0)
                lock.truncate()
                fcntl.flock(lock, fcntl.LOCK_UN)
            finally:
                lock.close()
