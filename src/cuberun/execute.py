"""Orchestration: pick the runner for a platform, resolve tasks, run them with records.

Backend-agnostic: it only talks to the Runner interface. The parts live in their own modules:
taskrun.py (one task's run and record), incremental.py (the up-to-date decision, --explain),
parallel.py (--jobs), sweeprun.py (--sweep); the names callers use are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cuberun.console import printable, say
from cuberun.errors import TaskFailed, UsageError
from cuberun.incremental import _run_chain_incremental
from cuberun.incremental import explain_tasks as explain_tasks  # re-exported
from cuberun.incremental import run_incremental as run_incremental  # re-exported
from cuberun.runners.base import Runner, Step, releasing
from cuberun.runners.factory import make_runner as make_runner  # re-exported: the public name callers use
from cuberun.spec.model import Cube
from cuberun.taskrun import TaskResult as TaskResult  # re-exported
from cuberun.taskrun import missing_outputs as missing_outputs  # re-exported
from cuberun.taskrun import run_chain as run_chain  # re-exported
from cuberun.taskrun import run_one as run_one  # re-exported
from cuberun.taskrun import task_failed as task_failed  # re-exported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@releasing  # runner.release() however the run ends: a decrypted image does not outlive it
def run_tasks(
    cube: Cube,
    runner: Runner,
    names: Sequence[str],
    overrides: dict[str, str],
    *,
    dry_run: bool = False,
    as_json: bool = False,
    force: bool = False,
    with_deps: bool = True,
    sweeps: Sequence[str] = (),
    jobs: int = 1,
    explain: bool = False,
) -> list[TaskResult]:
    """Run `names` (and, unless with_deps is false, the tasks producing their inputs) in graph
    order; each task is skipped when it is up to date (see uptodate.py) unless `force`."""
    from cuberun import graph
    from cuberun.records import new_run_id
    from cuberun.resolve import resolve_task

    for n in names:  # the outputs of the tasks asked for are safe (safety.py) before anything else is decided
        resolve_task(cube, n, _overrides_of(cube, n, overrides), check_inputs=False)
    order = graph.order(cube, names, with_deps=with_deps, overrides=overrides)
    if explain:
        if sweeps:
            from cuberun.errors import UsageError

            raise UsageError("--explain does not take --sweep", "explain the task without --sweep")
        return explain_tasks(cube, runner, order, overrides, force=force, as_json=as_json)
    target_variants = None
    per_variant: list[str] = []
    if sweeps:
        if len(names) != 1:
            from cuberun.errors import UsageError

            raise UsageError("--sweep applies to one task", "name it with --task=TASK")
        from cuberun.sweeprun import _sweep_variants

        per_variant, target_variants = _sweep_variants(cube, runner, order, names[0], overrides, sweeps)
        for variant in target_variants:  # every variant's outputs are checked before anything runs
            for task_name, task_overrides in variant.tasks.items():
                resolve_task(cube, task_name, task_overrides, check_inputs=False)
    invocation = new_run_id("run")
    seeds = seed_plan(cube, order, overrides)
    produced: set[str] = {str(dst) for _, dst in seeds}
    resolved = []
    for n in order:
        if n in per_variant:
            continue  # resolved per variant below, after their parameter files exist
        # a dry run prints the commands even when inputs are missing, and says which are
        rt = resolve_task(cube, n, _overrides_of(cube, n, overrides), allow_missing_inputs=runner.options.allow_missing_inputs or dry_run,
                          produced=frozenset(produced))
        produced.update(str(p.host_path) for p in rt.params if p.io == "output")
        resolved.append(rt)
        if dry_run:
            for warning in rt.warnings:
                say(f"warning: {warning}")
    if dry_run:
        _check_steps(runner, resolved)
        seed_workspace(seeds, dry_run=True)
        steps = _dry_configure_steps(runner)
        for rt in resolved:
            steps.extend(runner.run_steps(rt))
        from cuberun.sweeprun import _as_array, _variant_runner

        array = target_variants is not None and _as_array(runner, target_variants, per_variant)
        for variant in target_variants or []:
            for path in variant.files:
                steps.append(Step(("# write", path), "sweep-file"))
            if not array:
                vr = _variant_runner(cube, runner, variant)
                for task_name, task_overrides in variant.tasks.items():
                    vt = resolve_task(cube, task_name, task_overrides, allow_missing_inputs=True, check_inputs=False)
                    steps.extend(vr.run_steps(vt))
        if array:  # one submission for all variants (a Slurm job array)
            vts = [resolve_task(cube, names[0], v.overrides, allow_missing_inputs=True, check_inputs=False) for v in target_variants or []]
            steps.extend(runner.array_steps(vts))
        policies = {rt.name: p.to_json() for rt in resolved if (p := runner.policy(rt)) is not None}
        from cuberun.retry import limits

        task_limits = {n: lim for n in order if (lim := limits(runner.options, cube.tasks[n]))}
        limits_json = {n: j for n, lim in task_limits.items() if (j := lim.to_json())}
        if as_json:
            print(json.dumps({"platform": runner.platform, "runner": runner.name, "tasks": order, "steps": [s.to_json() for s in steps],
                              **({"policy": policies} if policies else {}), **({"limits": limits_json} if limits_json else {})}, indent=2))
        else:
            for step in steps:
                print("# " + printable(" ".join(step.argv[1:])) if step.purpose == "sweep-file" else step.display())
            from cuberun.policy import summary_of

            for task_name, pol in policies.items():
                print(f"# {task_name}: {printable(summary_of(pol))}")
            for task_name, lim in task_limits.items():
                if lim.describe():
                    print(f"# {task_name}: limits: {printable(lim.describe())}" + (" (the backend retries)" if lim.retries and runner.native_retries else "")
                          + (f" (the time limit is ignored by the {runner.name} runner)" if lim.timeout is not None and not runner.enforces_timeout else ""))
        return [TaskResult(n, 0, status="planned") for n in order]
    _check_steps(runner, resolved)  # before anything is prepared: bad input fails at once
    reason = runner.unavailable_reason()
    if reason:
        from cuberun.errors import RunnerUnavailable

        raise RunnerUnavailable(reason)
    from cuberun.safety import prepare_workspace

    prepare_workspace(cube.workspace)  # the first thing written: the workspace and its state folder
    seed_workspace(seeds, dry_run=False)
    runner.configure()  # the plans are made after it: a command may depend on the prepared image (its ENV, its entrypoint)
    if runner.supports_chain and len(resolved) > 1 and target_variants is None and not _retried(runner, resolved):
        return _run_chain_incremental(cube, runner, [runner.plan(rt) for rt in resolved], invocation, force)
    if jobs > 1 and len(resolved) > 1:
        from cuberun.parallel import _run_graph_parallel

        results = _run_graph_parallel(cube, runner, resolved, invocation, force=force, jobs=jobs)
    else:
        results = []
        for i, rt in enumerate(resolved):
            if i > 0:  # inputs of later tasks may be produced by earlier ones: check them now
                rt = resolve_task(cube, rt.name, rt.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
            result = run_incremental(cube, runner, rt, invocation, force=force)
            results.append(result)
            if result.exit_code != 0:
                raise task_failed(cube, result, results)
    if target_variants is not None:
        from cuberun.sweeprun import _run_variants

        try:
            results += _run_variants(cube, runner, per_variant, target_variants, invocation, force=force, jobs=jobs)
        except TaskFailed as exc:  # the shared tasks before the variants belong to this invocation's results too
            if results and hasattr(exc, "results"):
                exc.results = [*results, *exc.results]
            raise
    return results


def _dry_configure_steps(runner: Runner) -> list[Step]:
    from cuberun.errors import BackendError

    try:
        return runner.configure_steps()
    except BackendError as exc:  # e.g. local.python names no installed interpreter: still show the commands
        say(f"warning: {exc.lines()[0]}")
        return []


def _retried(runner: Runner, resolved: Sequence[Any]) -> bool:
    """Some task is retried by cuberun (not natively): it runs on its own, never in a chain or
    array submission (cuberun submits each attempt again)."""
    from cuberun.retry import limits

    return not runner.native_retries and any(limits(runner.options, rt.task).retries for rt in resolved)


def _overrides_of(cube: Cube, task: str, overrides: dict[str, str]) -> dict[str, str]:
    """The parameter overrides that apply to `task` (those naming one of its parameters)."""
    return {k: v for k, v in overrides.items() if cube.tasks[task].param(k)}


def seed_plan(cube: Cube, names: Sequence[str], overrides: dict[str, str]) -> list[tuple[Any, Any]]:
    """With --workspace elsewhere, the cube's bundled inputs to copy into it (as the reference
    does): an input whose default is relative, that exists in <root>/workspace, is missing from
    the new workspace, and is not an output of any task. (source, target) pairs, nothing copied."""
    import os

    default_ws = cube.root / "workspace"
    if os.path.realpath(cube.workspace) == os.path.realpath(default_ws):
        return []
    outputs = {os.path.normpath(p.default) for t in cube.tasks.values() for p in t.outputs}
    seeds: dict[str, tuple[Any, Any]] = {}
    for name in names:
        for p in cube.tasks[name].inputs:
            if p.name in overrides or os.path.isabs(p.default) or p.default.startswith(("~", "$")):
                continue
            rel = os.path.normpath(p.default)
            if rel in outputs or rel.startswith(".."):
                continue
            src, dst = default_ws / rel, cube.workspace / rel
            try:
                os.stat(src)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                from cuberun.safeio import os_problem

                raise UsageError(f"cannot copy the cube's bundled input {src} into the workspace: {os_problem(exc)}",
                                 f"make it readable, or override {p.name}=PATH") from None
            if os.path.lexists(dst) or str(dst) in seeds:
                continue
            seeds[str(dst)] = (src, dst)
    return list(seeds.values())


def seed_workspace(seeds: Sequence[tuple[Any, Any]], *, dry_run: bool) -> None:
    """Copy the bundled inputs of seed_plan (on a dry run, say what would be copied)."""
    if not seeds:
        return
    import shutil

    from cuberun.safeio import copy_file, make_dirs

    def copy(source: str, target: str) -> str:  # regular files only: a FIFO or a device is refused, never opened
        copy_file(source, target, what="bundled input")
        shutil.copystat(source, target)
        return target

    for src, dst in seeds:
        if dry_run:
            print(printable(f"# would copy {src} to {dst}"))
            continue
        make_dirs(dst.parent, what="the folder of a bundled input")
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=copy)
        else:
            copy(str(src), str(dst))
        say(f"copied {src} to {dst}")


def _check_steps(runner: Runner, resolved: Sequence[Any]) -> None:
    """What each task's run would start can be started: environment variable names and values,
    and arguments (a NUL byte, an '=' in a name), before anything runs."""
    for rt in resolved:
        for step in runner.run_steps(rt):
            problem = step_problem(step)
            if problem:
                raise UsageError(f"task '{rt.name}' cannot be started: {problem}", "fix it in the cube, the settings or the -P values")


def step_problem(step: Step) -> str | None:
    for arg in step.argv:
        if "\x00" in arg:
            return f"an argument of the command contains a NUL byte ({arg.replace(chr(0), '?')[:80]!r})"
    for key, value in step.env.items():
        if not key or "=" in key or "\x00" in key:
            return f"{key.replace(chr(0), '?')!r} is not a valid environment variable name (no '=' or NUL byte, not empty)"
        if "\x00" in value:
            return f"environment variable {key} contains a NUL byte"
    if step.cwd is not None and "\x00" in step.cwd:
        return "the working directory contains a NUL byte"
    return None
