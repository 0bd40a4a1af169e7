"""Run records: one JSON file (and one log) per task run, under <workspace>/.cuberun/runs/."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import stat
import sys
import threading
import time
from pathlib import Path

from cuberun import __version__
from cuberun.secretid import REDACTED as REDACTED  # one pattern (secretid), re-exported for older imports
from cuberun.secretid import SECRET_NAME as SECRET_NAME
from cuberun.secretid import redact_env as redact_env
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
        from cuberun.safeio import write_file

        write_file(self.path, data, what="run record", make_parents=False)

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
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return False
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
        except OSError:
            return False
        return True

    def reserve(self, size: int = RESERVE_BYTES) -> None:
        """Hold some disk space while the run runs, so that its record can still be finished when
        the task fills the disk (best effort: nothing is held when there is no room now)."""
        path = self.path.with_name(RESERVE_NAME)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
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


_SEQUENCE = itertools.count()
_SEQUENCE_LOCK = threading.Lock()


def start_record(workspace: Path, fields: dict[str, Any]) -> RunRecord:
    from cuberun.safeio import make_dirs

    run_id = new_run_id(str(fields.get("task", "task")))
    folder = workspace / RUNS_DIR / run_id
    make_dirs(folder.parent, what="the run records folder")
    folder.mkdir(exist_ok=False)
    with _SEQUENCE_LOCK:
        sequence = next(_SEQUENCE)
    data: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "start": _now(),
        "end": None,
        "exit_code": None,
        **fields,
        "sequence": sequence,
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
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


MAX_RECORD_BYTES = 16 * 1024 * 1024


def list_runs(workspace: Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """Every run record of a workspace, oldest first (records one command created, in the order
    it created them). A damaged record is left out with a one-line warning naming it; a record
    still `running` whose cuberun is gone (killed) is shown as `lost`."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    root = workspace / RUNS_DIR
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    runs = []
    for entry in entries:
        if not entry.is_dir():
            continue  # a stray file beside the run folders
        path = Path(entry.path) / "record.json"
        try:
            data = json.loads(read_regular(path, MAX_RECORD_BYTES, what="run record").decode("utf-8"))
            problem = _shape_problem(data)
        except CuberunError as exc:
            if "does not exist" in exc.message:
                continue  # a folder that is not a run, or a run being created
            problem = exc.message.split(": ", 1)[-1]
        except (ValueError, UnicodeDecodeError) as exc:
            problem = f"not valid JSON ({str(exc).split(':')[0]})"
        if problem:
            if warn:
                from cuberun.console import warn as say_warning

                say_warning(f"ignoring the damaged run record {path}: {problem}")
            continue
        runs.append(_with_liveness(data))
    return _in_order(runs)


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    if not isinstance(data.get("run_id"), str) or not data["run_id"]:
        return "it has no run_id"
    for key in ("task", "platform", "status", "start", "invocation_id", "workspace", "log"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            return f"'{key}' is {type(data[key]).__name__}, not a string"
    for key in ("parameters", "inputs", "outputs", "cube", "sweep", "runner_fingerprint", "overrides"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            return f"'{key}' is {type(data[key]).__name__}, not an object"
    for key in ("command", "steps"):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            return f"'{key}' is {type(data[key]).__name__}, not a list"
    return None


def _in_order(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first: commands by the start of their first record, and the records of one command
    in the order it created them (`sequence`), whatever the clock said (ties in the millisecond)."""
    first: dict[str, str] = {}
    for r in runs:
        inv = str(r.get("invocation_id") or r["run_id"])
        start = str(r.get("start") or "")
        if inv not in first or start < first[inv]:
            first[inv] = start

    def key(r: dict[str, Any]) -> tuple[str, str, int, str]:
        inv = str(r.get("invocation_id") or r["run_id"])
        seq = r.get("sequence")
        return (first[inv], inv, seq if isinstance(seq, int) and not isinstance(seq, bool) else -1, str(r.get("start") or ""))

    return sorted(runs, key=key)


def _with_liveness(record: dict[str, Any]) -> dict[str, Any]:
    """A `running` record of this host whose cuberun process is gone is `lost`."""
    if record.get("status") != "running" or record.get("host") != os.uname().nodename:
        return record
    pid, started = record.get("pid"), record.get("pid_start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return record
    if process_alive(pid, started if isinstance(started, int) else None):
        return record
    return {**record, "status": "lost", "error": record.get("error") or f"cuberun (pid {pid}) ended without finishing this record"}


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc): with its pid, it names one
    process even after the pid is reused. None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started: int | str | None = None) -> bool:
    """Whether process `pid` runs (and, when `started` is given, is the one that started then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    if started in (None, ""):
        return True
    now = process_start(pid)
    return now is None or str(now) == str(started)


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
    from cuberun.safeio import read_tail

    data = read_tail(path, size)
    return data.decode("utf-8", "replace") if data is not None else ""
