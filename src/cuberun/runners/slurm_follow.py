"""Following a Slurm job: tailing its log files into the run log and our stdout."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from cuberun.errors import BackendError
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    pass

from cuberun.runners.slurm_jobs import JobInfo


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

    def pump(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                self.seen = True
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # truncated: the job was requeued and started over
                    self.offset = 0
                fh.seek(self.offset)
                copied = 0
                while self.offset < size:
                    chunk = fh.read(min(1 << 20, size - self.offset))
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    copied += len(chunk)
                    self.out.write(chunk)
                return copied
        except OSError:
            return 0

    def finish(self) -> None:
        _finish_tails([self])


def _finish_tails(tails: Sequence[_LogTail]) -> None:
    """Their jobs have ended: copy the rest (waiting briefly, and once for all of them, for logs
    a shared filesystem shows late or that a job cancelled before it started never wrote)."""
    ended = list(tails)
    for _ in range(10):
        tails = [t for t in tails if not (t.pump() == 0 and t.seen)]
        if not tails:
            break
        time.sleep(0.05)
    for tail in ended:
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

    @property
    def finished(self) -> bool:
        return self.info is not None and self.info.finished

