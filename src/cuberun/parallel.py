"""`--jobs N`: the task graph run with up to N independent tasks at once.

Moved out of execute.py (issue 13 layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cuberun.errors import TaskFailed
from cuberun.incremental import run_incremental
from cuberun.runners.base import Runner
from cuberun.spec.model import Cube
from cuberun.taskrun import TaskResult, task_failed


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
