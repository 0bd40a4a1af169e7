"""Per-task time limits and retries: what applies to a task, and the attempts of a run.

A task's limits come from the cube (`tasks.<task>.timeout`, `tasks.<task>.retries` in
mlcube.yaml) and from the invocation (`--timeout`, `--retries`, `--retry-delay`); the
invocation's value wins. `timeout` bounds each attempt (exit 124 when it hits, see
process.EXIT_TIMEOUT); `retries` is the number of attempts after a failed first one.

Runners map the limits natively where their backend has them (k8s: `activeDeadlineSeconds` and
`backoffLimit`, the Job retries its pod itself: `native_retries`; Slurm: `--time`), and cuberun
enforces them elsewhere: the runner stops the task at the timeout (`stream(timeout=...)`), and
`run_attempts` here runs a failed task again after a back-off (the base delay doubling per
attempt, at most MAX_DELAY). Only a task's failure is retried (a non-zero exit, a timeout):
never Ctrl-C or an error of cuberun or its backend (bad input, an engine that is gone), which
are raised as before. The task's outputs stay as the failed attempt left them (cuberun never
empties outputs before a run; it only creates the folders).

The attempts go into the outcome's details (`attempts`: number, exit code, seconds, timed out),
from where the run record and the summary take them.
"""

from __future__ import annotations

import math
import time

from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.process import Outcome
    from cuberun.runners.base import Runner, RunOptions, TaskPlan
    from cuberun.spec.model import Task

MAX_RETRIES = 100
DEFAULT_DELAY = 2.0  # seconds before the second attempt; doubled for each later one
MAX_DELAY = 300.0  # the back-off never waits longer than this between two attempts


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one task in one invocation."""

    timeout: float | None = None  # seconds per attempt
    retries: int = 0  # attempts after a failed first one
    delay: float = DEFAULT_DELAY  # the back-off's base (seconds)
    timeout_source: str | None = None  # "cli" | "cube": where the timeout came from
    retries_source: str | None = None

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.timeout is not None:
            out["timeout"] = self.timeout
            out["timeout_source"] = self.timeout_source
        if self.retries_source is not None:
            out.update(retries=self.retries, retry_delay=self.delay, retries_source=self.retries_source)
        return out

    def describe(self) -> str:
        """`timeout 30 s (cube), retries 2 (cli; back-off 2 s doubling)`, '' when none applies."""
        parts = []
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout:g} s ({self.timeout_source})")
        if self.retries:
            parts.append(f"retries {self.retries} ({self.retries_source}; back-off {self.delay:g} s doubling, at most {MAX_DELAY:g} s)")
        return ", ".join(parts)


def limits(options: RunOptions, task: Task) -> Limits:
    """The task's limits in this invocation: the invocation's values win over the cube's."""
    timeout, tsrc = (options.timeout, "cli") if options.timeout is not None else (task.timeout, "cube" if task.timeout is not None else None)
    retries, rsrc = (options.retries, "cli") if options.retries is not None else (task.retries, "cube" if task.retries is not None else None)
    delay = options.retry_delay if options.retry_delay is not None else DEFAULT_DELAY
    return Limits(timeout, int(retries or 0), float(delay), tsrc, rsrc)


def timeout_of(options: RunOptions, task: Task) -> float | None:
    """The seconds one attempt of `task` may take (None: no limit)."""
    return limits(options, task).timeout


def minutes(seconds: float) -> int:
    """A timeout as whole minutes, rounded up (Slurm's --time has minutes; at least 1)."""
    return max(1, math.ceil(seconds / 60))


def backoff(base: float, attempt: int) -> float:
    """The wait before attempt `attempt` (2, 3, ...): base, 2*base, 4*base, ... at most MAX_DELAY."""
    return float(min(base * 2.0 ** max(0, attempt - 2), MAX_DELAY))


def attempt_entry(number: int, outcome: Outcome, plan: TaskPlan) -> dict[str, Any]:
    """One attempt in the run record: its exit code, seconds, and what ran it (a container, a job)."""
    details = outcome.details or {}
    entry: dict[str, Any] = {"attempt": number, "exit_code": outcome.exit_code, "elapsed_s": round(outcome.elapsed, 4)}
    if details.get("timed_out"):
        entry["timed_out"] = True
    for key in ("container", "session", "job"):  # what the plan named (a random part: one per attempt)
        if isinstance(plan.values.get(key), str):
            entry[key] = plan.values[key]
    for key in ("job", "job_id"):
        if key in details:
            entry[key] = details[key]
    remote = details.get("remote")
    if isinstance(remote, dict) and isinstance(remote.get("run_id"), str):  # ssh: the remote cuberun's run of this attempt
        entry["remote_run"] = remote["run_id"]
    return entry


def run_attempts(runner: Runner, plan: TaskPlan, log_path: str) -> Outcome:
    """Run the planned task up to its number of attempts (one when it has no retries, or when
    the runner retries natively: then the runner reports the attempts itself)."""
    from cuberun.console import say
    from cuberun.process import CANCEL
    from cuberun.valueclass import replace

    lim = limits(runner.options, plan.task.task)
    if lim.timeout is not None and not runner.enforces_timeout:
        from cuberun.console import warn

        warn(f"the time limit of task '{plan.task.name}' ({lim.timeout:g} s, {lim.timeout_source}) does not apply to the "
             f"{runner.name} runner and is ignored")
    if lim.retries == 0 or runner.native_retries:
        return _worded(runner.run(plan, log_path), lim, plan.task.name)
    attempts: list[dict[str, Any]] = []
    name = plan.task.name
    number = 1
    while True:
        outcome = runner.run(plan, log_path)
        attempts.append(attempt_entry(number, outcome, plan))
        if outcome.exit_code == 0 or outcome.interrupted or CANCEL.requested or number >= lim.attempts:
            break
        number += 1
        wait = backoff(lim.delay, number)
        what = "timed out" if (outcome.details or {}).get("timed_out") else f"failed with exit code {outcome.exit_code}"
        say(f"task '{name}' {what} on attempt {number - 1} of {lim.attempts}; attempt {number} in {wait:g} s")
        _note(log_path, f"cuberun: attempt {number - 1} of {lim.attempts} {what}; attempt {number} follows")
        if not _wait(wait):
            break
        plan = runner.plan(plan.task)  # what the runner decides per run (a container name) is decided again
    details = {**dict(outcome.details or {}), "attempts": attempts, "max_attempts": lim.attempts}
    elapsed = sum(a["elapsed_s"] for a in attempts)
    reason = outcome.reason
    if outcome.exit_code != 0 and not outcome.interrupted and len(attempts) > 1:
        reason = f"{reason or f'failed with exit code {outcome.exit_code}'} (attempt {len(attempts)} of {lim.attempts}; every attempt failed)"
    return _worded(replace(outcome, elapsed=elapsed, details=details, reason=reason), lim, name)


def _worded(outcome: Outcome, lim: Limits, task: str) -> Outcome:
    """A timeout that came from the cube says so (the runner's words name --timeout)."""
    from cuberun.valueclass import replace

    if lim.timeout_source == "cube" and outcome.reason and "(--timeout)" in outcome.reason:
        return replace(outcome, reason=outcome.reason.replace("(--timeout)", f"(tasks.{task}.timeout)"))
    return outcome


def _wait(seconds: float) -> bool:
    """The back-off: False when Ctrl-C (or SIGTERM) came meanwhile (no further attempt)."""
    from cuberun.process import CANCEL

    end = time.monotonic() + seconds
    while not CANCEL.requested:
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(0.05, left))  # wakes to notice a signal: the handler only records it
    return False


def _note(log_path: str, line: str) -> None:
    """A line between two attempts in the task's log (the attempts append to one log)."""
    try:
        with open(log_path, "ab") as log:
            log.write(f"\n{line}\n".encode())
    except OSError:
        pass
