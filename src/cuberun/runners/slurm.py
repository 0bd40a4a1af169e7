"""The Slurm runner: a task becomes a batch job that runs `cuberun run` with an inner platform.

What it does for `cuberun run --platform=slurm`:

1. Renders a job script (a file, never a shell string we execute): `#SBATCH` lines for the job
   name, partition, account, qos, time, cpus, memory, GPUs (`--gres`), the job log and the working
   directory, then `exec <cuberun> run --task=<task> --platform=<inner> ...` with every parameter
   override, `-P` value and run option forwarded (runners/nested.py; the job's cuberun reports its
   run id and its own errors through the `--handshake` event lines in the job log). The script is named by its content hash, so
   concurrent runs never submit each other's script. `--dry-run` prints it as a `cat <<EOF` step.
2. Submits it with `sbatch --parsable` (chains: `--dependency=afterok:<previous> --kill-on-invalid-dep=yes`).
3. Waits: polls `scontrol show job -o` (adaptive: fast at first, gentler on the controller for
   long jobs), falling back to `sacct` (when accounting is enabled) and then the jobcomp file once
   scontrol has forgotten the job; meanwhile it follows the job log as it grows and copies it to
   our stdout and the run's log. Every wait is bounded: `max_wait` from submission, and the job's
   time limit plus a margin once it runs.
4. Ctrl-C / SIGTERM / SIGHUP: `scancel` of the jobs this run submitted (never any other), a bounded
   wait until Slurm reports them ended, exit 128+signal. A second signal escalates to SIGKILL.
5. Sweeps (`run_array`): the variants that are not up to date become ONE job array
   (`#SBATCH --array=0-N`, `%max` from `array_parallelism`) whose script execs element i's quoted
   cuberun command in a `case "$SLURM_ARRAY_TASK_ID"`. One `scontrol show job -o <array>` per poll
   follows every element (pending ones share the array's record; forgotten ones are looked up
   in sacct / the jobcomp log); each element's log (`<task>-<array>_<i>.log`) streams into its own
   run log and, line by line after `[<array>_<i>] `, to our stdout; each element gets its own
   outcome (the table below), and Ctrl-C cancels the whole array (`scancel <array>`).

Exit codes (the Outcome's exit code; execute turns a non-zero one into TaskFailed):

| job state                      | exit code                                                      |
|--------------------------------|----------------------------------------------------------------|
| COMPLETED                      | N of ExitCode N:S (0)                                          |
| FAILED, NODE_FAIL, others      | N; else 128+S when a signal S (1-31) killed it; else 125 (e.g. launch failure 0:53) |
| CANCELLED (not by us)          | N, or 128+S, else 143                                          |
| TIMEOUT, OUT_OF_MEMORY         | always 137 (128+SIGKILL: killed for exceeding a limit, whatever the task did with the warning SIGTERM; docker reports OOM kills the same way) |
| interrupted by Ctrl-C          | 128+signal (130)                                               |
| cuberun stopped waiting        | 124 (max_wait exceeded, or still running long past its time limit; the job is cancelled) |
| sbatch refused the job         | 125 (BackendError: unknown partition, bad gres/time/memory, ...) |
| controller unreachable         | 125 (RunnerUnavailable / BackendError)                          |
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.console import say
from cuberun.errors import EXIT_BACKEND, BackendError, CuberunError, RunnerUnavailable, UsageError, split_words
from cuberun.locks import HELD_BY_PARENT_ENV
from cuberun.runners import nested
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.runners.batch import BatchRunner, poll_interval
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.process import Captured, Outcome
    from cuberun.resolve import ResolvedTask

from cuberun.process import shielded as _shielded
from cuberun.runners.slurm_follow import (
    ControllerLost,
    _finish_tails,
    _inner_error,
    _inner_run_id,
    _Job,
    _LogTail,
    _Prefixed,
    _search_jobcomp,
)
from cuberun.runners.slurm_jobs import (
    _SAFE_NAME,
    CANCEL_WAIT,
    CLIENT_TIMEOUT,
    CONTROLLER_GRACE,
    DEFAULT_MAX_WAIT,
    EXIT_STOPPED_WAITING,
    FORBIDDEN_SBATCH_ARGS,
    QUIET_REASONS,
    RUN_MARGIN,
    RUNNING_STATES,
    SBATCH_MISSING,
    TAIL_INTERVAL,
    JobInfo,
    JobScriptStep,
    JobSpec,
    array_elements,
    job_exit_code,
    normalize_memory,
    parse_exit,
    parse_job_line,
    parse_sacct,
    parse_time_limit,
    render_job_script,
)

_Plan = tuple["ResolvedTask", str, str]  # a task, its job script's path and content


# -- the runner ---------------------------------------------------------------------------------
class SlurmRunner(BatchRunner[_Plan, _Job]):
    name = "slurm"
    section = "slurm"
    supports_array = True
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inner_runner_name: str | None = None  # set once the inner platform was checked
        self._accounting: bool | None = None
        self._jobcomp: str | bool | None = False  # False: not looked up yet

    # -- configuration -----------------------------------------------------------------------
    @property
    def inner_platform(self) -> str:
        name = str(self.config.get("platform") or "local")
        if self._inner_runner_name is None:
            from cuberun import settings as settings_mod

            entry = settings_mod.platform_entry(settings_mod.load_settings(), name)
            if entry.get("runner") == self.name:
                raise UsageError(
                    f"platform '{self.platform}': the job's platform '{name}' is itself a Slurm platform",
                    "set the slurm platform's 'platform' to local, docker, charliecloud, ...",
                )
            self._inner_runner_name = str(entry.get("runner"))
        return name

    def cuberun_argv(self) -> list[str]:
        value = self.config.get("cuberun")
        if not value:
            return [sys.executable, "-m", "cuberun"]
        return split_words(value, "a slurm setting") if isinstance(value, str) else [str(v) for v in value]

    def job_dir(self) -> str:
        value = self.config.get("job_dir")
        workspace = str(self.cube.workspace)
        if not value:
            path = os.path.join(workspace, ".cuberun", "slurm")
        else:
            expanded = os.path.expanduser(os.path.expandvars(str(value)))
            path = expanded if os.path.isabs(expanded) else os.path.join(workspace, expanded)
        path = os.path.normpath(path)
        if "\\" in path:
            raise UsageError(
                f"the Slurm job directory {path} contains a backslash, which Slurm cannot use in a job log path",
                "set the slurm platform's job_dir to a path without backslashes",
            )
        return path

    def job_name(self, task: ResolvedTask) -> str:
        prefix = str(self.config.get("job_name_prefix") or "")
        name = f"{self.cube.name}-{task.name}"
        return _SAFE_NAME.sub("_", f"{prefix}-{name}" if prefix else name)[:120]

    @staticmethod
    def _stem(task: ResolvedTask) -> str:
        return _SAFE_NAME.sub("_", task.name)[:60] or "task"

    def log_file(self, task: ResolvedTask, job_id: str) -> str:
        return os.path.join(self.job_dir(), f"{self._stem(task)}-{job_id}.log")

    def gres(self) -> str | None:
        configured = self.config.get("gres")
        if configured is not None:
            return str(configured) or None
        from cuberun.gpus import effective_gpus

        request = effective_gpus(self.options.gpus, self.cube.accelerator_count)
        if request.all:
            raise UsageError("--gpus=all cannot be turned into a Slurm request", "give a count (--gpus=N), or set the slurm platform's gres (e.g. gpu:4)")
        count = len(request.devices) or request.count
        return f"gpu:{count}" if count else None

    def mem(self) -> str | None:
        configured = self.config.get("mem")
        if configured is not None and configured != "":
            return str(configured)
        if self.options.memory:
            return normalize_memory(self.options.memory)
        gb = self.cube.platform.get("host_memory_gb")
        if isinstance(gb, (int, float)) and not isinstance(gb, bool) and gb > 0:
            return f"{int(gb)}G" if float(gb).is_integer() else f"{math.ceil(gb * 1024)}M"
        return None

    def _sbatch_args(self) -> tuple[str, ...]:
        args = self.config.get("sbatch_args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise UsageError(f"platform '{self.platform}': sbatch_args must be a list of strings", "e.g. sbatch_args: [--constraint=a100]")
        for arg in args:
            for opt in FORBIDDEN_SBATCH_ARGS:
                long_form = opt.startswith("--")
                if (long_form and (arg == opt or arg.startswith(opt + "="))) or (not long_form and arg.startswith(opt) and not arg.startswith("--")):
                    raise UsageError(
                        f"platform '{self.platform}': sbatch_args must not set {opt} (cuberun sets the job log, waits and chains jobs itself)",
                        "remove it from sbatch_args",
                    )
        return tuple(args)

    def inner_argv(self, task: ResolvedTask) -> list[str]:
        """The cuberun command the job runs: the same task, on the inner platform, with every
        override and option of this invocation. `--no-deps --force`: this side already decided
        that the task runs and submitted its prerequisites (chains), so the job just runs it."""
        platform = self.inner_platform
        return nested.run_argv(
            self.cuberun_argv(), cube=os.path.abspath(self.cube.file), task=task.name, platform=platform, workspace=str(task.workspace),
            options=self.options, params=[f"{p.name}={p.host_path}" for p in task.params if p.name in task.overrides],
            # container platforms need --gpus to expose GPUs; on the host, Slurm's CUDA_VISIBLE_DEVICES
            # (the GPUs it allocated) must stay as it is
            forward_gpus=self._inner_runner_name != "local",
        )

    def _directives(self, task: ResolvedTask, log_name: str) -> tuple[tuple[str, str], ...]:
        """The #SBATCH options; log_name is the job log's name pattern (`hello-%j.log`)."""
        cfg = self.config
        job_dir = self.job_dir()
        directives: list[tuple[str, str]] = [("--job-name", self.job_name(task))]
        for opt, key in (("--partition", "partition"), ("--account", "account"), ("--qos", "qos"), ("--time", "time"), ("--cpus-per-task", "cpus_per_task")):
            value = cfg.get(key)
            if value is not None and value != "":
                directives.append((opt, str(value)))
        mem, gres = self.mem(), self.gres()
        if mem:
            directives.append(("--mem", mem))
        if gres:
            directives.append(("--gres", gres))
        directives.append(("--output", os.path.join(job_dir.replace("%", "%%"), log_name)))
        directives.append(("--chdir", str(task.workspace)))
        return tuple(directives)

    def job_spec(self, task: ResolvedTask) -> JobSpec:
        spec = JobSpec(
            self._directives(task, f"{self._stem(task)}-%j.log"),
            (tuple(self.inner_argv(task)),),
            self._sbatch_args(),
            f"cuberun: task {task.name} of cube {self.cube.name}",
            env=((HELD_BY_PARENT_ENV, "held-by-parent"),),  # this cuberun holds the task's output locks while the job runs
        )
        return self._checked(spec, task)

    def array_spec(self, tasks: Sequence[ResolvedTask]) -> JobSpec:
        """One job array for independent runs of a task (a sweep's variants): element i execs
        tasks[i]'s cuberun command; element logs are <job_dir>/<task>-<array job id>_<i>.log."""
        if len(tasks) < 2:
            raise ValueError("a job array needs at least two tasks")
        first = tasks[0]
        limit = self.config.get("array_parallelism")
        if limit is not None and limit < 1:
            raise UsageError(f"platform '{self.platform}': array_parallelism must be at least 1 (it is {limit})", "or leave it unset for no limit")
        spec = JobSpec(
            self._directives(first, f"{self._stem(first)}-%A_%a.log"),
            tuple(tuple(self.inner_argv(t)) for t in tasks),
            self._sbatch_args(),
            f"cuberun: {len(tasks)} runs of task {first.name} of cube {self.cube.name} (a sweep)",
            env=((HELD_BY_PARENT_ENV, "held-by-parent"),),
            array_limit=limit,
        )
        return self._checked(spec, first)

    def _checked(self, spec: JobSpec, task: ResolvedTask) -> JobSpec:
        try:
            render_job_script(spec)
        except ValueError as exc:
            raise UsageError(f"platform '{self.platform}', task '{task.name}': {exc}", "remove line breaks from the Slurm settings and paths") from None
        return spec

    def script(self, task: ResolvedTask) -> tuple[str, str]:
        """(path, content) of the task's job script; the name carries a hash of the content."""
        content = render_job_script(self.job_spec(task))
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        return os.path.join(self.job_dir(), f"{self._stem(task)}-{digest}.sbatch"), content

    def array_script(self, tasks: Sequence[ResolvedTask]) -> tuple[str, str]:
        content = render_job_script(self.array_spec(tasks))
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        return os.path.join(self.job_dir(), f"{self._stem(tasks[0])}-array-{digest}.sbatch"), content

    def array_log_file(self, task: ResolvedTask, array_job_id: str, index: int) -> str:
        return os.path.join(self.job_dir(), f"{self._stem(task)}-{array_job_id}_{index}.log")

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
        from cuberun.execute import make_runner

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

    def run_array(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        """A sweep as ONE job array: element i runs plans[i]; one outcome per element. Ctrl-C
        cancels the whole array (scancel of its job id)."""
        from cuberun.process import handle_signals, watchdog

        tasks = [p.task for p in plans]

        path, content = self.array_script(tasks)  # config problems surface before anything is submitted
        os.makedirs(self.job_dir(), exist_ok=True)
        os.makedirs(self.cube.workspace, exist_ok=True)
        array: _Job | None = None
        with handle_signals() as cancel, _watchdogs() as guards:
            try:
                array = self._submit(tasks[0], path, content, None, elements=len(tasks))
                guards.append(watchdog(cleanup=[["scancel", array.job_id]]))  # if cuberun is killed, the array is cancelled
                jobs = [
                    _Job(t.name, f"{array.job_id}_{i}", self.array_log_file(tasks[0], array.job_id, i), path, array.submitted_at,
                         array_job_id=array.job_id, array_task_id=i)
                    for i, t in enumerate(tasks)
                ]  # fmt: skip
                return self._follow_array(array, jobs, log_paths, cancel)
            except ControllerLost:
                raise
            except BaseException:
                if array is not None:
                    self._cancel_quietly([array])  # never leave our jobs behind
                raise

    # -- submitting and following --------------------------------------------------------------
    def _slurm(self, argv: Sequence[str], *, timeout: float = CLIENT_TIMEOUT, env: Mapping[str, str] | None = None, shield: bool = False) -> Captured:
        """Run a Slurm client. `shield` for calls that must not die half-way (sbatch, scancel);
        queries stay interruptible, so Ctrl-C answers at once even when the controller hangs."""
        from cuberun.process import capture

        if not shield:
            return capture(argv, timeout=timeout, env=env)
        with _shielded():
            return capture(argv, timeout=timeout, env=env)

    @staticmethod
    def _controller_hint() -> str:
        conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
        return f"check that slurmctld is up (scontrol ping) and SLURM_CONF (now {conf})"

    # -- the batch hooks (the loop is BatchRunner.run_batch) --------------------------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[_Plan]:
        plans = [(p.task, *self.script(p.task)) for p in planned]  # every config problem surfaces before anything is submitted
        os.makedirs(self.job_dir(), exist_ok=True)
        os.makedirs(self.cube.workspace, exist_ok=True)
        return plans

    def submit(self, plan: _Plan, after: _Job | None) -> _Job:
        task, path, content = plan
        return self._submit(task, path, content, after.job_id if after is not None else None)

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

    def _submit(self, task: ResolvedTask, path: str, content: str, after: str | None, *, elements: int = 0) -> _Job:
        _write_if_changed(path, content)
        argv = ["sbatch", "--parsable"]
        dependency = None
        if after is not None:
            dependency = f"afterok:{after}"
            argv += [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"]
        argv.append(path)
        env = {**os.environ, **self.options.extra_env} if self.options.extra_env else None
        res = self._slurm(argv, env=env, shield=True)
        if res.missing:
            raise RunnerUnavailable(SBATCH_MISSING)
        job_id = res.stdout.strip().split(";")[0].strip() if res.returncode == 0 else ""
        if not job_id.isdigit():
            raise self._submit_error(task, res, path)
        if elements:
            logs = self.array_log_file(task, job_id, 0)[: -len("0.log")] + "<N>.log"
            job = _Job(task.name, job_id, logs, path, time.monotonic())
            limit = self.config.get("array_parallelism")
            at_once = f", at most {limit} at a time" if limit else ""
            say(f"submitted {elements} runs of task '{task.name}' as Slurm array job {job_id} (elements {job_id}_0 to {job_id}_{elements - 1}{at_once}; logs: {logs})")
            return job
        job = _Job(task.name, job_id, self.log_file(task, job_id), path, time.monotonic(), dependency)
        wait = f" after job {after}" if after else ""
        say(f"submitted task '{task.name}' as Slurm job {job_id}{wait} (log: {job.log_file})")
        return job

    def _submit_error(self, task: ResolvedTask, res: Captured, path: str) -> Exception:
        lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines or [f"exit code {res.returncode}"]
        line = re.sub(r"^sbatch:\s*(error:\s*)?", "", errors[-1])
        text = " ".join(lines).lower()
        if "unable to contact slurm controller" in text or "connection refused" in text:
            return RunnerUnavailable(f"Slurm controller unreachable: {line}", self._controller_hint())
        if "invalid partition" in text:
            partition = self.config.get("partition")
            known = self._partitions()
            hint = f"use one of: {', '.join(known)} (sinfo -h -o %P)" if known else "list the partitions with: sinfo -h -o %P"
            return BackendError(f"Slurm partition '{partition}' does not exist (sbatch: {line}); job script: {path}", hint)
        return BackendError(
            f"sbatch refused the job for task '{task.name}': {line}; job script: {path}",
            "check the slurm platform's partition, account, qos, time, mem, gres and sbatch_args (--dry-run prints the job script)",
        )

    def _partitions(self) -> list[str]:
        res = self._slurm(["sinfo", "-h", "-o", "%P"], timeout=30)
        if res.returncode != 0:
            return []
        return sorted({p.strip().rstrip("*") for p in res.stdout.split() if p.strip()})

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
            tail.finish()
        return self._outcome(job, start)

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
                _finish_tails([tails[i] for i in indexes])
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

    def _lookup_array(self, array_id: str, jobs: Sequence[_Job], misses: dict[int, int]) -> tuple[dict[int, JobInfo], str | None]:
        """({element index: what Slurm says}, a problem talking to the controller). An element
        missing from scontrol's answer (forgotten: MinJobAge) is looked up in sacct / the jobcomp log."""
        res = self._slurm(["scontrol", "show", "job", "-o", array_id], timeout=CLIENT_TIMEOUT)
        text = (res.stdout + "\n" + res.stderr).strip()
        forgotten = False
        if res.returncode == 0:
            infos = array_elements(res.stdout, array_id)
            if not infos:
                return {}, f"unexpected scontrol output: {_first_line(text)}"
        elif _forgotten(text):
            infos, forgotten = {}, True
        else:
            return {}, _first_line(text) or f"scontrol exited {res.returncode}"
        for job in jobs:
            index = job.array_task_id
            if index is None or index in infos:
                continue
            misses[index] = misses.get(index, 0) + 1
            if forgotten or misses[index] >= 3:  # an element is never missing for long while the array is known
                infos[index] = self._finished_job(job.job_id) or JobInfo(job.job_id, "UNKNOWN", source="none")
        return infos, None

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

    def _lookup(self, job_id: str) -> tuple[JobInfo | None, str | None]:
        """(what Slurm says about the job, a problem talking to the controller)."""
        res = self._slurm(["scontrol", "show", "job", "-o", job_id], timeout=CLIENT_TIMEOUT)
        text = (res.stdout + "\n" + res.stderr).strip()
        if res.returncode == 0:
            for line in res.stdout.splitlines():
                info = parse_job_line(line)
                if info is not None and info.job_id == job_id:
                    return info, None
            return None, f"unexpected scontrol output: {_first_line(text)}"
        if _forgotten(text):  # forgotten (MinJobAge) or the controller lost its state
            found = self._finished_job(job_id)
            if found is not None:
                return found, None
            return JobInfo(job_id, "UNKNOWN", source="none"), None
        return None, _first_line(text) or f"scontrol exited {res.returncode}"

    def _finished_job(self, job_id: str) -> JobInfo | None:
        if self._accounting is not False:
            res = self._slurm(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode"], timeout=CLIENT_TIMEOUT)
            text = res.stdout + res.stderr
            if "accounting storage is disabled" in text.lower() or res.missing:
                self._accounting = False
            elif res.returncode == 0:
                self._accounting = True
                info = parse_sacct(res.stdout, job_id)
                if info is not None and info.finished:
                    return info
        path = self._jobcomp_file()
        if path:
            return _search_jobcomp(path, job_id)
        return None

    def _jobcomp_file(self) -> str | None:
        if self._jobcomp is False:
            config = self._slurm_config()
            self._jobcomp = config.get("JobCompLoc") if config.get("JobCompType") == "jobcomp/filetxt" else None
        return self._jobcomp if isinstance(self._jobcomp, str) else None

    def _slurm_config(self) -> dict[str, str]:
        res = self._slurm(["scontrol", "show", "config"], timeout=30)
        config: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                config[key.strip()] = value.strip()
        return config

    def _scancel(self, jobs: Sequence[_Job], *extra: str) -> None:
        ids = [j.job_id for j in jobs]  # only jobs this run submitted
        if ids:
            self._slurm(["scancel", *extra, *ids], timeout=30, shield=True)

    def _cancel_quietly(self, jobs: Sequence[_Job]) -> None:
        try:
            self._scancel(jobs)
        except Exception:  # best effort while another error is on its way
            pass

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
                tail.finish()
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
        from cuberun.process import Outcome

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


# -- small helpers --------------------------------------------------------------------------------
def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _forgotten(text: str) -> bool:
    """scontrol's answer for a job it does not know (any more)."""
    return "invalid job id" in text.lower() or re.search(r"\bjob \S+ not found", text, re.IGNORECASE) is not None


def _format_seconds(value: float | None) -> str:
    if value is None:
        return "none"
    total = int(value)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


@contextmanager
def _watchdogs() -> Iterator[list[Any]]:
    """Watchdogs (process.watchdog) armed while jobs are followed, disarmed at the end."""
    guards: list[Any] = []
    try:
        yield guards
    finally:
        for guard in guards:
            guard.disarm()


def _write_if_changed(path: str, content: str) -> None:
    from cuberun.safeio import read_regular, write_file

    data = content.encode("utf-8")
    try:
        if read_regular(path, len(data) + 1) == data:
            return
    except CuberunError:
        pass
    write_file(path, data, what="job script")


def _grew(path: str, offset: int) -> bool:
    try:
        return os.stat(path).st_size > offset
    except OSError:
        return False
