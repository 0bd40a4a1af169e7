"""`cuberun migrate`: write the config-2.0 equivalent of a legacy MLBox cube next to its files."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from cuberun.errors import UsageError

if TYPE_CHECKING:
    from cuberun.spec.legacy import Conversion

HELP = """Write the config-2.0 mlcube.yaml of a legacy MLBox cube in PATH (a directory, or its root file).

\b
Legacy formats: the MLBox proof of concept and MLBox 0.1 (mlbox.yaml +
implementation/mlbox_implementation.yaml + tasks/TASK/SET.yaml), config 1.0 /
MLCommons Box (schema_type root file + tasks/ + run/ + platforms/), and the
pre-2.0 .mlcube.yaml.

\b
Where the file goes (paths in it are relative to its directory, so it always
sits in the cube's directory, next to the legacy files, which stay untouched):
  - mlcube.yaml by default;
  - mlcube.v2.yaml when mlcube.yaml is itself the legacy (config 1.0) root
    file; run it with --mlcube=PATH/mlcube.v2.yaml;
  - --output NAME chooses another name in that directory.
An existing file is never replaced without --force. Parameter sets stay in
their legacy files: `cuberun run PATH:TASK/SET` keeps applying them.

With --to=container_config (or --to=mlcube) the cube in PATH (any format) is
written as MedPerf's container_config.yaml (or as mlcube.yaml) next to it, where
both formats can express it; otherwise one error lists what cannot be expressed
and nothing is written.

The report lists what config 2.0 cannot express (ssh platform files, prebuilt
singularity images, docker run arguments, ...) with what to do instead."""


@click.command("migrate", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("path", metavar="PATH", default=".")
@click.option("--output", "-o", metavar="FILE", help="File name in the cube's directory (default: mlcube.yaml, see above).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--dry-run", is_flag=True, help="Print the converted file and the report; write nothing.")
@click.option("--to", "to", type=click.Choice(["container_config", "mlcube"]), help="Convert between mlcube.yaml and container_config.yaml.")
def migrate(path: str, output: str | None, force: bool, dry_run: bool, to: str | None) -> int:
    if to is not None:
        return _convert_format(path, to, output, force, dry_run)
    from cuberun import yamlio
    from cuberun.spec import legacy
    from cuberun.spec.load import build_cube

    conversion = legacy.convert(Path(path))
    text = legacy.migrated_text(conversion)
    target = legacy.default_output(conversion)
    if output:
        chosen = Path(os.path.abspath(os.path.expanduser(output) if os.sep in output else conversion.root / output))
        if chosen.parent.resolve() != conversion.root.resolve():
            raise UsageError(f"--output {output} is outside the cube's directory {conversion.root}",
                             "the file's paths are relative to its directory: give a file name, e.g. --output mlcube.yaml")
        target = chosen
    # the written file must load as config 2.0 exactly like the legacy cube does
    build_cube(yamlio.parse(text, str(target)), target, fmt="2.0")
    if dry_run:
        sys.stdout.write(text)
        _report(conversion, None, sys.stderr)
        return 0
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", "pass --force to replace it, or --output NAME for another file")
    yamlio.write_atomic(target, text)
    _report(conversion, target, sys.stdout)
    return 0


def _report(conversion: Conversion, target: Path | None, stream: TextIO) -> None:
    lines = []
    if target is not None:
        lines.append(f"wrote {target} (config 2.0) from the {conversion.label} files in {conversion.root}")
    if conversion.notes:
        lines.append(f"not carried over ({len(conversion.notes)}):")
        lines += [f"  - {n}" for n in conversion.notes]
    else:
        lines.append("everything was carried over")
    if conversion.assumptions:
        lines.append(f"assumed, check these ({len(conversion.assumptions)}):")
        lines += [f"  - {n}" for n in conversion.assumptions]
    print("\n".join(lines), file=stream)


def _convert_format(path: str, to: str, output: str | None, force: bool, dry_run: bool) -> int:
    from cuberun import yamlio
    from cuberun.spec import formats
    from cuberun.spec.container_config import CONFIG_FILE, FORMAT
    from cuberun.spec.load import CUBE_FILE, load_cube

    cube = load_cube(path)
    if to == "container_config":
        if cube.format == FORMAT:
            raise UsageError(f"{cube.file} is already a container_config.yaml", "use --to=mlcube to convert it to mlcube.yaml")
        converted, name = formats.to_container_config(cube), CONFIG_FILE
    else:
        if cube.format != FORMAT:
            raise UsageError(f"{cube.file} is not a container_config.yaml", "use --to=container_config, or `cuberun migrate` for a legacy cube")
        converted, name = formats.to_mlcube(cube), CUBE_FILE
    target = cube.root / (output or name)
    if output and (os.sep in output or output in ("", ".", "..")):
        raise UsageError(f"--output {output} is not a file name", f"give a file name in {cube.root}")
    text = formats.header(name, str(cube.file.name), converted.notes) + yamlio.dump(converted.data)
    doc = yamlio.parse(text, str(target))  # the written file must load, from where it will be
    if to == "container_config":
        from cuberun.spec import container_config

        container_config.build(doc, target)
    else:
        from cuberun.spec.load import build_cube

        build_cube(doc, target)
    if dry_run:
        sys.stdout.write(text)
        return 0
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", "pass --force to replace it, or --output NAME for another file")
    yamlio.write_atomic(target, text)
    print(f"wrote {target} from {cube.file}" + "".join(f"\n  - {n}" for n in converted.notes))
    return 0

