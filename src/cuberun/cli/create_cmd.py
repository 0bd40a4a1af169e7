"""`cuberun create`: scaffold a new cube from a built-in template (offline)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cuberun.scaffold import DEFAULT_TEMPLATE, TEMPLATES

HELP = """Create a new cube NAME from a template: mlcube.yaml, program, Dockerfile, workspace.

\b
Templates:
""" + "\n".join(f"  {name:<9} {what}" for name, what in TEMPLATES.items()) + """

The new cube runs as it is: `cuberun run --mlcube=NAME`."""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("name")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True, metavar="|".join(TEMPLATES), help="What the cube starts as.")
@click.option("--dir", "parent", default=".", metavar="DIR", help="Create the cube in DIR/NAME (default: current directory).")
@click.option("--description", default="A new MLCube.", help="One-line description.")
@click.option("--author", default="", help="Author name.")
@click.option("--task", default=None, help="Name of the task (single template; default: main).")
def create(name: str, template: str, parent: str, description: str, author: str, task: str | None) -> None:
    from cuberun import scaffold

    target, written = scaffold.create(name, Path(parent).expanduser().absolute(), template=template, task=task,
                                      description=description, author=author)
    print(f"created cube '{name}' from the '{template}' template in {target}:", file=sys.stderr)
    for path in written:
        print(f"  {path.relative_to(target)}", file=sys.stderr)
    print(f"next: cuberun run --mlcube={target}", file=sys.stderr)
