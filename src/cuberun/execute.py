"""Orchestration: pick the runner for a platform, resolve tasks, run them with records.

Backend-agnostic: it only talks to the Runner interface.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cuberun.errors import CuberunError, Issue, SpecError, TaskFailed
from cuberun.runners.base import Runner, RunOptions, Step
from cuberun.spec.model import Cube


@dataclass
class TaskResult:
    task: str
    exit_code: int
    run_id: str | None = None
    status: str = "succeeded"
    steps: list[Step] = field(default_factory=list)


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
    return runner_cls(cube, config, name, options)


def task_order(cube: Cube, names: Sequence[str]) -> list[str]:
    """The requested tasks in the order given (the task graph adds prerequisites later)."""
    return list(names)


def run_tasks(
    cube: Cube,
    runner: Runner,
    names: Sequence[str],
    overrides: dict[str, str],
    *,
    dry_run: bool = False,
    as_json: bool = False,
) -> list[TaskResult]:
    from cuberun.resolve import resolve_task

    results: list[TaskResult] = []
    resolved = []
    produced: set[str] = set(seed_workspace(cube, names, overrides, dry_run=dry_run))
    for n in names:
        mine = {k: v for k, v in overrides.items() if cube.tasks[n].param(k)}
        rt = resolve_task(cube, n, mine, allow_missing_inputs=runner.options.allow_missing_inputs, produced=frozenset(produced))
        produced.update(str(p.host_path) for p in rt.params if p.io == "output")
        resolved.append(rt)
    if dry_run:
        steps = runner.configure_steps()
        for rt in resolved:
            steps.extend(runner.run_steps(rt))
        if as_json:
            print(json.dumps({"platform": runner.platform, "runner": runner.name, "steps": [s.to_json() for s in steps]}, indent=2))
        else:
            for step in steps:
                print(step.display())
        return [TaskResult(rt.name, 0, status="planned") for rt in resolved]
    reason = runner.unavailable_reason()
    if reason:
        from cuberun.errors import RunnerUnavailable

        raise RunnerUnavailable(reason)
    runner.configure()
    for i, rt in enumerate(resolved):
        if i > 0:  # inputs of later tasks may be produced by earlier ones: check them now
            rt = resolve_task(cube, rt.name, rt.overrides, allow_missing_inputs=runner.options.allow_missing_inputs)
        result = run_one(cube, runner, rt)
        results.append(result)
        if result.exit_code != 0:
            raise TaskFailed(
                f"task '{rt.name}' {'was interrupted' if result.status == 'interrupted' else f'failed with exit code {result.exit_code}'}"
                f" (run {result.run_id}; log {cube.workspace}/.cuberun/runs/{result.run_id}/output.log)",
                result.exit_code,
            )
    return results


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
            print(f"cuberun: copied {src} to {dst}", file=sys.stderr)
    return seeded


def run_one(cube: Cube, runner: Runner, rt: Any) -> TaskResult:
    from cuberun import records
    from cuberun.records import redact_env

    for warning in rt.warnings:
        print(f"cuberun: warning: {warning}", file=sys.stderr)
    steps = runner.run_steps(rt)
    rt.prepare_outputs()
    record = records.start_record(
        cube.workspace,
        {
            "cube": {"name": cube.name, "version": cube.version, "path": str(cube.file)},
            "task": rt.name,
            "platform": runner.platform,
            "runner": runner.name,
            "workspace": str(cube.workspace),
            "parameters": {p.name: {"io": p.io, "type": p.type, "path": str(p.host_path)} for p in rt.params},
            "overrides": dict(rt.overrides),
            "steps": [dict(s.to_json(), env=redact_env(s.env)) for s in steps],
            "command": list(steps[-1].argv) if steps else [],
        },
    )
    print(f"cuberun: running task '{rt.name}' on {runner.platform} (run {record.run_id})", file=sys.stderr, flush=True)
    try:
        outcome = runner.run(rt, str(record.log_path))
    except CuberunError as exc:
        record.finish("error", exc.exit_code, error=exc.lines()[0])
        raise
    except BaseException as exc:
        record.finish("error", None, error=f"{type(exc).__name__}: {exc}")
        raise
    status = "succeeded" if outcome.exit_code == 0 else ("interrupted" if outcome.interrupted else "failed")
    record.finish(status, outcome.exit_code, elapsed_s=round(outcome.elapsed, 4), signal=outcome.signal)
    return TaskResult(rt.name, outcome.exit_code, record.run_id, status, steps)
