"""`cuberun create`: a new cube from a built-in template, checked before it is handed over.

Every name the checks accept gives a cube that loads and runs: the program's functions are
`task_<name>`, so a task can be called `main`, `class`, `sys` or `json` without colliding with
the program's own names, and the cube name, which names the program file, may not hide a module
of Python's standard library (`json.py` next to the program would be imported as `json`).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from cuberun.errors import CuberunError, UsageError

TEMPLATES = {
    "single": "one task that reads a parameters file and writes an output directory",
    "pipeline": "two tasks, train then evaluate, connected by a model directory (standard library only)",
}
DEFAULT_TEMPLATE = "single"
DEFAULT_TASK = "main"
RENAMES = {"main.py.tmpl": "{{module}}.py", "dockerignore": ".dockerignore"}
CUBE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def module_name(name: str) -> str:
    return name.replace("-", "_")


def check_names(name: str, task: str | None, template: str) -> None:
    """Refuse what would give a broken cube, with the reason and a name that works."""
    if template not in TEMPLATES:
        from cuberun.hints import did_you_mean

        raise UsageError(f"unknown template '{template}'", did_you_mean(template, sorted(TEMPLATES), "template")
                         + " (templates: " + ", ".join(f"{k}: {v}" for k, v in TEMPLATES.items()) + ")")
    if not CUBE_NAME.fullmatch(name):
        raise UsageError(f"'{name}' is not a valid cube name", "use letters, digits, '_' and '-' (at most 64), starting with a letter")
    module = module_name(name)
    if module in sys.stdlib_module_names:
        raise UsageError(f"cube name '{name}' would name the program {module}.py, which hides Python's own '{module}' module",
                         f"choose another name, e.g. '{name}_cube'")
    if task is not None:
        if template != "single":
            raise UsageError(f"--task applies to the single-task template, not to '{template}'",
                             "leave --task out (the pipeline's tasks are train and evaluate)")
        if not TASK_NAME.fullmatch(task):
            raise UsageError(f"'{task}' is not a valid task name", "use letters, digits, '_' and '-' (at most 64), such as 'train'")


def values(name: str, task: str, description: str, author: str) -> dict[str, str]:
    module = module_name(name)
    return {
        "name": name,
        "name_yaml": json.dumps(name),  # a JSON string is a YAML string: `null`, `yes` stay names
        "description": " ".join(description.split()),
        "description_yaml": json.dumps(" ".join(description.split()), ensure_ascii=False),
        "author_yaml": json.dumps(author or "unknown", ensure_ascii=False),
        "module": module,
        "task": task,
        "task_yaml": json.dumps(task),
        "func": task.replace("-", "_"),
        "image": f"{module.lower()}:0.1.0",
    }


def fill(text: str, vals: dict[str, str]) -> str:
    for key, value in vals.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render(template: str, vals: dict[str, str]) -> dict[str, str]:
    """The files of `template` with their placeholders filled: relative path -> text."""
    from importlib import resources

    root = resources.files("cuberun.templates") / template
    files: dict[str, str] = {}
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        src, rel = stack.pop()
        for item in src.iterdir():
            if item.name in ("__pycache__", "__init__.py"):
                continue
            out = rel + fill(RENAMES.get(item.name, item.name), vals)
            if item.is_dir():
                stack.append((item, out + "/"))
            else:
                files[out] = fill(item.read_text(encoding="utf-8"), vals)
    return files


def check_rendered(files: dict[str, str], vals: dict[str, str]) -> list[str]:
    """Why the rendered cube would not run, or []: the mlcube.yaml loads (in memory), names the
    program, and every task has its function in a program that compiles."""
    import ast

    from cuberun import yamlio

    problems = []
    try:
        doc = yamlio.parse(files["mlcube.yaml"], "mlcube.yaml")
        tasks = list((doc.data or {}).get("tasks") or {})
        if doc.data.get("name") != vals["name"]:
            problems.append(f"mlcube.yaml names the cube {doc.data.get('name')!r}, not {vals['name']!r}")
    except CuberunError as exc:
        return [f"mlcube.yaml does not load: {exc.lines()[0]}"]
    program = files.get(f"{vals['module']}.py")
    if program is None:
        return [f"no program {vals['module']}.py"]
    try:
        tree = ast.parse(program, f"{vals['module']}.py")
    except SyntaxError as exc:
        return [f"{vals['module']}.py does not compile: line {exc.lineno}: {exc.msg}"]
    defined = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    for dup in sorted({n for n in defined if defined.count(n) > 1}):
        problems.append(f"{vals['module']}.py defines {dup}() twice")
    for task in tasks:
        if f"task_{str(task).replace('-', '_')}" not in defined:
            problems.append(f"{vals['module']}.py has no function for task '{task}'")
    return problems


def create(name: str, parent: Path, *, template: str = DEFAULT_TEMPLATE, task: str | None = None, description: str = "A new MLCube.",
           author: str = "") -> tuple[Path, list[Path]]:
    """Write the cube `parent/name` from `template`; returns its folder and the files written.
    Nothing is written when a check fails."""
    check_names(name, task, template)
    target = parent / name
    try:
        mode: int | None = os.lstat(target).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):  # a file, a link, a FIFO: never written over
        from cuberun.safeio import kind

        raise UsageError(f"{target} already exists and is {kind(mode)}", "choose another name or --dir")
    if mode is not None and any(target.iterdir()):
        raise UsageError(f"{target} already exists and is not empty", "choose another name or --dir")
    vals = values(name, task or DEFAULT_TASK, description, author)
    files = render(template, vals)
    problems = check_rendered(files, vals)
    if problems:  # a bug of cuberun's templates, never the user's: nothing is written
        raise CuberunError(f"the '{template}' template gives a broken cube for these names: {'; '.join(problems)}",
                           "choose other names, and report this")
    written: list[Path] = []
    made: list[Path] = []
    try:
        for rel in sorted(files):
            out = target / rel
            for folder in reversed([out.parent, *out.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            _write_new(out, files[rel])
            written.append(out)
    except OSError as exc:  # nothing half-written: take back what this call wrote, and only that
        for path in reversed(written):
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise UsageError(f"cannot create the cube in {target}: {exc.strerror or exc}"
                         + (f" ({exc.filename})" if exc.filename else ""), "choose another --dir") from None
    return target, written


def _write_new(path: Path, text: str) -> None:
    """A new file, never over an existing one (exclusive create)."""
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(text)
