"""Orchestration: pick the runner for a platform, resolve tasks, run them with records.

Backend-agnostic: it only talks to the Runner interface.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.errors import CuberunError, Issue, SpecError, TaskFailed
from cuberun.runners.base import Runner, RunOptions, Step
from cuberun.spec.model import Cube

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


def split_runner_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`-Prunner.key=value` -> {key: value} (typed like the cube's -P values)."""
    from cuberun.spec.load import parse_assignment, typed_value

    result: dict[str, Any] = {}
    for item in overrides:
        if item.startswith("runner."):
            key, raw = parse_assignment(item, "-P")
            result[key[len("runner.") :]] = typed_value(raw, None)
    return result


def make_runner(cube: Cube, platform: str | None, options: RunOptions, overrides: Sequence[str] = ()) -> Runner:
    from cuberun import settings as settings_mod
    from cuberun.runners import registry
    from cuberun.spec.interpolate import InterpolationError, Interpolator

    settings = settings_mod.load_settings()
    name = platform or settings.default_platform
    entry = settings_mod.platform_entry(settings, name)
    runner_cls = registry.get(entry["runner"])
    section = cube.section(runner_cls.section) if runner_cls.section else {}
    origin = settings.origin.get(name, "built-in")
    config = settings_mod.effective_config(runner_cls.schema, entry, section, split_runner_overrides(overrides), origin)
    try:
        config = Interpolator(cube.config).resolve(config)
    except InterpolationError as exc:
        raise SpecError([Issue(exc.message, origin if origin != "built-in" else str(cube.file), key=f"platforms.{name}", hint=exc.hint)]) from None
    if not options.config_overrides:
        options = dataclasses.replace(options, config_overrides=tuple(o for o in overrides if not o.startswith("runner.")))
    return runner_cls(cube, config, name, options)


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
    explicit: bool = True,
    sweeps: Sequence[str] = (),
    jobs: int = 1,
) -> list[TaskResult]:
    """Run `names` (and, unless with_deps is false, the tasks producing their inputs) in graph
    order; each task is skipped when it is up to date (see uptodate.py) unless `force`."""
    from cuberun import graph
    from cuberun.records import new_run_id
    from cuberun.resolve import resolve_task

    order = graph.order(cube, names, with_deps=with_deps, overrides=overrides)
    target_variants = None
    if sweeps:
        if len(names) != 1:
            from cuberun.errors import UsageError

            raise UsageError("--sweep applies to one task", "name it with --task=TASK")
        target_variants = _sweep_variants(cube, names[0], overrides, sweeps)
    invocation = new_run_id("run")
    produced: set[str] = set(seed_workspace(cube, order, overrides, dry_run=dry_run))
    resolved = []
    for n in order:
        mine = {k: v for k, v in overrides.items() if cube.tasks[n].param(k)}
        if target_variants is not None and n == names[0]:
            break  # the variants are resolved below, after their parameter files exist
        rt = resolve_task(cube, n, mine, allow_missing_inputs=runner.options.allow_missing_inputs, produced=frozenset(produced))
        produced.update(str(p.host_path) for p in rt.params if p.io == "output")
        resolved.append(rt)
    if dry_run:
        steps = runner.configure_steps()
        for rt in resolved:
            steps.extend(runner.run_steps(rt))
        for variant in target_variants or []:
            for path in variant.files:
                steps.append(Step(("# write", path), "sweep-file"))
            vr = _variant_runner(cube, runner, variant)
            vt = resolve_task(cube, names[0], variant.overrides, allow_missing_inputs=True, check_inputs=False)
            steps.extend(vr.run_steps(vt))
        if as_json:
            print(json.dumps({"platform": runner.platform, "runner": runner.name, "tasks": order, "steps": [s.to_json() for s in steps]}, indent=2))
        else:
            for step in steps:
                print("# " + " ".join(step.argv[1:]) if step.purpose == "sweep-file" else step.display())
        return [TaskResult(n, 0, status="planned") for n in order]
    reason = runner.unavailable_reason()
    if reason:
        from cuberun.errors import RunnerUnavailable

        raise RunnerUnavailable(reason)
    runner.configure()
    if runner.supports_chain and len(resolved) > 1 and target_variants is None:
        return _run_chain_incremental(cube, runner, resolved, invocation, force)
    results: list[TaskResult] = []
    for i, rt in enumerate(resolved):
        if i > 0:  # inputs of later tasks may be produced by earlier ones: check them now
            rt = resolve_task(cube, rt.name, rt.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
        result = run_incremental(cube, runner, rt, invocation, force=force)
        results.append(result)
        if result.exit_code != 0:
            raise task_failed(cube, result)
    if target_variants is not None:
        results += _run_variants(cube, runner, names[0], target_variants, invocation, force=force, jobs=jobs)
    return results


def run_incremental(
    cube: Cube, runner: Runner, rt: Any, invocation: str, *, force: bool = False, key: str | None = None, sweep: dict[str, str] | None = None,
    runner_fp: dict[str, Any] | None = None, quiet_skip: bool = False,
) -> TaskResult:
    """Run one task unless it is up to date; hold its output locks while it runs."""
    from cuberun import uptodate
    from cuberun.locks import output_locks

    key = key or uptodate.state_key(rt.name)
    fp = dict(runner_fp if runner_fp is not None else runner.fingerprint(rt))
    command = fp.pop("command", [])
    identity = uptodate.identity_of(rt, command, fp)
    outputs = [str(p.host_path) for p in rt.params if p.io == "output"]
    with output_locks(cube.workspace, outputs, {"task": rt.name, "invocation": invocation}):
        decision = uptodate.check(rt, identity, key, force=force)
        label = rt.name + (f" [{', '.join(f'{k}={v}' for k, v in sweep.items())}]" if sweep else "")
        if not decision.run:
            say(f"skipping task '{label}': {decision.explain()}")
            return TaskResult(rt.name, 0, status="skipped", reason=decision.explain())
        say(f"task '{label}' will run: {decision.explain()}")
        extra = {
            "invocation_id": invocation,
            "runner_fingerprint": fp,
            "inputs": {n: f.to_json() for n, f in decision.inputs.items()},
            **({"sweep": dict(sweep)} if sweep else {}),
        }
        result, record = run_one(cube, runner, rt, extra)
        if result.exit_code == 0 and record is not None:
            record.data["outputs"] = uptodate.save(rt, key, decision, result.run_id)
            record.save()
        return result


def _sweep_variants(cube: Cube, task: str, overrides: dict[str, str], sweeps: Sequence[str]) -> list[Any]:
    from cuberun import sweep

    mine = {k: v for k, v in overrides.items() if cube.tasks[task].param(k)}
    axes = sweep.parse_axes(sweeps, cube, cube.tasks[task], mine)
    return sweep.variants(axes, cube, cube.tasks[task], mine)


def _variant_runner(cube: Cube, runner: Runner, variant: Any) -> Runner:
    """The same runner with the variant's -P config values applied (or the runner itself)."""
    if not variant.params:
        return runner
    from cuberun.spec.load import build_cube

    base = [*runner.options.config_overrides, *variant.params]
    vcube = build_cube(cube.doc, cube.file, workspace=cube.workspace, overrides=base)
    return make_runner(vcube, runner.platform, dataclasses.replace(runner.options, config_overrides=tuple(base)), base)


def _run_variants(cube: Cube, runner: Runner, task: str, variants: Sequence[Any], invocation: str, *, force: bool, jobs: int) -> list[TaskResult]:
    from cuberun import sweep, uptodate
    from cuberun.process import CANCEL, handle_signals
    from cuberun.resolve import resolve_task

    def one(variant: Any) -> TaskResult:
        if CANCEL.requested:
            return TaskResult(task, 128 + (CANCEL.received or 2), status="interrupted", reason="not started: interrupted")
        sweep.write_files(variant)
        vr = _variant_runner(cube, runner, variant)
        rt = resolve_task(cube, task, variant.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
        return run_incremental(cube, vr, rt, invocation, force=force, key=uptodate.state_key(task, variant.label), sweep=variant.values)

    say(f"sweep of task '{task}': {len(variants)} variants, {min(jobs, len(variants))} at a time")
    results: list[TaskResult] = []
    if jobs <= 1 or len(variants) == 1:
        for variant in variants:
            results.append(one(variant))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with handle_signals(), ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(one, variants))
    failed = [r for r in results if r.exit_code != 0]
    summary = ", ".join(f"{v.label}: {r.status}" for v, r in zip(variants, results, strict=True))
    say(f"sweep finished: {summary}")
    if failed:
        raise task_failed(cube, failed[0])
    return results


def _run_chain_incremental(cube: Cube, runner: Runner, resolved: Sequence[Any], invocation: str, force: bool) -> list[TaskResult]:
    """Runners that submit a chain at once (Slurm afterok): decide up front; a task re-runs when
    it is out of date or any task it depends on re-runs."""
    from cuberun import graph, uptodate

    deps = graph.dependencies(cube)
    rerun: set[str] = set()
    todo = []
    results: list[TaskResult] = []
    for rt in resolved:
        fp = dict(runner.fingerprint(rt))
        command = fp.pop("command", [])
        decision = uptodate.check(rt, uptodate.identity_of(rt, command, fp), uptodate.state_key(rt.name), force=force)
        upstream = [d for d in deps[rt.name] if d in rerun]
        if decision.run or upstream:
            why = decision.explain() if decision.run else f"task {upstream[0]} runs first"
            say(f"task '{rt.name}' will run: {why}")
            rerun.add(rt.name)
            todo.append((rt, decision, fp))
        else:
            say(f"skipping task '{rt.name}': {decision.explain()}")
            results.append(TaskResult(rt.name, 0, status="skipped", reason=decision.explain()))
    if not todo:
        return results
    chain = run_chain(cube, runner, [t[0] for t in todo], {"invocation_id": invocation})
    for (rt, decision, fp), result in zip(todo, chain, strict=False):
        if result.exit_code != 0:
            raise task_failed(cube, result)
        outputs = uptodate.save(rt, uptodate.state_key(rt.name), decision, result.run_id)
        _amend_record(cube, result.run_id, outputs=outputs, runner_fingerprint=fp, inputs={n: f.to_json() for n, f in decision.inputs.items()})
    if len(chain) < len(todo):
        raise CuberunError(f"runner '{runner.name}' reported no outcome for task '{todo[len(chain)][0].name}'")
    return results + chain


def _amend_record(cube: Cube, run_id: str | None, **fields: Any) -> None:
    from cuberun.records import RUNS_DIR, RunRecord

    if not run_id:
        return
    path = cube.workspace / RUNS_DIR / run_id / "record.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data.update(fields)
    RunRecord(path, data).save()


def task_failed(cube: Cube, result: TaskResult) -> TaskFailed:
    if result.reason:  # the runner's words name its own log (e.g. a Slurm job log)
        return TaskFailed(f"task '{result.task}' {result.reason} (run {result.run_id})", result.exit_code)
    return TaskFailed(
        f"task '{result.task}' {'was interrupted' if result.status == 'interrupted' else f'failed with exit code {result.exit_code}'}"
        f" (run {result.run_id}; log {cube.workspace}/.cuberun/runs/{result.run_id}/output.log)",
        result.exit_code,
    )


def seed_workspace(cube: Cube, names: Sequence[str], overrides: dict[str, str], *, dry_run: bool) -> list[str]:
    """With --workspace elsewhere, copy the cube's bundled inputs into it (as the reference does):
    an input whose default is relative, that exists in <root>/workspace, is missing from the new
    workspace, and is not an output of any task. Returns the target paths (copied or, on a dry
    run, to be copied)."""
    import os
    import shutil

    default_ws = cube.root / "workspace"
    if os.path.realpath(cube.workspace) == os.path.realpath(default_ws):
        return []
    outputs = {os.path.normpath(p.default) for t in cube.tasks.values() for p in t.outputs}
    seeded: list[str] = []
    for name in names:
        for p in cube.tasks[name].inputs:
            if p.name in overrides or os.path.isabs(p.default) or p.default.startswith(("~", "$")):
                continue
            rel = os.path.normpath(p.default)
            if rel in outputs or rel.startswith(".."):
                continue
            src, dst = default_ws / rel, cube.workspace / rel
            if not src.exists() or dst.exists() or str(dst) in seeded:
                continue
            seeded.append(str(dst))
            if dry_run:
                print(f"# would copy {src} to {dst}")
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
            say(f"copied {src} to {dst}")
    return seeded


def run_one(cube: Cube, runner: Runner, rt: Any, extra: dict[str, Any] | None = None) -> tuple[TaskResult, RunRecord]:
    record, steps = _start_run(cube, runner, rt, extra=extra)
    try:
        outcome = runner.run(rt, str(record.log_path))
    except CuberunError as exc:
        record.finish("error", exc.exit_code, error=exc.lines()[0])
        raise
    except BaseException as exc:
        record.finish("error", None, error=f"{type(exc).__name__}: {exc}")
        raise
    return _finish_run(rt, record, steps, outcome), record


def run_chain(cube: Cube, runner: Runner, resolved: Sequence[Any], extra: dict[str, Any] | None = None) -> list[TaskResult]:
    """Tasks submitted together (runner.run_chain, e.g. Slurm afterok): one record per task. Tasks
    the runner reports no outcome for (after a failure or Ctrl-C) are recorded as 'cancelled'."""
    started = [_start_run(cube, runner, rt, verb="queueing", extra=extra) for rt in resolved]
    try:
        outcomes = runner.run_chain(resolved, [str(record.log_path) for record, _ in started])
    except BaseException as exc:
        error = exc.lines()[0] if isinstance(exc, CuberunError) else f"{type(exc).__name__}: {exc}"
        for record, _ in started:
            record.finish("error", exc.exit_code if isinstance(exc, CuberunError) else None, error=error)
        raise
    results = [_finish_run(rt, record, steps, outcome) for rt, (record, steps), outcome in zip(resolved, started, outcomes, strict=False)]
    for record, _ in started[len(results) :]:
        last = results[-1] if results else None
        record.finish("cancelled", None, error=f"not run: task '{last.task}' {last.status}" if last else "not run")
    return results


def _start_run(cube: Cube, runner: Runner, rt: Any, verb: str = "running", extra: dict[str, Any] | None = None) -> tuple[RunRecord, list[Step]]:
    from cuberun import records
    from cuberun.records import redact_env

    for warning in rt.warnings:
        say(f"warning: {warning}")
    steps = runner.run_steps(rt)
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
            **(extra or {}),
        },
    )
    variant = (extra or {}).get("sweep")
    label = rt.name + (f" [{', '.join(f'{k}={v}' for k, v in variant.items())}]" if variant else "")
    say(f"{verb} task '{label}' on {runner.platform} (run {record.run_id})")
    return record, steps


def _finish_run(rt: Any, record: RunRecord, steps: list[Step], outcome: Outcome) -> TaskResult:
    status = "succeeded" if outcome.exit_code == 0 else ("interrupted" if outcome.interrupted else "failed")
    extra: dict[str, Any] = {}
    if outcome.reason:
        extra["reason"] = outcome.reason
    if outcome.details:
        extra["details"] = dict(outcome.details)
    record.finish(status, outcome.exit_code, elapsed_s=round(outcome.elapsed, 4), signal=outcome.signal, **extra)
    return TaskResult(rt.name, outcome.exit_code, record.run_id, status, steps, outcome.reason)
