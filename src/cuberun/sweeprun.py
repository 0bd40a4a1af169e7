"""`--sweep`: the variants of a run (see sweep.py for what they are) run one by one, `jobs` at a
time, or as one runner array submission (a Slurm job array).

Moved out of execute.py (issue 13 layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cuberun.console import say
from cuberun.errors import CuberunError
from cuberun.incremental import _output_locks, _Pending, _pending, _run_pending, _save_state, run_incremental
from cuberun.runners.base import Runner
from cuberun.runners.factory import make_runner
from cuberun.spec.model import Cube
from cuberun.taskrun import TaskResult, _run_together, task_failed
from cuberun.valueclass import replace as replace_fields


def _sweep_variants(cube: Cube, runner: Runner, order: Sequence[str], task: str, overrides: dict[str, str],
                    sweeps: Sequence[str]) -> tuple[list[str], list[Any]]:
    """The tasks of the run that go per variant, and the variants (see sweep.py)."""
    from cuberun import sweep

    axes = sweep.parse_axes(sweeps, cube, [cube.tasks[n] for n in order], overrides, runner.sections())
    per_variant = sweep.per_variant_tasks(axes, cube, order, overrides)
    if task not in per_variant:  # the target itself always varies: it is what the sweep is of
        per_variant.append(task)
    return per_variant, sweep.plan(axes, cube, order, per_variant, task, overrides)


def _variant_runner(cube: Cube, runner: Runner, variant: Any) -> Runner:
    """The same runner with the variant's -P config values applied (or the runner itself)."""
    if not variant.params:
        return runner
    from cuberun.spec.load import build_cube

    base = [*runner.options.config_overrides, *variant.params]
    vcube = build_cube(cube.doc, cube.file, workspace=cube.workspace, overrides=base)
    return make_runner(vcube, runner.platform, replace_fields(runner.options, config_overrides=tuple(base)), base)


def _as_array(runner: Runner, variants: Sequence[Any], per_variant: Sequence[str] = ()) -> bool:
    """Sweep variants go to runner.run_array (a Slurm job array) when they share the runner and
    each variant is one task."""
    return (runner.supports_array and len(variants) > 1 and not any(v.params for v in variants) and len(per_variant) <= 1
            and not _retried_names(runner, per_variant))


def _retried_names(runner: Runner, names: Sequence[str]) -> bool:
    from cuberun.retry import limits

    return not runner.native_retries and any(limits(runner.options, runner.cube.tasks[n]).retries for n in names)


def _run_variants(cube: Cube, runner: Runner, tasks: Sequence[str], variants: Sequence[Any], invocation: str, *, force: bool,
                  jobs: int) -> list[TaskResult]:
    """Each variant runs its tasks in order (stopping at a failure); variants run `jobs` at a time."""
    from cuberun import sweep, uptodate
    from cuberun.process import CANCEL, handle_signals
    from cuberun.resolve import resolve_task

    def one(variant: Any) -> list[TaskResult]:
        done: list[TaskResult] = []
        sweep.write_files(variant)
        vr = _variant_runner(cube, runner, variant)
        for task, task_overrides in variant.tasks.items():
            if CANCEL.requested:
                done.append(TaskResult(task, 128 + (CANCEL.received or 2), status="interrupted", reason="not started: interrupted",
                                       sweep=dict(variant.values)))
                break
            rt = resolve_task(cube, task, task_overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
            result = run_incremental(cube, vr, rt, invocation, force=force, key=uptodate.state_key(task, variant.label), sweep=variant.values)
            done.append(result)
            if result.exit_code != 0:
                break
        return done

    what = f"task '{tasks[-1]}'" if len(tasks) == 1 else "tasks " + ", ".join(f"'{t}'" for t in tasks)
    per_variant: list[list[TaskResult]] = []
    if _as_array(runner, variants, tasks):
        say(f"sweep of {what}: {len(variants)} variants (those to run as one {runner.name} array)")
        per_variant = [[r] for r in _run_array(cube, runner, tasks[-1], variants, invocation, force)]
    elif jobs <= 1 or len(variants) == 1:
        say(f"sweep of {what}: {len(variants)} variants, 1 at a time")
        for variant in variants:
            per_variant.append(one(variant))
    else:
        from concurrent.futures import ThreadPoolExecutor

        say(f"sweep of {what}: {len(variants)} variants, {min(jobs, len(variants))} at a time")
        with handle_signals(), ThreadPoolExecutor(jobs) as pool:
            per_variant = list(pool.map(one, variants))
    results = [r for rs in per_variant for r in rs]
    failed = [r for r in results if r.exit_code != 0]
    summary = ", ".join(f"{v.label}: {_variant_status(rs)}" for v, rs in zip(variants, per_variant, strict=True))
    say(f"sweep finished: {summary}")
    if failed:
        raise task_failed(cube, failed[0], results)
    return results


def _variant_status(results: Sequence[TaskResult]) -> str:
    bad = next((r for r in results if r.exit_code != 0), None)
    if bad is not None:
        return bad.status if len(results) == 1 else f"{bad.task} {bad.status}"
    if not results:
        return "not started"
    return results[0].status if len(results) == 1 or all(r.status == "skipped" for r in results) else "succeeded"


def _run_array(cube: Cube, runner: Runner, task: str, variants: Sequence[Any], invocation: str, force: bool) -> list[TaskResult]:
    """The variants that are not up to date as one runner.run_array call, each with its own
    record; their output locks are held until the array ends (a skipped variant's at once released)."""
    from contextlib import ExitStack

    from cuberun import sweep, uptodate
    from cuberun.resolve import resolve_task

    results: list[TaskResult | None] = []
    todo: list[tuple[int, _Pending]] = []
    with ExitStack() as held:
        for variant in variants:
            sweep.write_files(variant)
            rt = resolve_task(cube, task, variant.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
            plan = runner.plan(rt)
            fp = runner.identity(plan)  # before any lock file is written (as in run_incremental)
            locks = held.enter_context(ExitStack())
            locks.enter_context(_output_locks(cube, rt, invocation))
            pending = _pending(runner, plan, invocation, uptodate.state_key(task, variant.label), force=force, sweep=variant.values, runner_fp=fp)
            if isinstance(pending, TaskResult):
                locks.close()
            else:
                todo.append((len(results), pending))
            results.append(pending if isinstance(pending, TaskResult) else None)
        ran: list[TaskResult] = []
        if len(todo) == 1:
            ran = [_run_pending(cube, runner, todo[0][1])]
        elif todo:
            ran = _run_together(cube, runner, [p.plan for _, p in todo], [p.extra for _, p in todo], runner.run_array)
            if len(ran) < len(todo):
                raise CuberunError(f"runner '{runner.name}' reported no outcome for {len(todo) - len(ran)} variants of task '{task}'")
            for (_, pending), result in zip(todo, ran, strict=True):
                _save_state(cube, pending, result)
        for (i, _), result in zip(todo, ran, strict=True):
            results[i] = result
    return [r for r in results if r is not None]
