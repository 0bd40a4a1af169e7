"""What a run submits: the job's cuberun command (the inner platform), the #SBATCH directives,
the job script of a task or of a sweep's job array (named by its content hash), and sbatch."""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, UsageError, split_words
from cuberun.locks import HELD_BY_PARENT_ENV
from cuberun.runners import nested
from cuberun.runners.slurm.client import SlurmClient
from cuberun.runners.slurm.jobs import (
    _SAFE_NAME,
    FORBIDDEN_SBATCH_ARGS,
    SBATCH_MISSING,
    JobSpec,
    normalize_memory,
    render_job_script,
)
from cuberun.runners.slurm.logs import _Job

if TYPE_CHECKING:
    from cuberun.process import Captured
    from cuberun.resolve import ResolvedTask


class SlurmSubmit(SlurmClient):
    """Job scripts and their submission."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inner_runner_name: str | None = None  # set once the inner platform was checked

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
        from cuberun.retry import limits

        platform = self.inner_platform
        return nested.run_argv(
            self.cuberun_argv(), cube=os.path.abspath(self.cube.file), task=task.name, platform=platform, workspace=str(task.workspace),
            options=self.options, params=[f"{p.name}={p.host_path}" for p in task.params if p.name in task.overrides],
            # container platforms need --gpus to expose GPUs; on the host, Slurm's CUDA_VISIBLE_DEVICES
            # (the GPUs it allocated) must stay as it is
            forward_gpus=self._inner_runner_name != "local",
            retried=limits(self.options, task.task).retries > 0,  # this side submits each attempt (retry.py)
        )

    def _directives(self, task: ResolvedTask, log_name: str) -> tuple[tuple[str, str], ...]:
        """The #SBATCH options; log_name is the job log's name pattern (`hello-%j.log`)."""
        cfg = self.config
        job_dir = self.job_dir()
        directives: list[tuple[str, str]] = [("--job-name", self.job_name(task))]
        from cuberun.retry import minutes, timeout_of

        timeout = timeout_of(self.options, task.task)  # --timeout / tasks.<t>.timeout: --time in whole minutes, rounded up
        for opt, key in (("--partition", "partition"), ("--account", "account"), ("--qos", "qos"), ("--time", "time"), ("--cpus-per-task", "cpus_per_task")):
            value = str(minutes(timeout)) if key == "time" and timeout is not None else cfg.get(key)
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


def _write_if_changed(path: str, content: str) -> None:
    from cuberun.safeio import read_regular, write_file

    data = content.encode("utf-8")
    try:
        if read_regular(path, len(data) + 1) == data:
            return
    except CuberunError:
        pass
    write_file(path, data, what="job script")
