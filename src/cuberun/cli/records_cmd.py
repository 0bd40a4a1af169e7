"""The commands that read a workspace's run records: `runs`, `show`, `export-provenance`,
`report`, and `graph` (the task graph); imported only when one of them is used."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from cuberun.cli.commands import CONTEXT, _load, mlcube_option, workspace_option
from cuberun.errors import UsageError


# -- runs ----------------------------------------------------------------------------------
@click.command(context_settings=CONTEXT)
@mlcube_option
@workspace_option
@click.option("--task", metavar="NAME", help="Only runs of this task.")
@click.option("--status", type=click.Choice(["succeeded", "failed", "interrupted", "error", "running", "cancelled", "lost"]),
              help="Only runs with this status (lost: its cuberun was killed).")
@click.option("--all", "show_all", is_flag=True, help="Include the records written inside batch jobs (nested).")
@click.option("--json", "as_json", is_flag=True)
def runs(mlcube: str | None, workspace: str | None, task: str | None, status: str | None, show_all: bool, as_json: bool) -> int:
    """List the run records of a workspace."""

    from cuberun.records import list_runs

    if workspace:
        ws = _absolute(workspace)
    else:
        ws = _load(mlcube, None, ()).workspace
    found = [r for r in list_runs(ws) if (not task or r.get("task") == task) and (not status or r.get("status") == status)
             and (show_all or not r.get("nested"))]
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no runs in {ws}")
        return 0
    print(runs_table(found))
    return 0


def runs_table(records: Sequence[dict[str, Any]]) -> str:
    """Run records as a table: a header, then one aligned row per run (numbers to the right)."""
    from cuberun.console import printable

    def cell(value: Any) -> str:
        return "-" if value is None or value == "" else printable(str(value))

    header = ("RUN", "TASK", "PLATFORM", "STATUS", "EXIT", "SECONDS", "STARTED")
    rows: list[tuple[str, ...]] = [header]
    for r in records:
        dur = r.get("duration_s")
        seconds = f"{dur:.1f}" if isinstance(dur, (int, float)) and not isinstance(dur, bool) else dur
        rows.append(tuple(cell(v) for v in (r.get("run_id"), r.get("task"), r.get("platform"), r.get("status"), r.get("exit_code"),
                                            seconds, r.get("start"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {4, 5}
    lines = []
    for row in rows:
        cells = [row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i]) for i in range(len(header))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# -- graph / show / export-provenance / report ----------------------------------------------
@click.command(context_settings=CONTEXT)
@mlcube_option
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text", show_default=True)
def graph(mlcube: str | None, fmt: str) -> int:
    """Print the task graph (dependencies inferred from paths, plus cuberun.depends_on)."""
    from cuberun import graph as graph_mod

    cube = _load(mlcube, None, ())
    print(graph_mod.render(cube, fmt), end="")
    return 0


def _absolute(path: str) -> Any:
    """An absolute, normalised path, symbolic links NOT resolved (a link is written through,
    never replaced by its target; a link loop is reported where it is used)."""
    import os
    from pathlib import Path

    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(path))))


def _workspace_of(mlcube: str | None, workspace: str | None) -> Any:

    if workspace:
        return _absolute(workspace)
    return _load(mlcube, None, ()).workspace


def _find(mlcube: str | None, workspace: str | None, run_id: str) -> dict[str, Any]:
    from cuberun.records import find_run

    return find_run(_workspace_of(mlcube, workspace), run_id)


@click.command(context_settings=CONTEXT)
@mlcube_option
@workspace_option
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True)
def show(mlcube: str | None, workspace: str | None, run_id: str, as_json: bool) -> int:
    """Print one run record (RUN: its id, or a unique part of it)."""
    record = _find(mlcube, workspace, run_id)
    if as_json:
        print(json.dumps(record, indent=2))
        return 0
    lines = [f"run {record['run_id']}: task {record.get('task')} on {record.get('platform')} -> {record.get('status')} (exit {record.get('exit_code')})"]
    for key in ("invocation_id", "start", "end", "duration_s", "host", "user", "cuberun_version", "log"):
        if record.get(key) is not None:
            lines.append(f"  {key + ':':<17}{record[key]}")
    if record.get("sweep"):
        lines.append("  sweep:           " + ", ".join(f"{k}={v}" for k, v in record["sweep"].items()))
    if record.get("runner_fingerprint"):
        lines.append("  runner:          " + ", ".join(f"{k}={v}" for k, v in record["runner_fingerprint"].items()))
    lines.append("  command:         " + " ".join(str(c) for c in record.get("command") or []))
    for io in ("inputs", "outputs"):
        for name, fp in (record.get(io) or {}).items():
            if not isinstance(fp, dict):
                continue
            lines.append(f"  {io[:-1]:<6} {name}: {fp.get('path')}  sha256={str(fp.get('sha256', ''))[:16]}  files={fp.get('files')} bytes={fp.get('bytes')}")
    if record.get("error"):
        lines.append(f"  error:           {record['error']}")
    print("\n".join(lines))
    return 0


@click.command("export-provenance", context_settings=CONTEXT)
@mlcube_option
@workspace_option
@click.argument("run_id", metavar="RUN")
@click.option("--output", "-o", metavar="DIR", help="Crate directory (default: <workspace>/.cuberun/crates/<run>).")
@click.option("--invocation", is_flag=True, help="Export every task run of the run's invocation (a Provenance Run Crate).")
def export_provenance(mlcube: str | None, workspace: str | None, run_id: str, output: str | None, invocation: bool) -> int:
    """Write a Workflow Run RO-Crate (JSON-LD) for a run."""
    from pathlib import Path

    from cuberun.provenance import export_invocation_crate, export_ro_crate, invocation_records
    from cuberun.records import list_runs

    record = _find(mlcube, workspace, run_id)
    ws = Path(record.get("workspace") or _workspace_of(mlcube, workspace))
    dest = _absolute(output) if output else ws / ".cuberun" / "crates" / record["run_id"]
    if invocation:
        path = export_invocation_crate(invocation_records(list_runs(ws, warn=False), record), dest)
    else:
        path = export_ro_crate(record, dest)
    print(path)
    return 0


@click.command(context_settings=CONTEXT)
@mlcube_option
@workspace_option
@click.option("--output", "-o", metavar="FILE", help="HTML file (default: <workspace>/.cuberun/report.html).")
def report(mlcube: str | None, workspace: str | None, output: str | None) -> int:
    """Write a self-contained HTML report of the runs in a workspace."""

    from cuberun.report import write_report

    ws = _workspace_of(mlcube, workspace)
    if not ws.is_dir():
        raise UsageError(f"the workspace {ws} does not exist", "pass the --workspace (or --mlcube) whose runs to report")
    dest = _absolute(output) if output else ws / ".cuberun" / "report.html"
    print(write_report(ws, dest))
    return 0
