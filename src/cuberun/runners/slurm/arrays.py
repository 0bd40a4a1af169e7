"""A sweep as ONE Slurm job array, on the same BatchRunner loop as single jobs (`run_array`:
`plan_array` makes one submission of N tasks, `follow_all` follows it): submitted once, every
element followed with one scontrol call per poll, each element's log streamed after a
`[<array>_<i>] ` prefix, one outcome per element; Ctrl-C cancels the whole array."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.runners.slurm.follow import SlurmFollow
from cuberun.runners.slurm.jobs import CANCEL_WAIT, CONTROLLER_GRACE, RUN_MARGIN, RUNNING_STATES, TAIL_INTERVAL
from cuberun.runners.slurm.logs import ControllerLost, _finish_tails, _Job, _LogTail, _Prefixed

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.runners.base import TaskPlan
    from cuberun.runners.slurm.client import _Plan


class SlurmArrays(SlurmFollow):
    """Job arrays: the BatchRunner hooks of `run_array` (one submission, one outcome per element)."""

    def plan_array(self, plans: Sequence[TaskPlan]) -> list[_Plan]:
        """A sweep as ONE job array: element i runs plans[i]."""
        tasks = [p.task for p in plans]
        path, content = self.array_script(tasks)  # config problems surface before anything is submitted
        os.makedirs(self.job_dir(), exist_ok=True)
        os.makedirs(self.cube.workspace, exist_ok=True)
        return [(tasks[0], path, content, len(tasks))]

    def tasks_in(self, plan: _Plan) -> int:
        return plan[3] or 1

    def follow_all(self, submission: _Job, later: Sequence[_Job], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        """A job array: every element followed at once (one scontrol call per poll); Ctrl-C
        cancels the whole array (scancel of its job id)."""
        if not submission.element_logs:
            return super().follow_all(submission, later, log_paths, cancel)
        jobs = [
            _Job(submission.task, f"{submission.job_id}_{i}", log, submission.script, submission.submitted_at,
                 array_job_id=submission.job_id, array_task_id=i)
            for i, log in enumerate(submission.element_logs)
        ]  # fmt: skip
        return self._follow_array(submission, jobs, log_paths, cancel)

    def _follow_array(self, array: _Job, jobs: list[_Job], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        """Wait for every element of a job array (one scontrol call per poll for all of them),
        streaming each element's log into its run log and, line by line after `[<array>_<i>] `,
        to our stdout. The same bounds as _follow: max_wait for the array, and each element's
        time limit once it runs."""
        start = time.monotonic()
        deadline = array.submitted_at + self._max_wait()
        run_deadlines: dict[int, float] = {}
        outcomes: dict[int, Outcome] = {}
        misses: dict[int, int] = {}
        next_poll = start
        failing_since: float | None = None
        pending_noted = False
        with ExitStack() as stack:
            logs = [stack.enter_context(open(path, "ab")) for path in log_paths]
            outs = [_Prefixed(getattr(sys.stdout, "buffer", None), f"[{job.job_id}] ") for job in jobs]
            tails = [_LogTail(job.log_file, [out, log]) for job, out, log in zip(jobs, outs, logs, strict=True)]

            def settle(indexes: Sequence[int], outcome: Callable[[_Job], Outcome]) -> None:
                _finish_tails([tails[i] for i in indexes], cancel)
                for i in indexes:
                    outs[i].close()
                    outcomes[i] = outcome(jobs[i])

            while len(outcomes) < len(jobs):
                active = [i for i in range(len(jobs)) if i not in outcomes]
                for i in active:
                    tails[i].pump()
                if cancel.requested:
                    say(f"cancelling Slurm array job {array.job_id}")
                    self._scancel([array])
                    self._wait_elements(array.job_id, [jobs[i] for i in active], [tails[i] for i in active], cancel)
                    # an element that ended on its own meanwhile keeps its outcome
                    ended = [i for i in active if jobs[i].finished and getattr(jobs[i].info, "state", "") != "CANCELLED"]
                    settle(ended, lambda job: self._outcome(job, start))
                    settle([i for i in active if i not in ended], lambda job: self._interrupted_outcome(job, cancel, start))
                    break
                now = time.monotonic()
                if now >= next_poll:
                    infos, problem = self._lookup_array(array.job_id, [jobs[i] for i in active], misses)
                    if problem is not None:
                        failing_since = failing_since or now
                        if now - failing_since > CONTROLLER_GRACE:
                            raise ControllerLost(
                                f"lost contact with the Slurm controller while waiting for array job {array.job_id} (task '{array.task}'): {problem}; logs: {array.log_file}",
                                f"the jobs may still run: squeue -j {array.job_id}; scancel {array.job_id} to stop them",
                            )
                    else:
                        failing_since = None
                    for i in active:
                        info = infos.get(i)
                        if info is None:
                            continue
                        jobs[i].info = info
                        if i not in run_deadlines and info.state in RUNNING_STATES and info.time_limit is not None:
                            run_deadlines[i] = now + info.time_limit + RUN_MARGIN
                    settle([i for i in active if jobs[i].finished], lambda job: self._outcome(job, start))
                    waiting = [jobs[i].info for i in active if i not in outcomes]
                    if not pending_noted and now - start > 10 and waiting and all(info is not None and info.state == "PENDING" for info in waiting):
                        pending_noted = True
                        reason = next((info.reason for info in waiting if info is not None and info.reason), "") or "waiting"
                        say(f"array job {array.job_id} (task '{array.task}'): {len(waiting)} elements are pending: {reason}")
                    next_poll = now + self._interval(now - start)
                past_max_wait = now > deadline
                stop = [i for i in range(len(jobs)) if i not in outcomes and (past_max_wait or now > run_deadlines.get(i, math.inf))]
                if stop:
                    why = {jobs[i].job_id: self._why_stopped(jobs[i], overdue=not past_max_wait) for i in stop}
                    self._scancel([jobs[i] for i in stop])
                    self._wait_elements(array.job_id, [jobs[i] for i in stop], [tails[i] for i in stop], None)

                    def stopped(job: _Job, why: dict[str, str] = why) -> Outcome:
                        return self._stopped(job, start, why[job.job_id])

                    settle(stop, stopped)
                if len(outcomes) < len(jobs):
                    time.sleep(TAIL_INTERVAL)
        return [outcomes[i] for i in range(len(jobs))]

    def _wait_elements(self, array_id: str, jobs: Sequence[_Job], tails: Sequence[_LogTail], cancel: Any) -> None:
        """Bounded wait after scancel until Slurm reports these elements ended; a second signal sends SIGKILL."""
        end = time.monotonic() + CANCEL_WAIT
        escalated = False
        misses: dict[int, int] = {}
        while time.monotonic() < end:
            active = [j for j in jobs if not j.finished]
            if not active:
                return
            infos, _problem = self._lookup_array(array_id, active, misses)
            for job in active:
                job.info = infos.get(job.array_task_id or 0, job.info)
            for tail in tails:
                tail.pump()
            if cancel is not None and cancel.count >= 2 and not escalated:
                escalated = True
                self._scancel([j for j in jobs if not j.finished], "--signal=KILL", "--full")
            if cancel is not None and cancel.count >= 3:
                return
            time.sleep(0.2)
