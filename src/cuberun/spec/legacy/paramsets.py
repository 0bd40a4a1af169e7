"""Parameter sets (`tasks/<task>/<set>.yaml`, `run/<set>/<task>.yaml`) and the seed's
`BOX[:TASK[/PARAMSET]]` syntax."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cuberun.errors import Issue, SpecError, UsageError
from cuberun.hints import did_you_mean
from cuberun.spec.legacy.bindings import _bindings, _invoke_bindings, _pre2_bindings
from cuberun.spec.legacy.formats import (
    CUBE_FILE,
    DEFAULT_SET,
    FORMAT_MLBOX,
    FORMAT_POC,
    FORMAT_PRE2,
    PRE2_FILE,
)
from cuberun.valueclass import dataclass
from cuberun.yamlio import Document

if TYPE_CHECKING:
    from cuberun.spec.model import Cube


@dataclass(frozen=True)
class ParamSet:
    name: str
    file: str
    bindings: dict[str, str]


def paramset(cube: Cube, task: str, name: str) -> ParamSet:
    """The bindings of parameter set NAME of TASK, read from the legacy files next to the cube:
    tasks/<task>/<name>.yaml (MLBox), run/<name>/<task>.yaml (config 1.0), or the task's `tasks:`
    in a pre-2.0 file. Paths are relative to the workspace; they become parameter overrides."""
    from cuberun import yamlio

    root = cube.root
    declared = [p.name for p in cube.tasks[task].params]
    issues: list[Issue] = []
    prefixed = declared and all(n.startswith("mlbox_") for n in declared) and cube.format in (FORMAT_POC, FORMAT_MLBOX)

    def check(bindings: dict[str, str], doc: Document, origin: str) -> ParamSet:
        if prefixed:
            bindings = {n if n.startswith("mlbox_") else "mlbox_" + n: v for n, v in bindings.items()}
        unknown = [n for n in bindings if n not in declared]
        for n in unknown:
            issues.append(doc.issue((n,), f"task '{task}' has no parameter '{n}'", did_you_mean(n, declared, "parameter")))
        if issues:
            raise SpecError(issues)
        return ParamSet(name, origin, bindings)

    poc = root / "tasks" / task / f"{name}.yaml"
    if poc.is_file():
        doc = yamlio.load(poc, "parameter set")
        if doc.data is None:
            return ParamSet(name, str(poc), {})
        return check(_bindings(doc, (), None, task, issues), doc, str(poc))
    folder = root / "run" / name
    if folder.is_dir():
        candidates = [folder / f"{task}.yaml", *sorted(p for p in folder.glob("*.yaml") if p.stem != task)]
        for path in candidates:
            if not path.is_file():
                continue
            doc = yamlio.load(path, "invoke file")
            if not isinstance(doc.data, dict):
                continue
            named = doc.data.get("task_name")
            if (named or path.stem) != task:
                continue
            bindings = _invoke_bindings(doc, None, issues, task)
            return check(bindings, doc, str(path))
    for source in (root / PRE2_FILE, root / CUBE_FILE):
        if source.is_file() and cube.format == FORMAT_PRE2:
            doc = yamlio.load(source, "cube file")
            sets = ((doc.data or {}).get("tasks") or {}).get(task, {}).get("tasks") or {}
            if isinstance(sets, dict) and name in sets:
                return ParamSet(name, str(source), _pre2_bindings(sets[name]))
    if name == DEFAULT_SET:
        return ParamSet(name, "", {})  # the cube's defaults are the default set
    available = sorted(set(_available_sets(root, task)))
    looked = f"tasks/{task}/{name}.yaml or run/{name}/{task}.yaml"
    hint = did_you_mean(name, available, "parameter set") if available else f"task '{task}' has no parameter sets; drop '/{name}'"
    raise UsageError(f"no parameter set '{name}' for task '{task}' in {root} (looked for {looked})", hint)


def _available_sets(root: Path, task: str) -> list[str]:
    found = [p.stem for p in (root / "tasks" / task).glob("*.yaml")] if (root / "tasks" / task).is_dir() else []
    run = root / "run"
    if run.is_dir():
        found += [d.name for d in run.iterdir() if d.is_dir() and (d / f"{task}.yaml").is_file()]
    return found

# -- the seed's BOX[:TASK[/PARAMSET]] syntax ------------------------------------------------------
@dataclass(frozen=True)
class BoxRef:
    path: str
    task: str | None = None
    paramset: str | None = None


def parse_box_ref(text: str) -> BoxRef:
    """`./box:train/default` -> (./box, train, default). An existing path is taken whole."""
    if ":" not in text or os.path.exists(os.path.expanduser(text)):
        return BoxRef(text)
    path, _, spec = text.rpartition(":")
    task, _, name = spec.partition("/")
    task, name = task.strip(), name.strip()
    if not task:
        raise UsageError(f"'{text}' names no task after ':'", "write BOX:TASK or BOX:TASK/PARAMSET")
    if "/" in name:
        raise UsageError(f"'{text}': a parameter set name cannot contain '/'", "write BOX:TASK/PARAMSET")
    return BoxRef(path or ".", task, name or None)


def _looks_like_box(arg: str) -> bool:
    return ":" in arg or "/" in arg or os.sep in arg or os.path.isdir(os.path.expanduser(arg))


def split_run_args(mlcube: str | None, task: str | None, args: Sequence[str]) -> tuple[str | None, str | None, str | None, list[str]]:
    """`cuberun run [--mlcube=]BOX[:TASK[/PARAMSET]] ...`: the cube, task and parameter set, and
    the remaining arguments (overrides). Only the first bare argument may name the cube."""
    rest = list(args)
    ref: BoxRef | None = parse_box_ref(mlcube) if mlcube else None
    for i, arg in enumerate(rest):
        if arg.startswith("-") or "=" in arg:
            continue
        if _looks_like_box(arg):
            if mlcube:
                raise UsageError(f"the cube is given twice: --mlcube={mlcube} and '{arg}'", "name it once, as --mlcube=BOX[:TASK[/SET]] or as the first argument")
            ref = parse_box_ref(arg)
            del rest[i]
        break
    if ref is None:
        return mlcube, task, None, rest
    if ref.task is not None and task and task != ref.task:
        raise UsageError(f"the task is given twice: --task={task} and '{ref.task}' in {ref.path}:{ref.task}", "name it once")
    return ref.path, task or ref.task, ref.paramset, rest


def paramset_overrides(cube: Cube, tasks: Sequence[str], name: str | None) -> dict[str, str]:
    """The overrides of a parameter set (empty without one); it names exactly one task."""
    if not name:
        return {}
    if len(tasks) != 1:
        raise UsageError(f"parameter set '{name}' needs exactly one task, not {', '.join(tasks)}", "write BOX:TASK/PARAMSET")
    return dict(paramset(cube, tasks[0], name).bindings)
