"""The task graph: a task depends on the tasks that produce its inputs (by path), plus any
`cuberun: {depends_on: ...}` declared in the cube. Pure; knows no backend."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cuberun.errors import UsageError
from cuberun.resolve import is_resumable_checkpoint
from cuberun.spec.model import Cube


def _norm(cube: Cube, value: str) -> str:
    from cuberun.resolve import expand_path

    return str(expand_path(value, cube.workspace)[0])


def _covers(output: str, path: str) -> bool:
    return path == output or path.startswith(output.rstrip(os.sep) + os.sep)


def dependencies(cube: Cube, overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """task -> tasks it depends on, in YAML order."""
    overrides = overrides or {}
    outputs: dict[str, list[str]] = {}
    for t in cube.tasks.values():
        outputs[t.name] = [_norm(cube, overrides.get(p.name, p.default)) for p in t.outputs]
    deps: dict[str, list[str]] = {}
    for t in cube.tasks.values():
        found: list[str] = []
        for p in t.inputs:
            path = _norm(cube, overrides.get(p.name, p.default))
            if is_resumable_checkpoint(path, outputs[t.name]):  # never its own (stale) producer
                continue
            for other in cube.tasks.values():
                if other.name == t.name or other.name in found:
                    continue
                if any(_covers(out, path) for out in outputs[other.name]):
                    found.append(other.name)
        for extra in cube.depends_on.get(t.name, []):
            if extra not in found and extra != t.name:
                found.append(extra)
        deps[t.name] = found
    return deps


def order(cube: Cube, names: Sequence[str], *, with_deps: bool = True, overrides: Mapping[str, str] | None = None) -> list[str]:
    """The tasks to run for `names`: prerequisites first (unless with_deps is false), each once,
    in a topological order that keeps the cube's YAML order where it is free. A cycle is an error."""
    deps = dependencies(cube, overrides)
    wanted: list[str] = []
    stack = list(names)
    while stack:
        name = stack.pop(0)
        if name in wanted:
            continue
        wanted.append(name)
        if with_deps:
            stack.extend(deps[name])
    selected = set(wanted)
    position = {name: i for i, name in enumerate(cube.tasks)}
    result: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise UsageError(f"the tasks form a cycle: {' -> '.join(cycle)}", "a task's inputs must not come from its own later outputs; check the paths or cuberun.depends_on")
        state[name] = 1
        for dep in sorted(deps[name], key=lambda d: position[d]):
            if dep in selected:
                visit(dep, [*path, name])
        state[name] = 2
        result.append(name)

    roots = [n for n in cube.tasks if n in selected] if not with_deps else sorted(selected, key=lambda n: position[n])
    for name in roots:
        visit(name, [])
    if not with_deps:  # keep the user's order when they asked for exactly these tasks
        explicit = [n for n in names if n in result]
        return list(dict.fromkeys(explicit))
    return result


def render(cube: Cube, fmt: str = "text") -> str:
    deps = dependencies(cube)
    names = order(cube, list(cube.tasks))
    if fmt == "dot":
        lines = [f'digraph "{cube.name}" {{', "  rankdir=LR;", "  node [shape=box];"]
        lines += [f'  "{n}";' for n in names]
        lines += [f'  "{d}" -> "{n}";' for n in names for d in deps[n]]
        return "\n".join([*lines, "}"]) + "\n"
    if fmt == "mermaid":
        ids = {n: f"t{i}" for i, n in enumerate(names)}
        lines = ["flowchart LR"]
        lines += [f'  {ids[n]}["{n}"]' for n in names]
        lines += [f"  {ids[d]} --> {ids[n]}" for n in names for d in deps[n]]
        return "\n".join(lines) + "\n"
    width = max((len(n) for n in names), default=0)
    out = []
    for n in names:
        after = ", ".join(deps[n]) if deps[n] else "-"
        out.append(f"{n:<{width}}  <- {after}")
    return "\n".join(out) + "\n"
