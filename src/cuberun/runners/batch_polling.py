"""A BatchRunner for a scheduler that answers two questions: "what state is job X in" and
"remove job X" (HTCondor, PBS, LSF, ...). `PollingBatchRunner` holds `follow`, `cancel` and
`interrupted` once: a runner adds `jobs` (the jobs of a submission, one per task, with the files
they write), `status`, `remove` and `bounds`, on top of `plan_batch`/`plan_array` and `submit`.

Each job is followed in turn: its status polled (fast at first, then gentler: `poll_interval`),
its files (stdout, stderr) copied to our stdout and the task's run log as they grow. Every wait
is bounded: `max_wait` from the start of the follow (the job is removed, exit 124), `lost_after`
without an answer from the scheduler (BackendError: the job is left alone and named),
`unknown_after` polls that find the job nowhere (exit 125), `cancel_wait` after a removal. A
job that will not go on by itself (`stuck`, e.g. held) is removed and reported with the reason.
Ctrl-C / SIGTERM removes the whole submission (and the ones after it), waits until the
scheduler confirms, exit 128+signal; a second signal removes it again.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

from cuberun.console import say
from cuberun.errors import EXIT_BACKEND, BackendError
from cuberun.runners.batch import BatchRunner, poll_interval
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.process import Outcome

P = TypeVar("P")
S = TypeVar("S")
EXIT_STOPPED_WAITING = 124  # like timeout(1): cuberun stopped waiting and removed the job


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job."""

    state: str  # the scheduler's word for it (Idle, Running, Completed, Held, ...)
    ended: bool = False  # the job is over (completed or removed)
    stuck: bool = False  # the job will not go on by itself (held): remove it and report why
    exit_code: int | None = None  # the task's exit code (128+N for a signal), when ended normally
    signal: int | None = None
    reason: str | None = None  # one line in the scheduler's terms


@dataclass(frozen=True)
class Job:
    """One task's job in a submission: its scheduler id, the files it writes (streamed), its name
    in messages ("HTCondor job 12.0")."""

    job_id: str
    files: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class FollowBounds:
    poll_interval: float = 1.0
    max_wait: float = 7 * 24 * 3600.0
    lost_after: float = 60.0  # no answer from the scheduler for this long: give up (the job is left alone and named)
    cancel_wait: float = 30.0  # after a removal, wait at most this long for the scheduler to confirm it
    unknown_after: int = 20  # polls in a row that find the job nowhere


class LogTail:
    """Copies what a job appends to a file to the sinks (our stdout, the run log)."""

    def __init__(self, path: str, sinks: Sequence[IO[bytes] | None]) -> None:
        self.path = path
        self.sinks = sinks
        self.offset = 0

    def pump(self) -> int:
        from cuberun.process import write_best_effort

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


class PollingBatchRunner(BatchRunner[P, S]):
    """A BatchRunner whose follow, cancel and interrupt are status polls and removals."""

    # -- the hooks ------------------------------------------------------------------------------
    def jobs(self, submission: S) -> Sequence[Job]:
        """The jobs of a submission, one per task (`tasks_in`), in order."""
        raise NotImplementedError

    def status(self, job_id: str) -> tuple[JobStatus | None, str | None]:
        """(the job's status, or None when the scheduler does not know it (yet); a problem talking to it)."""
        raise NotImplementedError

    def remove(self, ids: Sequence[str]) -> None:
        """Remove these jobs or submissions (only ever ones this run submitted); raises nothing."""
        raise NotImplementedError

    def submission_ids(self, submission: S) -> list[str]:
        """What removes the whole submission (e.g. a cluster id). Default: its jobs' ids."""
        return [job.job_id for job in self.jobs(submission)]

    def bounds(self) -> FollowBounds:
        return FollowBounds()

    def finish(self, submission: S, index: int, outcome: Outcome) -> Outcome:
        """The outcome of job `index` as recorded (e.g. with the scheduler's ids as details)."""
        return outcome

    # -- BatchRunner ------------------------------------------------------------------------------
    def follow(self, submission: S, later: Sequence[S], log_path: str, cancel: Any) -> Outcome:
        return self.follow_all(submission, later, [log_path], cancel)[0]

    def follow_all(self, submission: S, later: Sequence[S], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        """Each job in turn (they may run side by side; a job's files are streamed when its turn
        comes); Ctrl-C removes the submission and the ones after it, and ends the follow."""
        whole = [i for s in (submission, *later) for i in self.submission_ids(s)]
        outcomes: list[Outcome] = []
        for index, (job, log_path) in enumerate(zip(self.jobs(submission), log_paths, strict=False)):
            outcome = self.finish(submission, index, self.follow_job(job, whole, log_path, cancel))
            outcomes.append(outcome)
            if outcome.interrupted:
                break
        return outcomes

    def cancel(self, submissions: Sequence[S], current: S | None, outcome: Outcome | None) -> None:
        if outcome is not None and outcome.interrupted:
            return  # follow_all removed them, and waited
        ids = [i for s in submissions if outcome is None or s is not current for i in self.submission_ids(s)]
        if ids:
            self.remove(ids)

    def interrupted(self, submitted: Sequence[S], cancel: Any) -> Outcome:
        from cuberun.process import Outcome

        ids = [i for s in submitted for i in self.submission_ids(s)]
        if ids:
            say(f"removing {' '.join(ids)}")
            self.remove(ids)
        sig = int(cancel.received or signal.SIGINT)
        return Outcome(128 + sig, 0.0, interrupted=True, received=sig, reason=f"was interrupted ({signal.Signals(sig).name}) before the jobs ran")

    # -- following one job --------------------------------------------------------------------------
    def follow_job(self, job: Job, whole: Sequence[str], log_path: str, cancel: Any) -> Outcome:
        """Wait for the job to end, streaming its files; Ctrl-C removes `whole` (its submission and
        the ones after it)."""
        from cuberun.process import Outcome

        bounds = self.bounds()
        start = time.monotonic()
        with open(log_path, "ab") as log:
            tails = [LogTail(f, [getattr(sys.stdout, "buffer", None), log]) for f in job.files]
            failing_since: float | None = None
            misses = 0
            next_poll = start
            last: JobStatus | None = None
            while True:
                for t in tails:
                    t.pump()
                if cancel.requested:
                    return self._removed(job, whole, tails, cancel, start, last)
                now = time.monotonic()
                if now >= next_poll:
                    status, problem = self.status(job.job_id)
                    if problem is not None:
                        failing_since = failing_since or now
                        if now - failing_since > bounds.lost_after:
                            raise BackendError(f"lost contact with the scheduler while waiting for {job.what}: {problem}",
                                               f"the job may still run; remove it with the scheduler's own tool ({job.job_id})")
                    else:
                        failing_since = None
                        if status is None:
                            misses += 1
                            if misses >= bounds.unknown_after:
                                return Outcome(EXIT_BACKEND, now - start, reason=f"{job.what} is no longer known to the scheduler (not in the queue or its history)")
                        else:
                            misses = 0
                            last = status
                            if status.ended:
                                break
                            if status.stuck:
                                self.remove([job.job_id])
                                self._confirm_removed(job, tails, None)
                                return Outcome(EXIT_BACKEND, time.monotonic() - start,
                                               reason=f"{job.what} was {status.state}: {status.reason or 'no reason given'}; removed it")
                    next_poll = now + poll_interval(now - start, bounds.poll_interval)
                if now - start > bounds.max_wait:
                    self.remove([job.job_id])
                    self._confirm_removed(job, tails, None)
                    return Outcome(EXIT_STOPPED_WAITING, time.monotonic() - start,
                                   reason=f"{job.what} still {last.state if last else 'unknown'} after max_wait {bounds.max_wait:g} s: stopped waiting and removed it")
                time.sleep(0.1)
            for t in tails:
                t.pump()
        code = last.exit_code if last.exit_code is not None else EXIT_BACKEND
        return Outcome(code, time.monotonic() - start, signal=last.signal,
                       reason=None if code == 0 else f"{job.what} {last.reason or f'ended {last.state}'} (exit code {code})")

    def _confirm_removed(self, job: Job, tails: Sequence[LogTail], cancel: Any, whole: Sequence[str] = ()) -> JobStatus | None:
        """Bounded wait until the scheduler reports the job ended; a second Ctrl-C removes `whole` again."""
        end = time.monotonic() + self.bounds().cancel_wait
        again = False
        status: JobStatus | None = None
        while time.monotonic() < end:
            status, _problem = self.status(job.job_id)
            for t in tails:
                t.pump()
            if status is not None and status.ended:
                return status
            if cancel is not None and cancel.count >= 2 and not again:
                again = True
                self.remove(whole or [job.job_id])
            if cancel is not None and cancel.count >= 3:
                break
            time.sleep(0.2)
        return status

    def _removed(self, job: Job, whole: Sequence[str], tails: Sequence[LogTail], cancel: Any, start: float, last: JobStatus | None) -> Outcome:
        from cuberun.process import Outcome

        if last is None or not last.ended:
            say(f"removing {job.what}")
            self.remove(whole or [job.job_id])
            last = self._confirm_removed(job, tails, cancel, whole) or last
        sig = int(cancel.received or signal.SIGINT)
        state = last.state if last is not None else "unknown"
        return Outcome(128 + sig, time.monotonic() - start, interrupted=True, received=sig,
                       reason=f"was interrupted ({signal.Signals(sig).name}); {job.what} is {state}")
