"""The end-of-run summary: what ran, what was skipped and why, what failed, how long each took,
the outputs each task wrote, where the logs and records are, and the next useful command.

`collect` builds it (a plain dict: what `run --json` prints under "summary"); `render` writes it
for people. Durations, outputs and logs come from the run records the tasks wrote."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from cuberun.records import RUNS_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_STATUS = {"succeeded": "ran", "succeeded-with-warnings": "ran", "skipped": "skipped"}


def _record(workspace: Path, run_id: str | None) -> dict[str, Any]:
    if not run_id:
        return {}
    try:
        with open(workspace / RUNS_DIR / run_id / "record.json", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _shown(path: str, base: str) -> str:
    """A path relative to the current folder when it is below it (shorter, still exact)."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def records_since(workspace: Path, start: str) -> list[dict[str, Any]]:
    """The records of the task runs that started at or after `start` (an ISO time of the records'
    own format): the tasks of a run that stopped at a failure."""
    from cuberun.records import list_runs

    return [r for r in list_runs(workspace) if str(r.get("start", "")) >= start and not r.get("nested")]


def collect(workspace: Path, results: Sequence[Any] = (), records: Sequence[dict[str, Any]] = (), *, mlcube: str | None = None,
            cwd: str | None = None) -> dict[str, Any]:
    """The summary of the task results of one `cuberun run` (TaskResult objects), or, after a
    failure, of the records it wrote."""
    base = cwd or os.getcwd()
    tasks: list[dict[str, Any]] = []
    rows: list[tuple[str, str | None, str, str | None, Any]] = [(r.task, r.run_id, r.status, r.reason, getattr(r, "sweep", None)) for r in results]
    rows += [(str(d.get("task")), str(d.get("run_id")), str(d.get("status")), d.get("error") or d.get("reason"), d.get("sweep")) for d in records]
    for task, run_id, status, reason, sweep in rows:
        record = _record(workspace, run_id)
        entry: dict[str, Any] = {"task": task, "label": task, "status": _STATUS.get(status, "failed" if status != "running" else "running"),
                                 "outcome": status}
        if isinstance(sweep, dict) and sweep:  # a sweep variant: `train [lr=0.01]`
            entry["sweep"] = {str(k): str(v) for k, v in sweep.items()}
            entry["label"] = f"{task} [{', '.join(f'{k}={v}' for k, v in entry['sweep'].items())}]"
        if run_id:
            entry["run_id"] = run_id
            elapsed = record.get("elapsed_s", record.get("duration_s"))
            entry["seconds"] = round(float(elapsed), 2) if isinstance(elapsed, (int, float)) else None
            params = record.get("parameters") or {}
            entry["outputs"] = [_shown(str(p.get("path")), base) for p in params.values() if isinstance(p, dict) and p.get("io") == "output"]
            entry["log"] = _shown(str(record.get("log") or workspace / RUNS_DIR / run_id / "output.log"), base)
        if reason:
            entry["reason"] = str(reason)
        if record.get("warnings"):
            entry["warnings"] = list(record["warnings"])
        attempt, most = record.get("attempt"), record.get("max_attempts")
        if isinstance(attempt, int) and isinstance(most, int) and most > 1:  # retried (retry.py)
            entry["attempt"], entry["max_attempts"] = attempt, most
        tasks.append(entry)
    counts = {k: sum(1 for t in tasks if t["status"] == k) for k in ("ran", "skipped", "failed")}
    ran = [t for t in tasks if t.get("run_id")]
    from cuberun.console import shell_quote

    where = " " + shell_quote(f"--mlcube={mlcube}") if mlcube else ""
    next_commands = [f"cuberun show{where} {ran[-1]['run_id']}"] if ran else []
    next_commands.append(f"cuberun report{where}")
    return {
        **counts,
        "seconds": round(sum(t.get("seconds") or 0 for t in tasks), 2),
        "tasks": tasks,
        "records": _shown(str(workspace / RUNS_DIR), base),
        "next": next_commands,
    }


def _took(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    from cuberun.progress import seconds

    return f"{value:.1f} s" if value < 60 else seconds(value)


def render(summary: dict[str, Any]) -> str:
    from cuberun.console import printable

    tasks = summary["tasks"]
    head = f"{summary['ran']} ran, {summary['skipped']} skipped, {summary['failed']} failed"
    lines = [f"cuberun: summary: {head}" + (f" ({_took(summary['seconds'])})" if summary["ran"] or summary["failed"] else "")]
    width = max((len(t.get("label") or t["task"]) for t in tasks), default=4)
    for t in tasks:
        line = f"  {t['status']:<8} {t.get('label') or t['task']:<{width}} {_took(t.get('seconds')):>7}  "
        if t.get("max_attempts") and t["status"] != "skipped":
            verb = "succeeded" if t["status"] == "ran" else "failed"
            line += f"{verb} on attempt {t['attempt']} of {t['max_attempts']}; "
        if t["status"] == "skipped":
            line += t.get("reason") or "up to date"
        elif t["status"] == "failed":
            line += f"{t.get('outcome')}" + (f": {t['reason']}" if t.get("reason") else "") + (f"; log {t['log']}" if t.get("log") else "")
        elif t.get("outputs"):
            outputs = t["outputs"]
            line += "wrote " + ", ".join(outputs[:3]) + (f" and {len(outputs) - 3} more" if len(outputs) > 3 else "")
        for warning in t.get("warnings") or []:
            line += f" (warning: {warning})"
        lines.append(printable(line.rstrip().rstrip(";")))
    if any(t.get("run_id") for t in tasks):
        lines.append(printable(f"  logs and records: {summary['records']}/RUN/ (output.log, record.json)"))
    hint = ["add --force to run the skipped tasks anyway"] if summary["skipped"] else []
    lines.append(printable("  next: " + "  |  ".join([*summary["next"], *hint])))
    return "\n".join(lines)
