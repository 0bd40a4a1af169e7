"""Parameter sweeps: `--sweep key=v1,v2,...` runs a task once per value (the cartesian
product of several --sweep options), each variant with its own parameter files, outputs and
records under <workspace>/sweeps/<variant>/.

A key names a value in a YAML input file (`batch_size`, `optimizer.lr`, or explicitly
`train_config:batch_size`), or a config key given with -P (`-P` form: `P:docker.env_args.X` or
any key whose first part is a cube section such as `local.env_vars.SEED`).

Sweeps over pipelines: every task of the run (the target and the tasks producing its inputs)
that reads a swept key — one of its YAML inputs has it; a config key is read by every task —
runs once per variant, and so does every task downstream of such a task, reading that
variant's outputs. Tasks that read no swept key, directly or through their inputs, run once.
A key that no task of the run reads is an error.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cuberun.errors import UsageError
from cuberun.resolve import expand_path
from cuberun.spec.model import Cube, Task
from cuberun.valueclass import dataclass, field

SWEEPS_DIR = "sweeps"


@dataclass(frozen=True)
class Axis:
    key: str  # as written
    values: tuple[str, ...]
    param: str | None  # the YAML input file parameter (of the first task reading it), or None for a -P config key
    path: tuple[str, ...]  # key path inside the file, or the -P key path
    readers: tuple[tuple[str, str | None], ...] = ()  # (task, its YAML input parameter, or None: a config key) for each task reading it


@dataclass(frozen=True)
class Variant:
    label: str  # "batch_size=32,optimizer=sgd"
    values: dict[str, str]
    overrides: dict[str, str]  # parameter overrides of the target task (variant files and outputs)
    params: tuple[str, ...]  # extra -P assignments
    files: dict[str, dict[str, Any]]  # variant parameter file path -> content
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)  # each per-variant task (in run order) -> its overrides


def _yaml_file(path: Path) -> dict[str, Any] | None:
    """A YAML parameter file's content (read as cube files are: regular files, bounded)."""
    from cuberun import yamlio

    if path.suffix not in (".yaml", ".yml") or not path.exists():
        return None
    data = yamlio.load(path, "parameter file").data
    return data if isinstance(data, dict) else None


def _has(data: dict[str, Any], keys: Sequence[str]) -> bool:
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return True


BASE_SECTIONS = ("platform", "runner")


def parse_axes(specs: Sequence[str], cube: Cube, task: Task | Sequence[Task], overrides: dict[str, str],
               sections: Sequence[str] | None = None) -> list[Axis]:
    """The axes of `--sweep` options, each with the tasks (of `task`, or of the run's tasks in
    run order) that read it. `sections`: the cube sections the platform's runner reads (None:
    not known, every runner section is accepted)."""
    from cuberun.runners.registry import cube_sections

    tasks = [task] if isinstance(task, Task) else list(task)
    known_sections = {*cube_sections(), *BASE_SECTIONS}
    axes: list[Axis] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        values = tuple(v.strip() for v in raw.split(",")) if sep else ()
        if not key or not values or any(v == "" for v in values):
            raise UsageError(f"--sweep '{spec}' is not of the form key=v1,v2,...", "e.g. --sweep batch_size=32,64,128")
        if len(set(values)) != len(values):
            raise UsageError(f"--sweep '{spec}' repeats a value", "list each value once")
        every = tuple((t.name, None) for t in tasks)
        if key.startswith("P:"):
            path = tuple(key[2:].split("."))
            _check_section(key, path, known_sections, sections)
            axes.append(Axis(key, values, None, path, every))
            continue
        param_name, colon, inner = key.partition(":")
        path = tuple((inner if colon else key).split("."))
        if colon and not any(p.name == param_name for t in tasks for p in t.inputs):
            who = f"task '{tasks[0].name}' has" if len(tasks) == 1 else f"no task of this run ({_names(tasks)}) has"
            raise UsageError(f"--sweep '{key}': {who} no input '{param_name}'" if len(tasks) == 1 else f"--sweep '{key}': {who} an input '{param_name}'",
                             "name one of its YAML input files")
        readers: list[tuple[str, str | None]] = []
        looked: list[str] = []
        for t in tasks:
            files: dict[str, dict[str, Any]] = {}
            for p in t.inputs:
                if colon and p.name != param_name:
                    continue
                data = _yaml_file(expand_path(overrides.get(p.name, p.default), cube.workspace)[0])
                if data is not None:
                    files[p.name] = data
            looked.extend(files if len(tasks) == 1 else (f"{t.name}:{name}" for name in files))
            matches = [name for name, data in files.items() if _has(data, path)]
            if len(matches) > 1:
                raise UsageError(f"--sweep '{key}' is ambiguous: inputs {', '.join(matches)} of task '{t.name}' all have it",
                                 f"write it as {matches[0]}:{key}")
            if matches:
                readers.append((t.name, matches[0]))
        if readers:
            axes.append(Axis(key, values, readers[0][1], path, tuple(readers)))
        elif path[0] in known_sections:
            _check_section(key, path, known_sections, sections)
            axes.append(Axis(key, values, None, path, every))
        else:
            where = ", ".join(dict.fromkeys(looked)) or "none of their inputs are YAML files" if len(tasks) > 1 else (
                ", ".join(looked) or "none of its inputs are YAML files")
            subject = f"task '{tasks[0].name}'" if len(tasks) == 1 else f"the tasks of this run ({_names(tasks)})"
            raise UsageError(f"--sweep '{key}': no task reads it: no YAML input of {subject} has the key '{'.'.join(path)}' ({where})",
                             "name a key of a parameter file (file:key.path) or a config key such as local.env_vars.X")
    return axes


def _names(tasks: Sequence[Task]) -> str:
    return ", ".join(t.name for t in tasks)


def _check_section(key: str, path: tuple[str, ...], known: set[str], sections: Sequence[str] | None) -> None:
    """A config key of a runner section the platform's runner does not read changes nothing."""
    head = path[0]
    if sections is None or head not in known or head in BASE_SECTIONS or head in sections:
        return
    reads = ", ".join(f"'{s}'" for s in sections) or "no cube section"
    raise UsageError(f"--sweep '{key}': no task reads it: the platform's runner reads {reads}, not the '{head}' section",
                     f"sweep a key of {' or '.join(f'{s}.*' for s in sections) or 'a parameter file'}, or choose the platform that reads {head}.*")


def _typed(raw: str) -> Any:
    import yaml

    from cuberun import yamlio

    try:
        return yamlio.load_value(raw, "--sweep")
    except yaml.YAMLError:
        return raw


def _label(values: dict[str, str]) -> str:
    text = ",".join(f"{k.split(':')[-1]}={v}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text)[:150]


def _set(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for k in path[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[path[-1]] = value


def variants(axes: Sequence[Axis], cube: Cube, task: Task, overrides: dict[str, str]) -> list[Variant]:
    """The variants of one task (every axis applies to it)."""
    single = [Axis(a.key, a.values, a.param, a.path, ((task.name, a.param),)) for a in axes]
    return plan(single, cube, [task.name], [task.name], task.name, overrides)


def per_variant_tasks(axes: Sequence[Axis], cube: Cube, order: Sequence[str], overrides: dict[str, str]) -> list[str]:
    """The tasks of `order` that run once per variant: those reading a swept key and, after
    them, every task that depends on one of those (in `order`)."""
    from cuberun import graph

    deps = graph.dependencies(cube, overrides)
    chosen = {name for a in axes for name, _ in a.readers}
    result: list[str] = []
    for name in order:
        if name in chosen or any(d in result for d in deps.get(name, [])):
            result.append(name)
    return result


def _variant_output(default: str, label: str) -> str:
    if os.path.isabs(os.path.expanduser(os.path.expandvars(default))):
        base = Path(os.path.expanduser(os.path.expandvars(default)))
        return str(base.parent / SWEEPS_DIR / label / base.name) + ("/" if default.endswith("/") else "")
    return str(Path(SWEEPS_DIR) / label / default) + ("/" if default.endswith("/") else "")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def plan(axes: Sequence[Axis], cube: Cube, order: Sequence[str], per_variant: Sequence[str], target: str,
         overrides: dict[str, str]) -> list[Variant]:
    """One Variant per combination of values: its parameter files, -P values and, for each task
    of `per_variant` (in `order`), the overrides that give it the variant's files, its own
    outputs under sweeps/<label>/, and the variant's outputs of the tasks before it as inputs."""
    import copy

    ws = cube.workspace
    result: list[Variant] = []
    tasks = [n for n in order if n in per_variant]
    for combo in itertools.product(*(axis.values for axis in axes)):
        values = {axis.key: value for axis, value in zip(axes, combo, strict=True)}
        label = _label(values)
        root = Path(SWEEPS_DIR) / label
        files: dict[str, dict[str, Any]] = {}
        claimed: dict[str, str] = {}  # variant file path -> its source
        params: list[str] = []
        for axis, value in zip(axes, combo, strict=True):
            if all(p is None for _, p in axis.readers):
                params.append(f"{'.'.join(axis.path)}={value}")
        produced: list[tuple[str, str]] = []  # (output path as resolved without the sweep, the variant's path)
        per_task: dict[str, dict[str, str]] = {}
        for name in tasks:
            t = cube.tasks[name]
            mine = {k: v for k, v in overrides.items() if t.param(k)}
            ov = dict(mine)
            for axis, value in zip(axes, combo, strict=True):
                param_name = dict(axis.readers).get(name)
                if param_name is None:
                    continue
                param = t.param(param_name)
                assert param is not None
                source = expand_path(mine.get(param.name, param.default), ws)[0]
                target_path = str(ws / root / source.name)
                if claimed.get(target_path, str(source)) != str(source):  # another file of the same name
                    target_path = str(ws / root / f"{param.name}-{source.name}")
                claimed[target_path] = str(source)
                if target_path not in files:
                    files[target_path] = copy.deepcopy(_yaml_file(source) or {})
                _set(files[target_path], axis.path, _typed(value))
                ov[param.name] = target_path
            for p in t.inputs:
                if p.name in ov and p.name not in mine:
                    continue  # a variant file
                path = str(expand_path(mine.get(p.name, p.default), ws)[0])
                best = max((pair for pair in produced if _inside(path, pair[0])), key=lambda pair: len(pair[0]), default=None)
                if best is not None:
                    ov[p.name] = best[1] + path[len(best[0]):]
            for p in t.outputs:
                default = mine.get(p.name, p.default)
                ov[p.name] = _variant_output(default, label)
                produced.append((str(expand_path(default, ws)[0]), str(expand_path(ov[p.name], ws)[0])))
            per_task[name] = ov
        result.append(Variant(label, values, per_task.get(target, {}), tuple(params), files, per_task))
    return result


def write_files(variant: Variant) -> None:
    from cuberun import yamlio

    for path, data in variant.files.items():
        yamlio.write_atomic(Path(path), yamlio.dump(data))
