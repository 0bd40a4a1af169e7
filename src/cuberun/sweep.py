"""Parameter sweeps: `--sweep key=v1,v2,...` runs one task once per value (the cartesian
product of several --sweep options), each variant with its own parameter file, outputs and
records under <workspace>/sweeps/<variant>/.

A key names a value in one of the task's YAML input files (`batch_size`, `optimizer.lr`, or
explicitly `train_config:batch_size`), or a config key given with -P (`-P` form: `P:docker.env_args.X`
or any key whose first part is a cube section such as `local.env_vars.SEED`).
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
from cuberun.valueclass import dataclass

SWEEPS_DIR = "sweeps"


@dataclass(frozen=True)
class Axis:
    key: str  # as written
    values: tuple[str, ...]
    param: str | None  # the YAML input file parameter, or None for a -P config key
    path: tuple[str, ...]  # key path inside the file, or the -P key path


@dataclass(frozen=True)
class Variant:
    label: str  # "batch_size=32,optimizer=sgd"
    values: dict[str, str]
    overrides: dict[str, str]  # parameter overrides (variant files and outputs)
    params: tuple[str, ...]  # extra -P assignments
    files: dict[str, dict[str, Any]]  # variant parameter file path -> content


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


def parse_axes(specs: Sequence[str], cube: Cube, task: Task, overrides: dict[str, str]) -> list[Axis]:
    sections = {"docker", "local", "singularity", "charliecloud", "ssh", "slurm", "k8s", "platform", "runner"}
    axes: list[Axis] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        values = tuple(v.strip() for v in raw.split(",")) if sep else ()
        if not key or not values or any(v == "" for v in values):
            raise UsageError(f"--sweep '{spec}' is not of the form key=v1,v2,...", "e.g. --sweep batch_size=32,64,128")
        if len(set(values)) != len(values):
            raise UsageError(f"--sweep '{spec}' repeats a value", "list each value once")
        if key.startswith("P:"):
            axes.append(Axis(key, values, None, tuple(key[2:].split("."))))
            continue
        param_name, colon, inner = key.partition(":")
        files: dict[str, dict[str, Any]] = {}
        for p in task.inputs:
            if colon and p.name != param_name:
                continue
            data = _yaml_file(expand_path(overrides.get(p.name, p.default), cube.workspace)[0])
            if data is not None:
                files[p.name] = data
        path = tuple((inner if colon else key).split("."))
        if colon and param_name not in {p.name for p in task.inputs}:
            raise UsageError(f"--sweep '{key}': task '{task.name}' has no input '{param_name}'", "name one of its YAML input files")
        matches = [name for name, data in files.items() if _has(data, path)]
        if len(matches) == 1:
            axes.append(Axis(key, values, matches[0], path))
        elif len(matches) > 1:
            raise UsageError(f"--sweep '{key}' is ambiguous: inputs {', '.join(matches)} all have it", f"write it as {matches[0]}:{key}")
        elif path[0] in sections:
            axes.append(Axis(key, values, None, path))
        else:
            where = ", ".join(files) or "none of its inputs are YAML files"
            raise UsageError(f"--sweep '{key}': no YAML input of task '{task.name}' has the key '{'.'.join(path)}' ({where})",
                             "name a key of a parameter file (file:key.path) or a config key such as local.env_vars.X")
    return axes


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
    import copy

    result: list[Variant] = []
    for combo in itertools.product(*(axis.values for axis in axes)):
        values = {axis.key: value for axis, value in zip(axes, combo, strict=True)}
        label = _label(values)
        root = Path(SWEEPS_DIR) / label
        var_overrides = dict(overrides)
        files: dict[str, dict[str, Any]] = {}
        params: list[str] = []
        for axis, value in zip(axes, combo, strict=True):
            if axis.param is None:
                params.append(f"{'.'.join(axis.path)}={value}")
                continue
            param = task.param(axis.param)
            assert param is not None
            source = expand_path(overrides.get(param.name, param.default), cube.workspace)[0]
            target = str(cube.workspace / root / source.name)
            if target not in files:
                files[target] = copy.deepcopy(_yaml_file(source) or {})
            _set(files[target], axis.path, _typed(value))
            var_overrides[param.name] = target
        for p in task.outputs:
            default = overrides.get(p.name, p.default)
            if os.path.isabs(os.path.expanduser(os.path.expandvars(default))):
                base = Path(os.path.expanduser(os.path.expandvars(default)))
                var_overrides[p.name] = str(base.parent / SWEEPS_DIR / label / base.name) + ("/" if default.endswith("/") else "")
            else:
                var_overrides[p.name] = str(root / default) + ("/" if default.endswith("/") else "")
        result.append(Variant(label, values, var_overrides, tuple(params), files))
    return result


def write_files(variant: Variant) -> None:
    from cuberun import yamlio

    for path, data in variant.files.items():
        yamlio.write_atomic(Path(path), yamlio.dump(data))
