"""The task graph: a task depends on the tasks that produce its inputs (by path), plus any
`cuberun: {depends_on: ...}` declared in the cube. Pure; knows no backend."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

from cuberun.errors import UsageError
from cuberun.resolve import is_resumable_checkpoint
from cuberun.spec.model import Cube


def _norm(cube: Cube, value: str) -> str:
    """resolve.expand_path as a string (the graph normalises many paths: no Path objects)."""
    if "$" in value:
        value = os.path.expandvars(value)
    if value[:1] == "~":
        value = os.path.expanduser(value)
    if value[:1] != os.sep:
        value = f"{cube.workspace}{os.sep}{value}"
    return os.path.normpath(value)


def _covers(output: str, path: str) -> bool:
    return path == output or path.startswith(output.rstrip(os.sep) + os.sep)


def _ancestors(path: str, shortest: int = 0) -> Iterator[str]:
    """The (normalised, absolute) path itself, then each folder that contains it, up to the
    root; none shorter than `shortest` characters (no output path is shorter)."""
    yield path
    end = path.rfind(os.sep)
    while end > 0 and end >= shortest:
        path = path[:end]
        yield path
        end = path.rfind(os.sep)
    if end == 0 and len(path) > 1 and shortest <= 1:
        yield os.sep


def _outputs(cube: Cube, overrides: Mapping[str, str]) -> dict[str, list[str]]:
    return {t.name: [_norm(cube, overrides.get(p.name, p.default)) for p in t.outputs] for t in cube.tasks.values()}


def dependencies(cube: Cube, overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """task -> tasks it depends on, in YAML order. Linear in tasks and parameters: each input
    looks up the outputs at its own path and at each folder above it."""
    overrides = overrides or {}
    outputs = _outputs(cube, overrides)
    position = {name: i for i, name in enumerate(cube.tasks)}
    producers: dict[str, list[str]] = {}
    for name, paths in outputs.items():
        for path in dict.fromkeys(paths):
            producers.setdefault(path, []).append(name)
    shortest = min(map(len, producers), default=0)
    deps: dict[str, list[str]] = {}
    for t in cube.tasks.values():
        found: list[str] = []
        seen = {t.name}
        for p in t.inputs:
            path = _norm(cube, overrides.get(p.name, p.default))
            if is_resumable_checkpoint(path, outputs[t.name]):  # never its own (stale) producer
                continue
            here = {other for anc in _ancestors(path, shortest) for other in producers.get(anc, ()) if other not in seen}
            for other in sorted(here, key=position.__getitem__):
                found.append(other)
                seen.add(other)
        for extra in cube.depends_on.get(t.name, []):
            if extra not in seen:
                found.append(extra)
                seen.add(extra)
        deps[t.name] = found
    return deps


def write_after(cube: Cube, names: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """task -> earlier tasks of `names` (in that order) it must wait for because they write the
    same path as it does, or a path inside or around one of its outputs (hello_world's hello and
    bye both append to one chat file): for each such path, the nearest earlier writer (the
    writers of one path form a chain, so 10,000 tasks writing into one folder stay linear)."""
    import bisect

    outputs = _outputs(cube, overrides or {})
    rank = {name: i for i, name in enumerate(names)}
    writers: dict[str, list[int]] = {}  # path -> ranks of the tasks writing it, ascending
    for name in names:
        for path in dict.fromkeys(outputs[name]):
            writers.setdefault(path, []).append(rank[name])
    ordered = sorted(writers)
    shortest = min(map(len, writers), default=0)
    result: dict[str, list[str]] = {}
    for name in names:
        mine = rank[name]
        before: set[int] = set()
        for path in outputs[name]:
            near = [anc for anc in _ancestors(path, shortest) if anc in writers]
            prefix = path.rstrip(os.sep) + os.sep
            i = bisect.bisect_left(ordered, prefix)
            while i < len(ordered) and ordered[i].startswith(prefix):
                near.append(ordered[i])
                i += 1
            for other in near:
                ranks = writers[other]
                j = bisect.bisect_left(ranks, mine)
                if j > 0:
                    before.add(ranks[j - 1])
        result[name] = [names[i] for i in sorted(before)]
    return result


def order(cube: Cube, names: Sequence[str], *, with_deps: bool = True, overrides: Mapping[str, str] | None = None,
          deps: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The tasks to run for `names`: prerequisites first (unless with_deps is false), each once,
    in a topological order that keeps the cube's YAML order where it is free. A cycle is an error.
    Linear in tasks and dependencies (no recursion: a chain of 10,000 tasks is fine)."""
    from collections import deque

    if deps is None:
        deps = dependencies(cube, overrides)
    wanted: dict[str, None] = {}
    queue = deque(names)
    while queue:
        name = queue.popleft()
        if name in wanted:
            continue
        wanted[name] = None
        if with_deps:
            queue.extend(deps[name])
    selected = set(wanted)
    position = {name: i for i, name in enumerate(cube.tasks)}
    result: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def prerequisites(name: str) -> Iterator[str]:
        return iter(sorted((d for d in deps[name] if d in selected), key=position.__getitem__))

    def visit(root: str) -> None:
        if state.get(root) == 2:
            return
        state[root] = 1
        stack = [(root, prerequisites(root))]
        while stack:
            name, pending = stack[-1]
            for dep in pending:
                if state.get(dep) == 2:
                    continue
                if state.get(dep) == 1:
                    path = [n for n, _ in stack]
                    cycle = [*path[path.index(dep) :], dep]
                    raise UsageError(f"the tasks form a cycle: {' -> '.join(cycle)}",
                                     "a task's inputs must not come from its own later outputs; check the paths or cuberun.depends_on")
                state[dep] = 1
                stack.append((dep, prerequisites(dep)))
                break
            else:
                stack.pop()
                state[name] = 2
                result.append(name)

    roots = [n for n in cube.tasks if n in selected] if not with_deps else sorted(selected, key=position.__getitem__)
    for name in roots:
        visit(name)
    if not with_deps:  # keep the user's order when they asked for exactly these tasks
        done = set(result)
        return list(dict.fromkeys(n for n in names if n in done))
    return result


def render(cube: Cube, fmt: str = "text") -> str:
    deps = dependencies(cube)
    names = order(cube, list(cube.tasks), deps=deps)
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
