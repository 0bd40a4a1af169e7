"""`cuberun create`: scaffold a new cube from the built-in template (offline)."""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import click

from cuberun.errors import UsageError

RENAMES = {"main.py.tmpl": "{{module}}.py", "dockerignore": ".dockerignore"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("--dir", "parent", default=".", metavar="DIR", help="Create the cube in DIR/NAME (default: current directory).")
@click.option("--description", default="A new MLCube.", help="One-line description.")
@click.option("--author", default="", help="Author name.")
@click.option("--task", default="main", help="Name of the first task.")
def create(name: str, parent: str, description: str, author: str, task: str) -> None:
    """Create a new cube NAME: mlcube.yaml, program, Dockerfile, workspace."""
    from importlib import resources

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise UsageError(f"'{name}' is not a valid cube name", "use letters, digits, '_' and '-', starting with a letter")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", task):
        raise UsageError(f"'{task}' is not a valid task name", "use a Python identifier such as 'train'")
    from cuberun.safeio import kind, make_dirs, write_new

    target = Path(parent).expanduser().absolute() / name
    try:
        mode = target.lstat().st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{target} already exists and is {kind(mode)}", "choose another name or --dir")
    if mode is not None and any(target.iterdir()):
        raise UsageError(f"{target} already exists and is not empty", "choose another name or --dir")
    module = name.replace("-", "_")
    values = {"name": name, "description": description, "author": author or "unknown", "module": module, "task": task,
              "image": f"{module.lower()}:0.1.0"}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        return text

    template = resources.files("cuberun.templates") / "basic"
    written: list[Path] = []
    stack = [(template, target)]
    while stack:
        src, dst = stack.pop()
        for item in src.iterdir():
            name_out = fill(RENAMES.get(item.name, item.name))
            if item.is_dir():
                stack.append((item, dst / name_out))
                continue
            out = dst / name_out
            make_dirs(out.parent, what="cube folder")
            write_new(out, fill(item.read_text(encoding="utf-8")), what="cube file")
            written.append(out)
    print(f"created cube '{name}' in {target}:", file=sys.stderr)
    for path in sorted(written):
        print(f"  {path.relative_to(target)}", file=sys.stderr)
    print(f"next: cuberun run --mlcube={target}", file=sys.stderr)
