"""The Slurm runner (the Runner contract): its schema, dry-run steps, availability, the inner
platform's fingerprint and configure, the batch hooks, inspect. See the package docstring."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import CuberunError, RunnerUnavailable
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.runners.slurm.arrays import SlurmArrays
from cuberun.runners.slurm.client import _first_line, _Plan
from cuberun.runners.slurm.jobs import SBATCH_MISSING, JobScriptStep
from cuberun.runners.slurm.logs import ControllerLost, _Job
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask


class SlurmRunner(SlurmArrays):
    name = "slurm"
    section = "slurm"
    supports_array = True
    enforces_timeout = True  # --time in minutes, and the job's cuberun stops the task at the exact seconds (retry.py)
    leave_running = (ControllerLost,)  # the controller cannot be asked to cancel: the error says how to
    schema: ClassVar[dict[str, Field]] = {
        "partition": Field((str,), doc="sbatch --partition"),
        "account": Field((str,), doc="sbatch --account"),
        "qos": Field((str,), doc="sbatch --qos"),
        "time": Field((str, int), doc="sbatch --time, e.g. 01:00:00 (an integer means minutes)"),
        "cpus_per_task": Field((int,), doc="sbatch --cpus-per-task"),
        "mem": Field((str, int), doc="sbatch --mem, e.g. 4G (default: --memory, else platform.host_memory_gb)"),
        "gres": Field((str,), doc="sbatch --gres (default: gpu:N from --gpus or platform.accelerator_count; '' for none)"),
        "sbatch_args": Field((list,), default=[], doc="more sbatch options, e.g. [--constraint=a100]"),
        "platform": Field((str,), default="local", doc="the platform the job runs the task with (local, docker, charliecloud, ...)"),
        "cuberun": Field((str, list), doc="how to start cuberun on the compute node (default: this interpreter, -m cuberun)"),
        "job_dir": Field((str,), doc="where job scripts and job logs go (default: <workspace>/.cuberun/slurm)"),
        "poll_interval": Field((float,), default=0.5, doc="seconds between scontrol polls (longer for long jobs)"),
        "job_name_prefix": Field((str,), default="cuberun", doc="prefix of the job names"),
        "max_wait": Field((str, int), doc="give up (and cancel) after this long from submission, Slurm time format (default 7 days)"),
        "configure": Field((str,), default="submit", choices=("submit", "job"), doc="configure the inner platform here before submitting, or in the job"),
        "array_parallelism": Field((int,), doc="sweeps run as one job array: at most this many elements at once (--array=0-N%max; default: no limit)"),
    }

    # -- the runner contract -------------------------------------------------------------------
    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return self._steps(*self.script(task))

    def array_steps(self, tasks: Sequence[ResolvedTask]) -> list[Step]:
        return self._steps(*self.array_script(tasks))

    def _steps(self, path: str, content: str) -> list[Step]:
        return [
            JobScriptStep((), "job-script", path=path, content=content),
            Step(("sbatch", "--parsable", path), "submit", env=dict(self.options.extra_env)),
        ]

    def unavailable_reason(self) -> str | None:
        from cuberun.process import which

        if which("sbatch") is None:
            return SBATCH_MISSING
        for tool in ("scontrol", "scancel"):
            if which(tool) is None:
                return f"{tool} not found (sbatch is there). Hint: install the complete Slurm client, or use another --platform"
        res = self._slurm(["scontrol", "ping"], timeout=30)
        first = _first_line(res.stdout + "\n" + res.stderr)
        if res.returncode != 0 or not re.search(r"\bUP\b", res.stdout):
            return f"Slurm controller unreachable ({first or 'scontrol ping failed'}). Hint: {self._controller_hint()}"
        return None

    def _inner_runner(self) -> Runner:
        from cuberun.runners.factory import make_runner  # the contract, not the orchestration

        return make_runner(self.cube, self.inner_platform, self.options, self.options.config_overrides)

    def sections(self) -> list[str] | None:
        try:
            inner = self._inner_runner().sections()
        except CuberunError:
            return None
        return None if inner is None else [self.section or "slurm", *inner]

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """How the task runs is the inner platform's business (its command, image digest, env);
        queue and resources (partition, time, mem) do not change results, so they are left out."""
        try:
            inner = dict(self._inner_runner().fingerprint(task))
        except CuberunError:  # e.g. the inner engine is only on the compute nodes (configure: job)
            return {"runner": self.name, "inner_platform": self.inner_platform, "command": self.inner_argv(task),
                    "code": self.cube_code().to_json()}
        return {**inner, "runner": self.name, "inner_runner": inner.get("runner"), "inner_platform": self.inner_platform}

    def configure_steps(self) -> list[Step]:
        if self.config.get("configure") == "job":
            return []
        return self._inner_runner().configure_steps()

    def configure(self) -> None:
        """Prepare the inner platform on this host (shared filesystem: envs and caches are then
        ready for the job, and compute nodes need no network); `configure: job` leaves it to the job."""
        if self.config.get("configure") == "job":
            return
        inner = self._inner_runner()
        reason = inner.unavailable_reason()
        if reason:
            raise RunnerUnavailable(f"the job's platform '{self.inner_platform}' cannot be configured here: {reason}", "or set the slurm platform's configure: job")
        inner.configure()

    # -- the batch hooks (the loop is BatchRunner.run_batch) --------------------------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[_Plan]:
        plans = [(p.task, *self.script(p.task), 0) for p in planned]  # every config problem surfaces before anything is submitted
        os.makedirs(self.job_dir(), exist_ok=True)
        os.makedirs(self.cube.workspace, exist_ok=True)
        return plans

    def submit(self, plan: _Plan, after: _Job | None) -> _Job:
        task, path, content, elements = plan
        job = self._submit(task, path, content, after.job_id if after is not None else None, elements=elements)
        job.element_logs = tuple(self.array_log_file(task, job.job_id, i) for i in range(elements))
        return job

    def follow(self, submission: _Job, later: Sequence[_Job], log_path: str, cancel: Any) -> Outcome:
        return self._follow(submission, later, log_path, cancel)

    def cancel(self, submissions: Sequence[_Job], current: _Job | None, outcome: Outcome | None) -> None:
        if outcome is not None and outcome.interrupted:
            return  # _follow cancelled them, and waited
        self._cancel_quietly([j for j in submissions if j is not current and not j.finished])

    def watchdog_cleanup(self, submission: _Job) -> list[list[str]]:
        return [["scancel", submission.job_id]]  # if cuberun is killed, the job is cancelled

    def interrupted(self, submitted: Sequence[_Job], cancel: Any) -> Outcome:
        return self._interrupted(submitted, submitted[0] if submitted else None, cancel, time.monotonic(), None)

    # -- inspect ---------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        from cuberun.process import which

        if which("sbatch") is None:
            raise RunnerUnavailable(SBATCH_MISSING)
        info: dict[str, Any] = {"runner": self.name, "platform": self.platform, "inner_platform": self.inner_platform, "job_dir": self.job_dir()}
        version = self._slurm(["sbatch", "--version"], timeout=30)
        info["sbatch_version"] = _first_line(version.stdout) or None
        ping = self._slurm(["scontrol", "ping"], timeout=30)
        info["controller"] = _first_line(ping.stdout + "\n" + ping.stderr) or None
        partitions: dict[str, dict[str, Any]] = {}
        res = self._slurm(["sinfo", "-h", "-o", "%P|%a|%l|%D|%T"], timeout=30)
        for line in res.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 5:
                continue
            raw, avail, limit, count, state = parts
            name = raw.rstrip("*")
            entry = partitions.setdefault(name, {"default": raw.endswith("*"), "available": avail, "time_limit": limit, "nodes": 0, "node_states": {}})
            nodes = int(count) if count.isdigit() else 0
            entry["nodes"] += nodes
            entry["node_states"][state] = entry["node_states"].get(state, 0) + nodes
        info["partitions"] = partitions
        config = self._slurm_config()
        info["cluster"] = config.get("ClusterName")
        info["accounting"] = config.get("AccountingStorageType")
        info["job_completion"] = {"type": config.get("JobCompType"), "location": config.get("JobCompLoc")}
        info["config"] = self.describe_config()
        return info
