"""The HTCondor runner: a task becomes one vanilla-universe job.

1. The job's program is `htcondor.command` (else the task's entrypoint, else the cube's
   `local.command`), started in `workdir` (default: the cube folder) with the task's
   parameters as `--name=path` arguments. A bare program name is found on the execute node's
   PATH through /usr/bin/env.
2. Files: `files: shared` (default) passes the host paths as they are: the execute node sees
   the same filesystem. `files: transfer` lets HTCondor move the data: inputs (and the output
   folders, so that they exist), plus the command's files from `workdir`, go to the job's
   scratch folder; the arguments name them by their base names; outputs come back to their
   host paths through `transfer_output_remaps`; stdout/stderr are streamed back as they grow.
3. The submit description is data (submit.py), written to `<job_dir>/<task>-<hash>.sub` and
   submitted with `condor_submit -terse`; the job is followed with `condor_q -json`, then
   `condor_history -json` once it left the queue; its stdout and stderr files stream to our
   stdout and the run log. A job still in the queue as Completed or Removed is leaving it (not
   ended yet) unless its LeaveJobInQueue keeps it there.
4. Ctrl-C / SIGTERM: `condor_rm` of the job this run submitted (never any other), a bounded
   wait until it has left the queue as removed, exit 128+signal. A held job (a missing
   executable, a failed transfer) is removed and reported with its hold reason.

On cuberun's BatchRunner loop (`runners/batch_polling.py`: status polls and removals): this
module is the whole backend side, the submit (`plan_batch`/`plan_array`, `submit`) and three
questions to the pool (`status`, `remove`, `jobs`); description.py holds the config and the
submit descriptions, submit.py their quoting.

Exit codes: the job's ExitCode; 128+N when signal N killed it; 125 when it was held (and
removed), removed by someone else, or condor_submit refused it; 124 after `max_wait`.
"""


from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cuberun.errors import BackendError
from cuberun.runners.batch_polling import FollowBounds, Job, JobStatus
from cuberun_htcondor.description import ATTRIBUTES, STATES, HTCondorJobs, JobPlan, Submitted

if TYPE_CHECKING:
    from cuberun.process import Captured, Outcome
    from cuberun.runners.base import TaskPlan

CLIENT_TIMEOUT = 60.0


class HTCondorRunner(HTCondorJobs):
    # -- submitting -------------------------------------------------------------------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[JobPlan]:
        return [JobPlan((p.task,), *self.submit_file(p.task)) for p in planned]

    def plan_array(self, planned: Sequence[TaskPlan]) -> list[JobPlan]:
        """A sweep as ONE cluster whose process i runs variant i; variants that differ in more
        than their arguments (files: transfer) are independent submissions."""
        tasks = tuple(p.task for p in planned)
        one = self.array_file(tasks)
        return [JobPlan(tasks, *one)] if one is not None else self.plan_batch(planned)

    def tasks_in(self, plan: JobPlan) -> int:
        return len(plan.tasks)

    def stage(self, plan: JobPlan) -> None:
        os.makedirs(self.job_dir(), exist_ok=True)
        _write_if_changed(plan.path, plan.content)

    def submit(self, plan: JobPlan, after: Submitted | None) -> Submitted:
        res = self._client([self.tool("condor_submit"), "-terse", *self.where(), plan.path], shield=True)
        if res.returncode != 0 or not re.match(r"^\d+\.\d+", res.stdout.strip()):
            raise BackendError(f"condor_submit refused {plan.path}: {_first_error(res)}", "check the htcondor section and the pool (condor_q, condor_status)")
        return Submitted(plan, res.stdout.strip().split(".", 1)[0])

    def watchdog_cleanup(self, submission: Submitted) -> list[list[str]]:
        return [[self.tool("condor_rm"), *self.where(), submission.cluster]]  # if cuberun is killed, its jobs are removed

    # -- following (the loop is PollingBatchRunner's) ---------------------------------------------
    def bounds(self) -> FollowBounds:
        return FollowBounds(poll_interval=float(self.config.get("poll_interval") or 2.0), max_wait=float(self.config.get("max_wait") or 7 * 24 * 3600))

    def jobs(self, submission: Submitted) -> list[Job]:
        found = []
        for proc, task in enumerate(submission.plan.tasks):
            job = f"{submission.cluster}.{proc}"
            stem = os.path.join(self.job_dir(), self._stem(task))
            found.append(Job(job, (f"{stem}-{job}.out", f"{stem}-{job}.err"), f"HTCondor job {job}"))
        return found

    def submission_ids(self, submission: Submitted) -> list[str]:
        return [submission.cluster]

    def finish(self, submission: Submitted, index: int, outcome: Outcome) -> Outcome:
        from cuberun.valueclass import replace

        job = self.jobs(submission)[index]
        stdout, stderr = job.files
        if outcome.exit_code != 0 and outcome.reason and not outcome.interrupted:
            outcome = replace(outcome, reason=f"{outcome.reason}; stdout {stdout}, stderr {stderr}")
        stem = os.path.join(self.job_dir(), self._stem(submission.plan.tasks[index]))
        details = {"cluster": submission.cluster, "proc": index, "submit_file": submission.plan.path, "stdout": stdout, "stderr": stderr,
                   "job_log": f"{stem}-{submission.cluster}.log"}
        return replace(outcome, details={**dict(outcome.details or {}), **details})

    def status(self, job_id: str) -> tuple[JobStatus | None, str | None]:
        """condor_q, then condor_history once the job left the queue. A job the queue still lists
        as Completed or Removed has not ended yet: its shadow and starter are still exiting (a
        removed job may still be being killed) and it is not in the history yet; it ends when it
        has left the queue, unless it stays there by design (LeaveJobInQueue)."""
        ad, problem = self._ad("condor_q", job_id)
        if problem is not None or ad is not None:
            return (_status(ad, queued=True) if ad is not None else None), problem
        ad, problem = self._ad("condor_history", job_id, "-limit", "1")
        return (_status(ad) if ad is not None else None), problem

    def _ad(self, tool: str, job_id: str, *extra: str) -> tuple[dict[str, Any] | None, str | None]:
        """The job's ad as `tool` prints it (None when it does not list the job), or a problem."""
        res = self._client([self.tool(tool), *self.where(), job_id, "-json", *extra, "-attributes", ATTRIBUTES])
        if res.returncode != 0:
            return None, f"{tool}: {_first_error(res)}"
        text = res.stdout.strip()
        if not text:
            return None, None
        try:
            ads = json.loads(text)
        except ValueError:
            return None, f"{tool} printed no JSON: {text[:200]}"
        if isinstance(ads, list) and ads and isinstance(ads[0], dict):
            return ads[0], None
        return None, None

    def remove(self, ids: Sequence[str]) -> None:
        try:
            self._client([self.tool("condor_rm"), *self.where(), *ids], shield=True)
        except Exception:  # best effort while another error is on its way
            pass

    def _client(self, argv: Sequence[str], shield: bool = False) -> Captured:
        from cuberun.process import capture, shielded

        if not shield:
            return capture(argv, timeout=CLIENT_TIMEOUT, cwd=self.job_dir())
        with shielded():
            return capture(argv, timeout=CLIENT_TIMEOUT, cwd=self.job_dir())

    def inspect(self) -> dict[str, Any]:
        return {**super().inspect(), "files": self.config.get("files"), "schedd": self.config.get("schedd"), "pool": self.config.get("pool")}


def _status(ad: dict[str, Any], queued: bool = False) -> JobStatus:
    """The job's status from its ad; `queued`: condor_q printed it (else condor_history)."""
    code = int(ad.get("JobStatus") or 0)
    state = STATES.get(code, f"status {code}")
    if code in (3, 4) and queued and not _stays_in_queue(ad):
        return JobStatus(f"{state}, leaving the queue")  # ended once condor_history has it
    if code == 4:
        if ad.get("ExitBySignal"):
            sig = int(ad.get("ExitSignal") or 0)
            return JobStatus(state, ended=True, exit_code=128 + sig, signal=sig or None, reason=f"was killed by signal {sig}")
        exit_code = int(ad.get("ExitCode") or 0)
        return JobStatus(state, ended=True, exit_code=exit_code, reason=f"exited with code {exit_code}")
    if code == 3:
        return JobStatus(state, ended=True, exit_code=125, reason=f"was removed ({ad.get('RemoveReason') or 'no reason given'})")
    if code == 5:
        return JobStatus(state, stuck=True, reason=str(ad.get("HoldReason") or "held"))
    return JobStatus(state)


def _stays_in_queue(ad: dict[str, Any]) -> bool:
    """Whether the job stays in the queue once it ended (`leave_in_queue`, `condor_submit -spool`):
    -json prints LeaveJobInQueue as a boolean, or as the expression's text when it is one; any
    value but false (or no value) counts as staying, so that such a job never waits for a move
    to the history that does not come."""
    value = ad.get("LeaveJobInQueue")
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    return str(value).strip().lower() not in ("", "false", "0")


def _first_error(res: Captured) -> str:
    lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
    return next((ln for ln in lines if "ERROR" in ln), lines[0] if lines else f"exit code {res.returncode}")


def _write_if_changed(path: str, content: str) -> None:
    """The submit description, written as cuberun writes its job scripts (safeio: read only when a
    regular file, written atomically, never over a FIFO, a device or a folder)."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular, write_file

    payload = content.encode("utf-8")
    try:
        if read_regular(path, len(payload) + 1, what="submit description") == payload:
            return
    except CuberunError:
        pass
    write_file(path, payload, what="HTCondor submit description", hint="move it away (cuberun writes it for each run)")
