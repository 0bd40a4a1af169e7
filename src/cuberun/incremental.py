"""The up-to-date decision around a task's run: skip it, or run it under its output locks and
save its state after; `--explain` (the decision without running) and the chain runners' variant
(decide every task up front).

Moved out of execute.py (issue 13 layout); `cuberun.execute` re-exports the public names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cuberun.console import say
from cuberun.errors import CuberunError
from cuberun.runners.base import Runner, TaskPlan
from cuberun.spec.model import Cube
from cuberun.taskrun import TaskResult, _amend_record, _label, run_chain, run_one, task_failed
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def explain_tasks(cube: Cube, runner: Runner, order: Sequence[str], overrides: dict[str, str], *, force: bool = False,
                  as_json: bool = False) -> list[TaskResult]:
    """What `run` would do, and why, without running anything: per task the decision, its
    reasons and (with as_json) the identity the check compared. A task after one that runs
    runs too."""
    from cuberun import graph, uptodate
    from cuberun.resolve import resolve_task

    deps = graph.dependencies(cube, overrides)
    rerun: set[str] = set()
    report: list[dict[str, Any]] = []
    results: list[TaskResult] = []
    for name in order:
        mine = {k: v for k, v in overrides.items() if cube.tasks[name].param(k)}
        rt = resolve_task(cube, name, mine, allow_missing_inputs=True)
        fp = dict(runner.identity(runner.plan(rt)))
        command = fp.pop("command", [])
        decision = uptodate.check(rt, uptodate.identity_of(rt, command, fp), uptodate.state_key(name), force=force)
        if not decision.run:
            _far_end_check(runner, rt, decision)
        upstream = [d for d in deps[name] if d in rerun]
        runs = decision.run or bool(upstream)
        reasons = decision.reasons if decision.run else ([f"task {upstream[0]} runs first"] if upstream else decision.reasons)
        if runs:
            rerun.add(name)
        report.append({"task": name, "run": runs, "reasons": reasons, "identity": decision.identity})
        results.append(TaskResult(name, 0, status="would run" if runs else "up to date", reason="; ".join(reasons)))
        if not as_json:
            print(f"task '{name}' {'would run' if runs else 'would be skipped'}: {'; '.join(reasons)}")
    if as_json:
        print(json.dumps(report, indent=2))
    return results


def _far_end_check(runner: Runner, rt: Any, decision: Any) -> None:
    """All this side knows is unchanged: ask the runner about what runs at the far end (a
    remote host's interpreter and packages, its image), compared with what the last run saw."""
    from cuberun import uptodate

    now = runner.far_end(rt)
    reasons = uptodate.far_end_reasons(decision, now)
    decision.far_end = now
    if reasons:
        decision.run = True
        decision.reasons[:] = reasons


def run_incremental(
    cube: Cube, runner: Runner, rt: Any, invocation: str, *, force: bool = False, key: str | None = None, sweep: dict[str, str] | None = None,
    runner_fp: dict[str, Any] | None = None, quiet_skip: bool = False, plan: TaskPlan | None = None,
) -> TaskResult:
    """Run one task unless it is up to date; hold its output locks while it runs. `plan`: the
    runner's plan of `rt`, when already made."""
    from cuberun import uptodate

    if plan is None:  # before any lock file is written: building the command may fail on bad input
        plan = runner.plan(rt)
    if runner_fp is None:
        runner_fp = runner.identity(plan)
    with _output_locks(cube, rt, invocation):
        pending = _pending(runner, plan, invocation, key or uptodate.state_key(rt.name), force=force, sweep=sweep, runner_fp=runner_fp)
        return pending if isinstance(pending, TaskResult) else _run_pending(cube, runner, pending)


@dataclass
class _Pending:
    """A task that will run: its plan, and what its up-to-date state and run record need."""

    plan: TaskPlan
    key: str
    decision: Any  # uptodate.Decision
    extra: dict[str, Any]  # run record fields


def _output_locks(cube: Cube, rt: Any, invocation: str) -> Any:
    from cuberun.locks import output_locks

    return output_locks(cube.workspace, [str(p.host_path) for p in rt.params if p.io == "output"], {"task": rt.name, "invocation": invocation})


def _pending(
    runner: Runner, plan: TaskPlan, invocation: str, key: str, *, force: bool, sweep: dict[str, str] | None = None,
    runner_fp: dict[str, Any] | None = None,
) -> _Pending | TaskResult:
    """The up-to-date check (under the task's output locks): a skip, or the task to run."""
    from cuberun import uptodate

    rt = plan.task
    fp = dict(runner_fp if runner_fp is not None else runner.identity(plan))
    command = fp.pop("command", [])
    decision = uptodate.check(rt, uptodate.identity_of(rt, command, fp), key, force=force)
    label = _label(rt.name, sweep)
    if not decision.run:
        _far_end_check(runner, rt, decision)
    if not decision.run:
        say(f"skipping task '{label}': {decision.explain()}")
        return TaskResult(rt.name, 0, status="skipped", reason=decision.explain(), sweep=dict(sweep) if sweep else None)
    say(f"task '{label}' will run: {decision.explain()}")
    extra = {
        "invocation_id": invocation,
        "runner_fingerprint": fp,
        "inputs": {n: f.to_json() for n, f in decision.inputs.items()},
        **({"sweep": dict(sweep)} if sweep else {}),
    }
    return _Pending(plan, key, decision, extra)


def _run_pending(cube: Cube, runner: Runner, pending: _Pending) -> TaskResult:
    result, record = run_one(cube, runner, pending.plan, pending.extra)
    pending.decision.far_end = runner.far_end_of(record.data.get("details") or {})
    _save_state(cube, pending, result)
    return result


def _save_state(cube: Cube, pending: _Pending, result: TaskResult) -> None:
    """Outputs are recorded complete (state and record) only after the task exited 0."""
    from cuberun import uptodate

    if result.exit_code == 0 and result.run_id and result.status == "succeeded":
        _amend_record(cube, result.run_id, outputs=uptodate.save(pending.plan.task, pending.key, pending.decision, result.run_id))


def _run_chain_incremental(cube: Cube, runner: Runner, plans: Sequence[TaskPlan], invocation: str, force: bool) -> list[TaskResult]:
    """Runners that submit a chain at once (Slurm afterok): decide up front; a task re-runs when
    it is out of date or any task it depends on re-runs."""
    from cuberun import graph, uptodate

    deps = graph.dependencies(cube)
    rerun: set[str] = set()
    todo = []
    results: list[TaskResult] = []
    for plan in plans:
        rt = plan.task
        fp = dict(runner.identity(plan))
        command = fp.pop("command", [])
        decision = uptodate.check(rt, uptodate.identity_of(rt, command, fp), uptodate.state_key(rt.name), force=force)
        upstream = [d for d in deps[rt.name] if d in rerun]
        if decision.run or upstream:
            why = decision.explain() if decision.run else f"task {upstream[0]} runs first"
            say(f"task '{rt.name}' will run: {why}")
            rerun.add(rt.name)
            todo.append((plan, decision, fp))
        else:
            say(f"skipping task '{rt.name}': {decision.explain()}")
            results.append(TaskResult(rt.name, 0, status="skipped", reason=decision.explain()))
    if not todo:
        return results
    chain = run_chain(cube, runner, [t[0] for t in todo], {"invocation_id": invocation})
    for (plan, decision, fp), result in zip(todo, chain, strict=False):
        rt = plan.task
        if result.exit_code != 0:
            raise task_failed(cube, result, [*results, *chain])
        uptodate.refresh_inputs(rt, decision)
        outputs = uptodate.save(rt, uptodate.state_key(rt.name), decision, result.run_id)
        _amend_record(cube, result.run_id, outputs=outputs, runner_fingerprint=fp, inputs={n: f.to_json() for n, f in decision.inputs.items()})
    if len(chain) < len(todo):
        raise CuberunError(f"runner '{runner.name}' reported no outcome for task '{todo[len(chain)][0].task.name}'")
    return results + chain
