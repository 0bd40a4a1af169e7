"""Orchestration: pick the runner for a platform, resolve tasks, run them with records.

Backend-agnostic: it only talks to the Runner interface.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cuberun import handshake
from cuberun.console import printable, say
from cuberun.errors import CuberunError, TaskFailed, UsageError
from cuberun.runners.base import Runner, Step, TaskPlan, releasing
from cuberun.runners.factory import make_runner as make_runner  # re-exported: the public name callers use
from cuberun.spec.model import Cube
from cuberun.valueclass import dataclass, field
from cuberun.valueclass import replace as replace_fields

if TYPE_CHECKING:
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

    @property
    def label(self) -> str:
        """`train`, or `train [lr=0.01]` for a sweep variant: what progress lines and the summary call it."""
        return _label(self.task, self.sweep)


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


def _run_graph_parallel(cube: Cube, runner: Runner, resolved: Sequence[Any], invocation: str, *, force: bool, jobs: int) -> list[TaskResult]:
    """Run the task graph with up to `jobs` independent tasks at once: a task starts when the
    tasks it depends on have finished; after a failure nothing new starts."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from cuberun import graph
    from cuberun.process import CANCEL, handle_signals
    from cuberun.resolve import resolve_task

    names = [rt.name for rt in resolved]
    chosen = set(names)
    after = graph.dependencies(cube)
    writes = graph.write_after(cube, names, {k: v for rt in resolved for k, v in rt.overrides.items()})
    deps = {n: list(dict.fromkeys([*(d for d in after[n] if d in chosen), *writes[n]])) for n in names}
    by_name = {rt.name: rt for rt in resolved}
    done: dict[str, TaskResult] = {}
    failed: TaskResult | None = None

    def one(name: str) -> TaskResult:
        rt = by_name[name]
        if deps[name]:  # its inputs exist now: resolve again (file or directory, missing inputs)
            rt = resolve_task(cube, name, rt.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
        return run_incremental(cube, runner, rt, invocation, force=force)

    with handle_signals(), ThreadPoolExecutor(jobs) as pool:
        running: dict[Future[TaskResult], str] = {}
        pending = list(names)
        while pending or running:
            if failed is None and not CANCEL.requested:
                for name in [n for n in pending if all(d in done for d in deps[n])][: jobs - len(running)]:
                    pending.remove(name)
                    running[pool.submit(one, name)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                result = future.result()
                done[name] = result
                if result.exit_code != 0 and failed is None:
                    failed = result
        received = CANCEL.received
    if failed is not None:
        raise task_failed(cube, failed, [done[n] for n in names if n in done])
    if len(done) < len(names):
        raise TaskFailed("interrupted before every task could run", 128 + (received or 2))
    return [done[n] for n in names]


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


def _label(task: str, sweep: dict[str, str] | None) -> str:
    return task + (f" [{', '.join(f'{k}={v}' for k, v in sweep.items())}]" if sweep else "")


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


def _retried(runner: Runner, resolved: Sequence[Any]) -> bool:
    """Some task is retried by cuberun (not natively): it runs on its own, never in a chain or
    array submission (cuberun submits each attempt again)."""
    from cuberun.retry import limits

    return not runner.native_retries and any(limits(runner.options, rt.task).retries for rt in resolved)


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
    return TaskResult(rt.name, exit_code, record.run_id, status, steps, reason, sweep)
