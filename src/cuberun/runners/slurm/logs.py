"""Following a Slurm job: tailing its log files into the run log and our stdout, and reading what
it left (its handshake events, the jobcomp log) once it ended."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cuberun.errors import BackendError
from cuberun.handshake import MARKER
from cuberun.runners import nested
from cuberun.runners.slurm.jobs import JobInfo, expand_task_ids, parse_job_line
from cuberun.valueclass import dataclass
from cuberun.valueclass import replace as replace_fields


# -- following a job --------------------------------------------------------------------------
class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class _Prefixed:
    """A sink that writes whole lines, each after a prefix (`[123_4] `), so that the logs of an
    array's elements can share our stdout; a partial line waits for its end (or for close)."""

    def __init__(self, out: _Sink | None, prefix: str) -> None:
        self.out = out
        self.prefix = prefix.encode()
        self.partial = b""

    def write(self, data: bytes) -> int:
        *lines, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > 65536:  # a progress bar without line ends
            lines.append(self.partial)
            self.partial = b""
        if lines:
            _write(self.out, b"".join(self.prefix + line + b"\n" for line in lines))
        return len(data)

    def flush(self) -> None:
        pass  # each write is flushed

    def close(self) -> None:
        if self.partial:
            _write(self.out, self.prefix + self.partial + b"\n")
            self.partial = b""


class _Fanout:
    def __init__(self, sinks: Sequence[_Sink | None]) -> None:
        self.sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self.sinks:
            _write(sink, data)
        return len(data)

    def flush(self) -> None:
        pass  # each write is flushed


class _LogTail:
    """Follows a job log as Slurm writes it and copies new bytes to the sinks, without the
    nested cuberun's handshake lines (those stay in the job log, for the outcome)."""

    def __init__(self, path: str, sinks: Sequence[_Sink | None]) -> None:
        from cuberun.runners.nested import HandshakeFilter

        self.path = path
        self.sinks = sinks
        self.out = HandshakeFilter(_Fanout(sinks))
        self.offset = 0
        self.seen = False
        self.last = b""  # the end of what was copied: ends the log with the job's cuberun `end` event?

    def pump(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                self.seen = True
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # truncated: the job was requeued and started over
                    self.offset = 0
                    self.last = b""
                fh.seek(self.offset)
                copied = 0
                while self.offset < size:
                    chunk = fh.read(min(1 << 20, size - self.offset))
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    copied += len(chunk)
                    self.last = (self.last + chunk)[-_END_WINDOW:]
                    self.out.write(chunk)
                return copied
        except OSError:
            return 0

    @property
    def ended(self) -> bool:
        """What was copied ends with the job's cuberun's `end` handshake event: the last line it
        writes before it exits (the job script execs it), so its log is whole."""
        line = self.last.rstrip(b"\n").rpartition(b"\n")[2]
        return self.last.endswith(b"\n") and line.startswith(MARKER) and nested.events(line).exit_code is not None

    def finish(self, cancel: Any = None) -> None:
        _finish_tails([self], cancel)


_END_WINDOW = 4096  # the bytes kept to find the `end` event (one short JSON line)
LOG_GRACE = 2.0  # after a job ended: how long its log's size must stay the same before it counts as whole
LOG_WAIT = 5.0  # ... and the bound of that wait, for a log that keeps growing
LOG_POLL = 0.1


def _finish_tails(tails: Sequence[_LogTail], cancel: Any = None, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> None:
    """Their jobs have ended: copy the rest. A shared filesystem can show a log's last writes
    (or the whole log) late, so a tail is done once its size (or its absence: a job cancelled
    before it started writes none) stayed the same across polls spanning LOG_GRACE; at once when
    its log ends with the job's cuberun `end` event. All of them wait together, at most LOG_WAIT;
    after a cancel (`cancel.requested`) there is one last read, no wait."""
    start = clock()
    since = {id(t): start for t in tails}  # when each one last changed
    waiting = list(tails)
    while True:
        now = clock()
        left = []
        for tail in waiting:
            was_seen = tail.seen
            if tail.pump() > 0 or tail.seen != was_seen:
                since[id(tail)] = now
            if not tail.ended and now - since[id(tail)] < LOG_GRACE:
                left.append(tail)
        waiting = left
        if not waiting or (cancel is not None and cancel.requested) or now - start >= LOG_WAIT:
            break
        sleep(LOG_POLL)
    for tail in tails:
        tail.out.close()  # a held fragment was not a handshake line


def _write(sink: _Sink | None, data: bytes) -> None:
    from cuberun.process import write_best_effort  # a closed pipe or a full disk never stops the following

    write_best_effort(sink, data)  # type: ignore[arg-type]


class ControllerLost(BackendError):
    """The controller stopped answering while a job ran: the job is left alone (it may still run)."""


@dataclass
class _Job:
    task: str
    job_id: str
    log_file: str
    script: str
    submitted_at: float
    dependency: str | None = None
    info: JobInfo | None = None
    array_job_id: str | None = None  # an element of a job array: job_id is "<array_job_id>_<array_task_id>"
    array_task_id: int | None = None
    element_logs: tuple[str, ...] = ()  # a job array (the submission, not one element): each element's log

    @property
    def finished(self) -> bool:
        return self.info is not None and self.info.finished

# -- reading what a job left: the jobcomp log, its own log ----------------------------------------
def _search_jobcomp(path: str, job_id: str, window: int = 4 << 20) -> JobInfo | None:
    """The last line for `job_id` in a jobcomp/filetxt log (read from the end, bounded)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - window))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    array_id, _, index = job_id.partition("_")
    if not index:
        prefix = f"JobId={job_id} "
        for line in reversed(text.splitlines()):
            if line.startswith(prefix):
                return parse_job_line(line, source="jobcomp")
        return None
    # an element that ran has its own line (ArrayJobId=, ArrayTaskId=); elements still pending when
    # the array was cancelled share the array's line, which has no array fields
    shared = None
    for line in reversed(text.splitlines()):
        if f"ArrayJobId={array_id} " in line:
            info = parse_job_line(line, source="jobcomp")
            if info is not None and index.isdigit() and int(index) in expand_task_ids(info.fields.get("ArrayTaskId", "")):
                return replace_fields(info, job_id=job_id)
        elif shared is None and line.startswith(f"JobId={array_id} "):
            shared = parse_job_line(line, source="jobcomp")
    return replace_fields(shared, job_id=job_id) if shared is not None else None


def _read_head_tail(path: str, size: int = 65536) -> tuple[str, str]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(size)
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - size))
            tail = fh.read()
    except OSError:
        return "", ""
    return head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")


def _inner_run_id(log_file: str) -> str | None:
    """The job's cuberun run, from its handshake `start` event."""
    head, _ = _read_head_tail(log_file)
    return nested.events(head).run_id


def _inner_timeout(log_file: str) -> float | None:
    """The time limit (s) at which the job's cuberun stopped the task (its handshake `error` event), else None."""
    _, tail = _read_head_tail(log_file, 8192)
    return nested.events(tail).timeout


def _inner_error(log_file: str) -> str | None:
    """The job's cuberun's own error (its handshake `error` event), unless it only reports the
    task's exit code; or why that cuberun cannot talk to this one."""
    _, tail = _read_head_tail(log_file, 8192)
    found = nested.events(tail)
    problem = nested.mismatch(found, tail, "in the job")
    if problem is not None:
        return f"{problem}: {nested.MISMATCH_HINT}"
    if found.error is None or found.error_kind == "TaskFailed":
        return None
    return f"cuberun: error: {found.error}"[:300]
