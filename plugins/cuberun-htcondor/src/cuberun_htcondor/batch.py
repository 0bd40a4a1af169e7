"""A compact follow loop for batch schedulers: poll the job's status, stream its output files,
remove the job on Ctrl-C / SIGTERM, on a hold, or when the wait bound is reached.

Kept free of anything HTCondor-specific (the scheduler is the `Scheduler` protocol), so it can
move onto a shared batch-runner base in cuberun later. Every wait is bounded: `max_wait` from
submission, `lost_after` without an answer from the scheduler, `cancel_wait` after a removal.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, Protocol

from cuberun.errors import EXIT_BACKEND, BackendError
from cuberun.process import Outcome, write_best_effort
from cuberun.valueclass import dataclass

EXIT_STOPPED_WAITING = 124  # like timeout(1): cuberun stopped waiting and removed the job


@dataclass(frozen=True)
class Status:
    state: str  # the scheduler's word for it (Idle, Running, Completed, Held, ...)
    ended: bool = False  # the job is over (completed or removed)
    stuck: bool = False  # the job will not go on by itself (held): remove it and report why
    exit_code: int | None = None  # the task's exit code (128+N for a signal), when ended normally
    signal: int | None = None
    reason: str | None = None  # one line in the scheduler's terms


class Scheduler(Protocol):
    def status(self, job_id: str) -> tuple[Status | None, str | None]:
        """(the job's status or None when the scheduler does not know it (yet), a problem talking to it)."""

    def remove(self, job_id: str, *, whole_run: bool = False) -> None:
        """Remove the job (only ever one this run submitted); whole_run: every job of this run (Ctrl-C)."""


class Tail:
    """Copies what a job appends to a file to the sinks (our stdout, the run log)."""

    def __init__(self, path: str, sinks: Sequence[IO[bytes] | None]) -> None:
        self.path = path
        self.sinks = sinks
        self.offset = 0

    def pump(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # rewritten (the job restarted)
                    self.offset = 0
                fh.seek(self.offset)
                copied = 0
                while self.offset < size:
                    chunk = fh.read(min(1 << 20, size - self.offset))
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    copied += len(chunk)
                    for sink in self.sinks:
                        write_best_effort(sink, chunk)
                return copied
        except OSError:
            return 0


@dataclass(frozen=True)
class Bounds:
    poll_interval: float = 1.0
    max_wait: float = 7 * 24 * 3600.0
    lost_after: float = 60.0  # no answer from the scheduler for this long: give up (the job is left alone and named)
    cancel_wait: float = 30.0  # after a removal, wait at most this long for the scheduler to confirm it
    unknown_after: int = 20  # polls in a row that find the job nowhere


def follow(sched: Scheduler, job_id: str, files: Sequence[str], log_path: str, cancel: Any, bounds: Bounds, what: str) -> Outcome:
    """Wait for the job to end, streaming `files`; `what` names it in messages ("HTCondor job 12.0")."""
    start = time.monotonic()
    out = getattr(sys.stdout, "buffer", None)
    with open(log_path, "ab") as log:
        tails = [Tail(f, [out, log]) for f in files]
        failing_since: float | None = None
        misses = 0
        next_poll = start
        last: Status | None = None
        while True:
            for t in tails:
                t.pump()
            if cancel.requested:
                return _removed(sched, job_id, tails, cancel, bounds, start, what, last)
            now = time.monotonic()
            if now >= next_poll:
                status, problem = sched.status(job_id)
                if problem is not None:
                    failing_since = failing_since or now
                    if now - failing_since > bounds.lost_after:
                        raise BackendError(f"lost contact with the scheduler while waiting for {what}: {problem}",
                                           f"the job may still run; remove it with the scheduler's own tool ({job_id})")
                else:
                    failing_since = None
                    if status is None:
                        misses += 1
                        if misses >= bounds.unknown_after:
                            return Outcome(EXIT_BACKEND, now - start, reason=f"{what} is no longer known to the scheduler (not in the queue or its history)")
                    else:
                        misses = 0
                        last = status
                        if status.ended:
                            break
                        if status.stuck:
                            sched.remove(job_id)
                            _confirm_removed(sched, job_id, tails, None, bounds)
                            return Outcome(EXIT_BACKEND, time.monotonic() - start, reason=f"{what} was {status.state}: {status.reason or 'no reason given'}; removed it")
                # fast while a short job may already be done, gentler on the scheduler later
                waited = now - start
                next_poll = now + (min(bounds.poll_interval, 0.2 + waited / 20) if waited < 120 else max(bounds.poll_interval, 5.0))
            if now - start > bounds.max_wait:
                sched.remove(job_id)
                _confirm_removed(sched, job_id, tails, None, bounds)
                return Outcome(EXIT_STOPPED_WAITING, time.monotonic() - start,
                               reason=f"{what} still {last.state if last else 'unknown'} after max_wait {bounds.max_wait:g} s: stopped waiting and removed it")
            time.sleep(0.1)
        for t in tails:
            t.pump()
    assert last is not None
    code = last.exit_code if last.exit_code is not None else EXIT_BACKEND
    return Outcome(code, time.monotonic() - start, signal=last.signal,
                   reason=None if code == 0 else f"{what} {last.reason or f'ended {last.state}'} (exit code {code})")


def _confirm_removed(sched: Scheduler, job_id: str, tails: Sequence[Tail], cancel: Any, bounds: Bounds) -> Status | None:
    """Bounded wait until the scheduler reports the job ended; a second Ctrl-C removes it again (forcibly)."""
    end = time.monotonic() + bounds.cancel_wait
    forced = False
    status: Status | None = None
    while time.monotonic() < end:
        status, _problem = sched.status(job_id)
        for t in tails:
            t.pump()
        if status is not None and status.ended:
            return status
        if cancel is not None and cancel.count >= 2 and not forced:
            forced = True
            sched.remove(job_id, whole_run=True)
        if cancel is not None and cancel.count >= 3:
            break
        time.sleep(0.2)
    return status


def _removed(sched: Scheduler, job_id: str, tails: Sequence[Tail], cancel: Any, bounds: Bounds, start: float, what: str,
             last: Status | None) -> Outcome:
    from cuberun.console import say

    if last is None or not last.ended:
        say(f"removing {what}")
        sched.remove(job_id, whole_run=True)
        last = _confirm_removed(sched, job_id, tails, cancel, bounds) or last
    sig = int(cancel.received or signal.SIGINT)
    state = last.state if last is not None else "unknown"
    return Outcome(128 + sig, time.monotonic() - start, interrupted=True, received=sig,
                   reason=f"was interrupted ({signal.Signals(sig).name}); {what} is {state}")
