"""One task's run and its record: start the record, run the plan (with its retries), finish the
record from the outcome; the result type and the error of a failed task.

Moved out of execute.py (issue 13 layout); `cuberun.execute` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cuberun import handshake
from cuberun.console import say
from cuberun.errors import CuberunError, TaskFailed
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.spec.model import Cube
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.process import Outcome
    from cuberun.records import RunRecord


@dataclass
class TaskResult:
    task: str
    exit_code: int
    run_id: str | None = None
    status: str = "succeeded"
    steps: list[Step] = field(default_factory=list)
    reason: str | None = None  # the runner's one-line account of a non-zero outcome (Outcome.reason)
    sweep: dict[str, str] | None = None  # the sweep variant's values (--sweep), None outside a sweep
    timeout: float | None = None  # the time limit (s) at which the task was stopped, when it was

    @property
    def label(self) -> str:
        """`train`, or `train [lr=0.01]` for a sweep variant: what progress lines and the summary call it."""
        return _label(self.task, self.sweep)


def _label(task: str, sweep: dict[str, str] | None) -> str:
    return task + (f" [{', '.join(f'{k}={v}' for k, v in sweep.items())}]" if sweep else "")


def _amend_record(cube: Cube, run_id: str | None, **fields: Any) -> None:
    from cuberun.records import RUNS_DIR, RunRecord

    if not run_id:
        return
    from cuberun.safeio import read_json

    path = cube.workspace / RUNS_DIR / run_id / "record.json"
    try:
        data = read_json(path)
    except (CuberunError, ValueError):
        return
    if not isinstance(data, dict):
        return
    data.update(fields)
    RunRecord(path, data).save()


def task_failed(cube: Cube, result: TaskResult, done: Sequence[TaskResult] = ()) -> TaskFailed:
    """The error of a failed task; `.results` holds the results of this invocation so far
    (the failed one last), for cuberun.api."""
    exc = _task_failed(cube, result)
    exc.timeout = result.timeout
    exc.results = [*(r for r in done if r is not result), result]  # type: ignore[attr-defined]
    return exc


def _task_failed(cube: Cube, result: TaskResult) -> TaskFailed:
    if result.reason:  # the runner's words name its own log (e.g. a Slurm job log)
        return TaskFailed(f"task '{result.label}' {result.reason} (run {result.run_id})", result.exit_code)
    return TaskFailed(
        f"task '{result.label}' {'was interrupted' if result.status == 'interrupted' else f'failed with exit code {result.exit_code}'}"
        f" (run {result.run_id}; log {cube.workspace}/.cuberun/runs/{result.run_id}/output.log)",
        result.exit_code,
    )


def run_one(cube: Cube, runner: Runner, plan: TaskPlan, extra: dict[str, Any] | None = None) -> tuple[TaskResult, RunRecord]:
    rt = plan.task
    from cuberun.retry import run_attempts

    record, steps = _start_run(cube, runner, plan, extra=extra)
    try:
        outcome = run_attempts(runner, plan, str(record.log_path))  # with its retries (retry.py)
    except CuberunError as exc:
        record.finish("error", exc.exit_code, error=exc.lines()[0])
        raise
    except BaseException as exc:
        record.finish("error", None, error=f"{type(exc).__name__}: {exc}")
        raise
    return _finish_run(rt, record, steps, outcome, runner.options.strict_outputs, runner.outputs_on_host), record


def run_chain(cube: Cube, runner: Runner, plans: Sequence[TaskPlan], extra: dict[str, Any] | None = None) -> list[TaskResult]:
    """Tasks submitted together (runner.run_chain, e.g. Slurm afterok): one record per task."""
    return _run_together(cube, runner, plans, [extra or {}] * len(plans), runner.run_chain)


def _run_together(
    cube: Cube, runner: Runner, plans: Sequence[TaskPlan], extras: Sequence[dict[str, Any]],
    submit: Callable[[Sequence[TaskPlan], Sequence[str]], list[Outcome]],
) -> list[TaskResult]:
    """Tasks one runner call runs (run_chain, run_array): one record per task. Tasks the runner
    reports no outcome for (after a failure or Ctrl-C) are recorded as 'cancelled'."""
    resolved = [p.task for p in plans]
    started = [_start_run(cube, runner, plan, verb="queueing", extra=extra) for plan, extra in zip(plans, extras, strict=True)]
    try:
        outcomes = submit(plans, [str(record.log_path) for record, _ in started])
    except BaseException as exc:
        error = exc.lines()[0] if isinstance(exc, CuberunError) else f"{type(exc).__name__}: {exc}"
        for record, _ in started:
            record.finish("error", exc.exit_code if isinstance(exc, CuberunError) else None, error=error)
        raise
    strict = runner.options.strict_outputs
    results = [_finish_run(rt, record, steps, outcome, strict, runner.outputs_on_host)
               for rt, (record, steps), outcome in zip(resolved, started, outcomes, strict=False)]
    for record, _ in started[len(results) :]:
        last = results[-1] if results else None
        record.finish("cancelled", None, error=f"not run: task '{last.task}' {last.status}" if last else "not run")
    return results


def _start_run(cube: Cube, runner: Runner, plan: TaskPlan, verb: str = "running", extra: dict[str, Any] | None = None) -> tuple[RunRecord, list[Step]]:
    from cuberun import records
    from cuberun.retry import limits
    from cuberun.secretid import redact_env

    rt = plan.task
    for warning in rt.warnings:
        say(f"warning: {warning}")
    steps = list(plan.steps)
    rt.prepare_outputs()
    record = records.start_record(
        cube.workspace,
        {
            "cube": {"name": cube.name, "version": cube.version, "path": str(cube.file), "root": str(cube.root)},
            "task": rt.name,
            "platform": runner.platform,
            "runner": runner.name,
            "workspace": str(cube.workspace),
            "parameters": {p.name: {"io": p.io, "type": p.type, "path": str(p.host_path)} for p in rt.params},
            "overrides": dict(rt.overrides),
            "steps": [dict(s.to_json(), env=redact_env(s.env)) for s in steps],
            "command": next((list(s.argv) for s in reversed(steps) if s.purpose == "run"), list(steps[-1].argv) if steps else []),
            **({"policy": pol.to_json()} if (pol := runner.policy(rt)) is not None else {}),
            **({"limits": lim} if (lim := limits(runner.options, rt.task).to_json()) else {}),
            **({"image": ident} if (ident := runner.image_identity()) is not None else {}),
            **(extra or {}),
        },
    )
    say(f"{verb} task '{_label(rt.name, (extra or {}).get('sweep'))}' on {runner.platform} (run {record.run_id})")
    handshake.emit("start", task=rt.name, run_id=record.run_id)
    return record, steps


def missing_outputs(rt: Any) -> list[str]:
    """The declared outputs a task that exited 0 did not write: a missing file, a missing or
    empty directory (cuberun creates output directories before the task starts)."""
    import os

    found = []
    for p in rt.params:
        if p.io != "output":
            continue
        path = str(p.host_path)
        if p.type == "directory":
            try:
                with os.scandir(path) as entries:  # closed at once (a ResourceWarning otherwise)
                    empty = next(entries, None) is None
            except OSError:
                empty = True
            if empty:
                found.append(f"{p.name} ({path} is empty)")
        elif not os.path.exists(path):
            found.append(f"{p.name} ({path} does not exist)")
    return found


def _finish_run(rt: Any, record: RunRecord, steps: list[Step], outcome: Outcome, strict: bool = False, check_outputs: bool = True) -> TaskResult:
    sweep = record.data.get("sweep")
    sweep = dict(sweep) if isinstance(sweep, dict) else None
    status = "succeeded" if outcome.exit_code == 0 else ("interrupted" if outcome.interrupted else "failed")
    extra: dict[str, Any] = {}
    exit_code = outcome.exit_code
    reason = outcome.reason
    if outcome.exit_code == 0 and check_outputs:
        missing = missing_outputs(rt)
        if missing:
            note = "exited 0 without writing its declared output" + ("s" if len(missing) > 1 else "") + ": " + ", ".join(missing)
            extra["warnings"] = [note]
            if strict:
                status, exit_code, reason = "failed", 1, f"{note} (--strict-outputs)"
            else:
                status = "succeeded-with-warnings"
                say(f"warning: task '{_label(rt.name, sweep)}' {note}; recorded as succeeded-with-warnings (--strict-outputs makes this a failure)")
    if outcome.reason:
        extra["reason"] = outcome.reason
    if outcome.details:
        details = dict(outcome.details)
        if "attempts" in details:  # retried (retry.py, or natively): which attempt ended it, each one's exit code and seconds
            extra["attempts"] = details.pop("attempts")
            extra["attempt"] = len(extra["attempts"])
            extra["max_attempts"] = details.pop("max_attempts", extra["attempt"])
        if details:
            extra["details"] = details
    if reason and "reason" not in extra:
        extra["reason"] = reason
    try:
        record.finish(status, exit_code, elapsed_s=round(outcome.elapsed, 4), signal=outcome.signal, **extra)
    except OSError as exc:  # e.g. the task filled the disk: its outcome still decides the exit code
        say(f"warning: cannot finish the run record {record.path}: {exc.strerror}")
    limit = (outcome.details or {}).get("timeout") if (outcome.details or {}).get("timed_out") else None
    return TaskResult(rt.name, exit_code, record.run_id, status, steps, reason, sweep,
                      float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None)
