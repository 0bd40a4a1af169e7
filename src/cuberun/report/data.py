"""What the report shows, read from the run records: the limits, the metrics files a run wrote
(`scan_metrics`) and the record fields (times, durations, labels, paths).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

STATUS_COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "error": "#8e24aa",
    "interrupted": "#ef6c00",
    "running": "#1565c0",
    "lost": "#6d4c41",
    "skipped": "#78909c",
}
LINE_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
X_KEYS = ("epoch", "step", "global_step", "iteration", "iter")
TIMING_KEYS = ("elapsed", "elapsed_s", "time", "time_s", "timestamp", "wall_time", "duration_s")
MAX_FILES = 40  # metrics files per run
MAX_BYTES = 20 * 1024 * 1024  # per metrics file
MAX_ROWS = 100_000
MAX_WALK = 5_000  # directory entries looked at per output directory
MAX_POINTS = 400  # per plotted line
LOG_TAIL = 30  # lines of output.log shown for runs that did not succeed
SET_BADGE = ' <span class="set" title="set on the command line">set</span>'


def scan_metrics(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Numeric series a run wrote: `[{"file", "param", "rows": [{name: number}]}]`.

    Looks in the run's output parameters (files, and directories recursively, capped) for `*.jsonl`
    files of JSON objects and `*.json` files of one object; keeps the finite numeric fields.
    """
    found: list[dict[str, Any]] = []
    params = _dict(record.get("parameters"))
    for name, spec in params.items():
        if not isinstance(spec, dict) or spec.get("io") != "output" or not spec.get("path"):
            continue
        for path in _metric_files(Path(str(spec["path"]))):
            rows = _read_rows(path)
            if rows:
                found.append({"file": str(path), "param": str(name), "rows": rows})
            if len(found) >= MAX_FILES:
                return found
    return found


def _metric_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        if path.suffix in (".json", ".jsonl"):
            yield path
        return
    if not path.is_dir():
        return
    seen = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            seen += 1
            if seen > MAX_WALK:
                return
            if name.endswith((".json", ".jsonl")):
                yield Path(dirpath) / name


def _read_rows(path: Path) -> list[dict[str, float]]:
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        text = read_regular(path, MAX_BYTES).decode("utf-8", errors="replace")
    except CuberunError:
        return []
    items: list[Any] = []
    if path.suffix == ".jsonl":
        for line in text.splitlines()[:MAX_ROWS]:
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError:
                    continue
    else:
        try:
            items = [json.loads(text)]
        except ValueError:
            return []
    rows = []
    for item in items:
        if isinstance(item, dict):
            row = {str(k): n for k, v in item.items() if (n := _number(v)) is not None}
            if row:
                rows.append(row)
    return rows


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(values: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v or "unknown")] = out.get(str(v or "unknown"), 0) + 1
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value)
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _end(record: dict[str, Any]) -> datetime | None:
    end = _time(record.get("end"))
    if end is None and (start := _time(record.get("start"))) is not None and isinstance(record.get("duration_s"), (int, float)):
        end = start + timedelta(seconds=float(record["duration_s"]))
    return end


def _duration(record: dict[str, Any]) -> float | None:
    if isinstance(record.get("duration_s"), (int, float)):
        return float(record["duration_s"])
    start, end = _time(record.get("start")), _time(record.get("end"))
    return (end - start).total_seconds() if start and end else None


def _short_key(key: str) -> str:
    return str(key).rsplit(".", 1)[-1]


def _run_label(record: dict[str, Any]) -> str:
    if isinstance(record.get("sweep"), dict) and record["sweep"]:
        return ", ".join(f"{_short_key(k)}={v}" for k, v in record["sweep"].items())
    return f"{record.get('task')} {str(record.get('run_id', ''))[-6:]}"


def _rel(path: str, record: dict[str, Any]) -> str:
    ws = str(record.get("workspace") or "")
    if ws and path.startswith(ws.rstrip("/") + "/"):
        return path[len(ws.rstrip("/")) + 1 :]
    return path


def _file_key(record: dict[str, Any], metric: dict[str, Any]) -> str:
    """The metrics file as the task sees it: parameter name + path inside it (same across sweep variants)."""
    param = str(metric.get("param") or "")
    spec = (record.get("parameters") or {}).get(param) if param else None
    base = str(spec.get("path")) if isinstance(spec, dict) else ""
    file = str(metric.get("file"))
    if base and file.startswith(base.rstrip("/") + "/"):
        return f"{param}/{file[len(base.rstrip('/')) + 1 :]}"
    return f"{param}: {Path(file).name}" if param else _rel(file, record)
