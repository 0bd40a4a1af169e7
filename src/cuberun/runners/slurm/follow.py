"""Waiting for a job: bounded, adaptive polling; its log streamed to our stdout and the run log;
Ctrl-C and the time bounds cancel it (scancel, a bounded wait, SIGKILL on a second signal); its
end mapped onto an Outcome (the exit-code table of the package docstring)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.errors import EXIT_BACKEND
from cuberun.runners.batch import poll_interval
from cuberun.runners.slurm.jobs import (
    CANCEL_WAIT,
    CONTROLLER_GRACE,
    DEFAULT_MAX_WAIT,
    EXIT_STOPPED_WAITING,
    QUIET_REASONS,
    RUN_MARGIN,
    RUNNING_STATES,
    TAIL_INTERVAL,
    job_exit_code,
    parse_exit,
    parse_time_limit,
)
from cuberun.runners.slurm.logs import ControllerLost, _inner_error, _inner_run_id, _inner_timeout, _Job, _LogTail
from cuberun.runners.slurm.submit import SlurmSubmit

if TYPE_CHECKING:
    from cuberun.process import Outcome


class SlurmFollow(SlurmSubmit):
    """Following submitted jobs to their end."""

    def _interval(self, waited: float) -> float:
        return poll_interval(waited, max(0.05, float(self.config.get("poll_interval") or 0.5)))

    def _max_wait(self) -> float:
        value = self.config.get("max_wait")
        limit = parse_time_limit(value) if value not in (None, "") else None
        return limit if limit is not None else DEFAULT_MAX_WAIT

    def _follow(self, job: _Job, later: Sequence[_Job], log_path: str, cancel: Any) -> Outcome:
        """Wait for one job to end, streaming its log."""
        start = time.monotonic()
        deadline = job.submitted_at + self._max_wait()
        run_deadline: float | None = None
        next_poll = start
        failing_since: float | None = None
        pending_noted = False
        from cuberun.progress import Waiting

        queue = Waiting(f"job {job.job_id} (task '{job.task}') waits in the queue")
        with open(log_path, "ab") as log:
            tail = _LogTail(job.log_file, [getattr(sys.stdout, "buffer", None), log])
            while True:
                if queue.active and _grew(job.log_file, tail.offset):  # the job writes: it waits no more (closed before its output shows)
                    queue.close()
                tail.pump()
                if cancel.requested:
                    queue.close()
                    return self._interrupted([job, *later], job, cancel, start, tail)
                now = time.monotonic()
                if now >= next_poll:
                    info, problem = self._lookup(job.job_id)
                    if problem is not None:
                        failing_since = failing_since or now
                        if now - failing_since > CONTROLLER_GRACE:
                            raise ControllerLost(
                                f"lost contact with the Slurm controller while waiting for job {job.job_id} (task '{job.task}'): {problem}; log: {job.log_file}",
                                f"the job may still run: squeue -j {job.job_id}; scancel {job.job_id} to stop it",
                            )
                    else:
                        failing_since = None
                    if info is not None:
                        job.info = info
                        queue.state(info.state, info.reason or "")
                        if info.finished:
                            break
                        if run_deadline is None and info.state in RUNNING_STATES and info.time_limit is not None:
                            run_deadline = now + info.time_limit + RUN_MARGIN
                        if info.state == "PENDING" and not pending_noted and now - start > 10:
                            pending_noted = True
                            say(f"job {job.job_id} (task '{job.task}') is pending: {info.reason or 'waiting'}")
                    next_poll = now + self._interval(now - start)
                if now > deadline or (run_deadline is not None and now > run_deadline):
                    queue.close()
                    return self._stop_waiting(job, later, tail, start, overdue=now <= deadline)
                time.sleep(TAIL_INTERVAL)
            tail.finish(cancel)
        return self._outcome(job, start)

    def _wait_ended(self, job: _Job, tail: _LogTail | None, cancel: Any, limit: float) -> None:
        """Bounded wait after scancel until Slurm reports the job ended; a second signal sends SIGKILL."""
        end = time.monotonic() + limit
        escalated = False
        while time.monotonic() < end:
            info, _problem = self._lookup(job.job_id)
            if info is not None:
                job.info = info
                if info.finished:
                    return
            if tail is not None:
                tail.pump()
            if cancel is not None and cancel.count >= 2 and not escalated:
                escalated = True
                self._scancel([job], "--signal=KILL", "--full")
            if cancel is not None and cancel.count >= 3:
                return
            time.sleep(0.2)

    def _interrupted(self, jobs: Sequence[_Job], job: _Job | None, cancel: Any, start: float, tail: _LogTail | None) -> Outcome:
        active = [j for j in jobs if not j.finished]
        if active:
            say(f"cancelling Slurm job{'s' if len(active) > 1 else ''} {' '.join(j.job_id for j in active)}")
            self._scancel(active)
        if job is not None:
            self._wait_ended(job, tail, cancel, CANCEL_WAIT)
            if tail is not None:
                tail.finish(cancel)
        return self._interrupted_outcome(job, cancel, start)

    def _interrupted_outcome(self, job: _Job | None, cancel: Any, start: float) -> Outcome:
        from cuberun.process import Outcome

        sig = int(cancel.received or signal.SIGINT)
        state = job.info.state if job is not None and job.info is not None else "not submitted"
        where = f"; log: {job.log_file}" if job is not None else ""
        name = f"Slurm job {job.job_id}" if job is not None else "the Slurm job"
        return Outcome(
            128 + sig,
            time.monotonic() - start,
            interrupted=True,
            received=sig,
            reason=f"was interrupted ({signal.Signals(sig).name}); {name} is {state}{where}",
            details=self._details(job) if job is not None else None,
        )

    def _stop_waiting(self, job: _Job, later: Sequence[_Job], tail: _LogTail, start: float, *, overdue: bool) -> Outcome:
        why = self._why_stopped(job, overdue=overdue)
        self._scancel([job, *[j for j in later if not j.finished]])
        self._wait_ended(job, tail, None, CANCEL_WAIT)
        tail.finish()
        return self._stopped(job, start, why)

    def _why_stopped(self, job: _Job, *, overdue: bool) -> str:
        """overdue: past its time limit (plus a margin); else past max_wait."""
        state = job.info.state if job.info else "UNKNOWN"
        if overdue:
            limit = job.info.time_limit if job.info else None
            return f"still {state} {RUN_MARGIN:.0f} s after its time limit of {_format_seconds(limit)}"
        return f"still {state} after max_wait {_format_seconds(self._max_wait())} from submission"

    def _stopped(self, job: _Job, start: float, why: str) -> Outcome:
        from cuberun.process import Outcome

        return Outcome(
            EXIT_STOPPED_WAITING,
            time.monotonic() - start,
            reason=f"job {job.job_id} {why}: stopped waiting and cancelled it; log: {job.log_file}",
            details=self._details(job),
        )

    def _outcome(self, job: _Job, start: float) -> Outcome:
        from cuberun.process import EXIT_TIMEOUT, Outcome

        info = job.info
        assert info is not None
        elapsed = time.monotonic() - start
        details = self._details(job)
        if info.state == "UNKNOWN":
            return Outcome(
                EXIT_BACKEND,
                elapsed,
                reason=f"job {job.job_id} is no longer known to Slurm (not in scontrol, sacct or a jobcomp log); log: {job.log_file}",
                details=details,
            )
        code = job_exit_code(info.state, info.exit_code)
        if info.state == "COMPLETED" and code == 0:
            return Outcome(0, elapsed, details=details)
        _, sig = parse_exit(info.exit_code)
        stopped = _inner_timeout(job.log_file) if code == EXIT_TIMEOUT else None
        if stopped is not None:  # the job's cuberun stopped the task at the exact seconds: worded and recorded as on the other runners
            return Outcome(code, elapsed, reason=f"timed out after {stopped:g} s (--timeout) and was stopped in job {job.job_id}; log: {job.log_file}",
                           details={**details, "timed_out": True, "timeout": stopped})
        reason = info.reason if info.reason not in QUIET_REASONS else ""
        inner = _inner_error(job.log_file)
        missing = "" if os.path.exists(job.log_file) else " (not created)"
        text = f"job {job.job_id} ended {info.state} (exit {info.exit_code}{', ' + reason if reason else ''})"
        if inner:
            text += f": {inner}"
        return Outcome(code, elapsed, signal=sig if 0 < sig < 32 else None, reason=f"{text}; log: {job.log_file}{missing}", details=details)

    def _details(self, job: _Job) -> dict[str, Any]:
        info = job.info
        details: dict[str, Any] = {"job_id": job.job_id, "job_log": job.log_file, "job_script": job.script}
        if job.dependency:
            details["dependency"] = job.dependency
        if job.array_job_id is not None:
            details.update(array_job_id=job.array_job_id, array_task_id=job.array_task_id)
            own = info.fields.get("SlurmJobId") if info is not None else None
            if own:
                details["element_job_id"] = own  # the element's own job id (the array's for the last one)
        if info is not None:
            details.update(job_state=info.state, job_exit=info.exit_code, state_source=info.source)
            if info.reason and info.reason not in ("None", "(null)"):
                details["job_reason"] = info.reason
            for key, name in (("Partition", "partition"), ("NodeList", "nodes"), ("SubmitTime", "submit_time"), ("StartTime", "start_time"), ("EndTime", "end_time")):
                value = info.fields.get(key)
                if value and value not in ("(null)", "None", "Unknown"):
                    details[name] = value
        inner = _inner_run_id(job.log_file)
        if inner:
            details["inner_run_id"] = inner
        return details


def _format_seconds(value: float | None) -> str:
    if value is None:
        return "none"
    total = int(value)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _grew(path: str, offset: int) -> bool:
    try:
        return os.stat(path).st_size > offset
    except OSError:
        return False
