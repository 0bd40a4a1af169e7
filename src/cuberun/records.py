"""Run records: one JSON file (and one log) per task run, under <workspace>/.cuberun/runs/."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from cuberun import __version__
from cuberun.secretid import REDACTED as REDACTED  # one pattern (secretid), re-exported for older imports
from cuberun.secretid import SECRET_NAME as SECRET_NAME
from cuberun.secretid import redact_env as redact_env
from cuberun.valueclass import dataclass

RUNS_DIR = Path(".cuberun") / "runs"
RESERVE_NAME = ".reserved-space"  # in a running run's folder: freed to finish its record on a full disk
RESERVE_BYTES = 64 * 1024


def new_run_id(task: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", task)[:40]
    return f"{stamp}-{safe}-{os.urandom(3).hex()}"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass
class RunRecord:
    path: Path  # the record.json
    data: dict[str, Any]

    @property
    def log_path(self) -> Path:
        return self.path.parent / "output.log"

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def save(self) -> None:
        data = (json.dumps(self.data, indent=2, sort_keys=False) + "\n").encode("utf-8")
        try:
            self._replace(data)
        except OSError as exc:
            # a full disk (a task filled it): use the space held for this moment, else write in place
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) and ((self.release_reserve() and self._try_replace(data)) or self._overwrite(data)):
                return
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def _replace(self, data: bytes) -> None:
        """Atomically: a new file, renamed over the old one."""
        tmp = self.path.with_name(f".record.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise

    def _try_replace(self, data: bytes) -> bool:
        try:
            self._replace(data)
        except OSError:
            return False
        return True

    def _overwrite(self, data: bytes) -> bool:
        """Write the record over the old one in place, when the blocks it holds are enough."""
        try:
            if len(data) > os.stat(self.path).st_blocks * 512:
                return False
            with open(self.path, "r+b") as fh:
                fh.write(data)
                fh.truncate()
        except OSError:
            return False
        return True

    def reserve(self, size: int = RESERVE_BYTES) -> None:
        """Hold some disk space while the run runs, so that its record can still be finished when
        the task fills the disk (best effort: nothing is held when there is no room now)."""
        path = self.path.with_name(RESERVE_NAME)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(size))
            finally:
                os.close(fd)
        except OSError:
            self.release_reserve()

    def release_reserve(self) -> bool:
        try:
            self.path.with_name(RESERVE_NAME).unlink()
        except OSError:
            return False
        return True

    def finish(self, status: str, exit_code: int | None, **extra: Any) -> None:
        self.data["status"] = status
        self.data["exit_code"] = exit_code
        self.data["end"] = _now()
        start = self.data.get("_t0")
        if isinstance(start, float):
            self.data["duration_s"] = round(time.time() - start, 4)
        self.data.update(extra)
        self.data.pop("_t0", None)
        try:
            self.save()
        finally:
            self.release_reserve()


def start_record(workspace: Path, fields: dict[str, Any]) -> RunRecord:
    run_id = new_run_id(str(fields.get("task", "task")))
    folder = workspace / RUNS_DIR / run_id
    folder.mkdir(parents=True, exist_ok=False)
    data: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "start": _now(),
        "end": None,
        "exit_code": None,
        **fields,
        "host": os.uname().nodename,
        "user": os.environ.get("USER") or str(os.getuid()),
        "cuberun_version": __version__,
        "python": sys.version.split()[0],
        "os": " ".join((os.uname().sysname, os.uname().release, os.uname().machine)),
        "log": str(folder / "output.log"),
    }
    if os.environ.get("CUBERUN_OUTPUT_LOCKS") == "held-by-parent":
        data["nested"] = True  # written by the cuberun inside a batch job; the submitting run has its own record
    record = RunRecord(folder / "record.json", data)
    record.save()
    record.reserve()
    data["_t0"] = time.time()
    return record


def list_runs(workspace: Path) -> list[dict[str, Any]]:
    root = workspace / RUNS_DIR
    if not root.is_dir():
        return []
    runs = []
    for entry in sorted(root.iterdir()):
        path = entry / "record.json"
        try:
            runs.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    runs.sort(key=lambda r: str(r.get("start", "")))
    return runs


def match_runs(runs: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    """The runs whose id is `part`, else those whose id contains it (a unique part of an id)."""
    exact = [r for r in runs if str(r.get("run_id", "")) == part]
    if exact or not part:
        return exact
    return [r for r in runs if part in str(r.get("run_id", ""))]


def find_run(workspace: Path, run_id: str) -> dict[str, Any]:
    """The record of run `run_id` (or of the one run whose id contains it); a UsageError with the
    close ids when there is none, or the candidates when several match."""
    from cuberun.errors import UsageError
    from cuberun.hints import did_you_mean

    runs = list_runs(workspace)
    matches = match_runs(runs, run_id)
    if not matches:
        ids = [str(r.get("run_id")) for r in runs]
        raise UsageError(f"no run '{run_id}' in {workspace}", did_you_mean(run_id, ids, "run") if ids else "no runs recorded yet")
    if len(matches) > 1:
        shown = ", ".join(str(r.get("run_id")) for r in matches[-3:])
        more = f" (and {len(matches) - 3} more)" if len(matches) > 3 else ""
        raise UsageError(f"run id '{run_id}' is ambiguous: {len(matches)} runs match", f"give more of the id, e.g. one of {shown}{more}")
    return matches[0]


def log_tail(path: str, size: int = 8192) -> str:
    """The last `size` bytes of a run's log as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
