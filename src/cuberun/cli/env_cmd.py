"""`cuberun env`: the managed Python environments of the local runner (list, prune, rebuild)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from cuberun.cli.commands import CONTEXT, HelpGroup, mlcube_option, p_option, workspace_option


@click.group(cls=HelpGroup, context_settings=CONTEXT)
def env() -> None:
    """List, prune and rebuild the managed Python environments (the local runner's cache)."""


def _count(n: int) -> str:
    return f"{n} environment{'' if n == 1 else 's'}"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _row(e: Any) -> dict[str, Any]:
    return {"key": e.key, "path": str(e.path), "bytes": e.size, "python": e.python, "created": _when(e.created),
            "last_used": _when(e.last_used), "cubes": e.cubes, "requirements": e.requirements}


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_envs(as_json: bool) -> int:
    """The environments: key, size, last use, the cubes that used them (most recent first)."""
    from cuberun import envcache
    from cuberun.console import printable
    from cuberun.progress import human

    found = envcache.envs()
    if as_json:
        print(json.dumps([_row(e) for e in found], indent=2))
        return 0
    if not found:
        click.echo(f"no environments in {envcache.envs_dir()}")
        return 0
    header = ("KEY", "SIZE", "PYTHON", "LAST USED", "CUBES")
    rows = [(e.key, human(e.size), e.python or "?", _when(e.last_used), ", ".join(e.cubes) or "-") for e in found]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        click.echo(printable("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + "  " + r[4]))
    total = sum(e.size for e in found)
    cap = envcache.limit()
    click.echo(f"{_count(len(found))}, {human(total)} in {envcache.envs_dir()}"
               + (f" (bound: {human(cap)}, CUBERUN_ENV_CACHE_MAX)" if cap else " (no bound)"))
    return 0


@env.command()
@click.option("--older-than", "days", type=click.FloatRange(min=0), metavar="DAYS", help="Only those last used more than DAYS days ago.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def prune(days: float | None, dry_run: bool) -> int:
    """Remove environments (all, or those unused for DAYS): never one in use by a running
    cuberun, never a folder cuberun did not create."""
    from cuberun import envcache
    from cuberun.console import printable
    from cuberun.progress import human

    gone, busy = envcache.prune(days, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in gone:
        click.echo(printable(f"{verb} {e.key} ({human(e.size)}, last used {_when(e.last_used)})"))
    for e in busy:
        click.echo(printable(f"kept {e.key}: in use by a running cuberun"))
    for p in envcache.foreign():
        click.echo(printable(f"left alone {p}: not created by cuberun"))
    click.echo(f"{verb} {_count(len(gone))}, {human(sum(e.size for e in gone))}")
    return 0


@env.command()
@mlcube_option
@workspace_option
@p_option
def rebuild(mlcube: str | None, workspace: str | None, params: tuple[str, ...]) -> int:
    """Build the cube's managed environment again (a damaged env, changed indexes)."""
    from cuberun import envcache
    from cuberun.cli.commands import _load
    from cuberun.errors import BusyError, UsageError
    from cuberun.execute import make_runner
    from cuberun.runners import pyenv
    from cuberun.runners.base import RunOptions

    cube = _load(mlcube, workspace, params)
    runner = make_runner(cube, "local", RunOptions(rebuild_env=True), params)
    launch = getattr(runner, "launch", None)
    spec = launch().env if callable(launch) else None
    if spec is None:
        raise UsageError(f"cube '{cube.name}' has no managed environment on the local platform", "it names no requirements (local.requirements)")
    with envcache.exclusive(spec.key()) as free:
        if not free:
            raise BusyError(f"environment {spec.key()} is in use by a running cuberun", "wait for that run to finish")
    pyenv.ensure(spec, rebuild=True, cube=str(cube.root))
    click.echo(f"rebuilt {spec.path()}")
    return 0
