"""A self-contained HTML report of the runs in a workspace: timeline, metrics plots, run table.

One file, no external resources: inline CSS, inline SVG charts and a few lines of inline JS (a table
filter). Every string that comes from a record or a metrics file is escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cuberun import __version__
from cuberun.records import list_runs
from cuberun.valueclass import dataclass, field

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


def write_report(workspace: Path, output: Path, *, title: str | None = None) -> Path:
    """Write the HTML report of every run recorded in `workspace` to `output`; return `output`."""
    runs = list_runs(workspace)
    page = render_report(runs, workspace=workspace, title=title)
    from cuberun.safeio import write_file

    write_file(output, page, what="report", hint=f"give the path of an HTML file, e.g. -o {output / 'report.html' if output.is_dir() else 'report.html'}")
    return output


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


def render_report(runs: Sequence[dict[str, Any]], *, workspace: Path | None = None, title: str | None = None) -> str:
    """The report page for `runs` (run records, any order) as one HTML string."""
    runs = sorted(runs, key=lambda r: str(r.get("start") or ""), reverse=True)
    where = str(workspace) if workspace else ""
    heading = title or "cuberun report" + (f": {where}" if where else "")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(heading)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{_e(heading)}</h1><p class="sub">{len(runs)} run(s) &middot; generated {_e(now)} by cuberun {_e(__version__)}</p>',
        _summary(runs),
        "</header>",
    ]
    if not runs:
        parts.append('<p class="empty">No runs recorded in this workspace yet: <code>cuberun run</code> records each task run.</p>')
    else:
        parts += ["<section><h2>Timeline</h2>", _timelines(runs), "</section>"]
        parts += ["<section><h2>Metrics</h2>", _metrics_section(runs), "</section>"]
        parts += ["<section><h2>Runs</h2>", _table(runs), "</section>"]
    parts.append(f"<script>{JS}</script></body></html>\n")
    return "\n".join(parts)


# -- summary and timeline ----------------------------------------------------------------------


def _summary(runs: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r.get("status") or "unknown")] = counts.get(str(r.get("status") or "unknown"), 0) + 1
    total = sum(d for r in runs if (d := _duration(r)) is not None)
    cubes = sorted({f"{_dict(r.get('cube')).get('name', '?')} {_dict(r.get('cube')).get('version', '')}".strip() for r in runs})
    cards = [f'<div class="card"><b>{len(runs)}</b><span>runs</span></div>']
    cards += [f'<div class="card"><b style="color:{_color(s)}">{n}</b><span>{_e(s)}</span></div>' for s, n in sorted(counts.items())]
    cards.append(f'<div class="card"><b>{_e(_fmt_duration(total))}</b><span>task time</span></div>')
    if cubes:
        cards.append(f'<div class="card wide"><b>{_e(", ".join(cubes))}</b><span>cube(s)</span></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _groups(runs: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs per invocation (a run without invocation_id is a group of its own), newest group first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        key = str(r.get("invocation_id") or f"run:{r.get('run_id')}")
        groups.setdefault(key, []).append(r)
    ordered = [sorted(g, key=lambda r: str(r.get("start") or "")) for g in groups.values()]
    return sorted(ordered, key=lambda g: str(g[0].get("start") or ""), reverse=True)


def _timelines(runs: Sequence[dict[str, Any]]) -> str:
    out = ['<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{s}</span>' for s, c in STATUS_COLORS.items()) + "</div>"]
    groups = _groups(runs)
    for group in groups[:30]:
        first = group[0]
        invocation = first.get("invocation_id")
        cube = _dict(first.get("cube"))
        starts = [t for r in group if (t := _time(r.get("start"))) is not None]
        ends = [t for r in group if (t := _end(r)) is not None]
        span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
        label = f"invocation {invocation}" if invocation else f"run {first.get('run_id')}"
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(_count(r.get("status") for r in group).items()))
        when = min(starts).strftime("%Y-%m-%d %H:%M:%S UTC") if starts else "?"
        out.append(
            f'<div class="group"><h3>{_e(cube.get("name", "cube"))} <small>{_e(label)} &middot; {_e(when)} &middot; '
            f"{_e(_fmt_duration(span))} &middot; {_e(statuses)}</small></h3>{_timeline_svg(group)}</div>"
        )
    if len(groups) > 30:
        out.append(f'<p class="note">Only the 30 most recent of {len(groups)} invocations are drawn; the table lists every run.</p>')
    return "\n".join(out)


def _timeline_svg(group: list[dict[str, Any]]) -> str:
    width, left, right, row, top = 960, 190, 70, 24, 8
    starts = [t for r in group if (t := _time(r.get("start"))) is not None]
    t0 = min(starts) if starts else None
    t1 = max([t for r in group if (t := _end(r)) is not None] + starts) if starts else None
    span = max((t1 - t0).total_seconds(), 1e-3) if t0 and t1 else 1.0
    height = top + row * len(group) + 26
    plot = width - left - right
    svg = [f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="timeline">']
    axis_y = top + row * len(group) + 4
    for tick in (t for t in _ticks(0, span, 6) if t <= span * 1.001):
        x = left + plot * tick / span
        svg.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" class="grid"/>')
        svg.append(f'<text x="{x:.1f}" y="{axis_y + 14}" class="tick" text-anchor="middle">{_e(_fmt_offset(tick, span))}</text>')
    for i, r in enumerate(group):
        y = top + i * row
        start, end = _time(r.get("start")), _end(r)
        name = str(r.get("task") or "?")
        if isinstance(r.get("sweep"), dict) and r["sweep"]:
            name += " [" + ", ".join(f"{_short_key(k)}={v}" for k, v in r["sweep"].items()) + "]"
        svg.append(f'<text x="{left - 8}" y="{y + row / 2 + 4:.1f}" class="label" text-anchor="end">{_e(_clip(name, 28))}</text>')
        if start is None or t0 is None:
            continue
        x = left + plot * (start - t0).total_seconds() / span
        w = max(plot * ((end or start) - start).total_seconds() / span, 3)
        status = str(r.get("status") or "unknown")
        tip = f"{r.get('run_id')}\n{status} (exit {r.get('exit_code')})\n{_fmt_duration(_duration(r))}"
        svg.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" rx="3" fill="{_color(status)}"'
            f"{' class=open' if end is None else ''}><title>{_e(tip)}</title></rect>"
        )
        svg.append(f'<text x="{x + w + 5:.1f}" y="{y + row / 2 + 4:.1f}" class="dur">{_e(_fmt_duration(_duration(r)))}</text>')
    svg.append("</svg>")
    return "".join(svg)


# -- metrics -----------------------------------------------------------------------------------


@dataclass
class _Chart:
    title: str
    file: str
    x_name: str
    lines: list[tuple[str, list[float], list[float]]] = field(default_factory=list)


def _metrics_section(runs: Sequence[dict[str, Any]]) -> str:
    charts: dict[tuple[str, str], _Chart] = {}
    scalars: list[tuple[str, str]] = []
    claimed: set[str] = set()  # a file rewritten by a later run belongs to that run only
    multi: dict[str, set[str]] = {}
    collected: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for r in runs:  # newest first
        if r.get("status") != "succeeded":
            continue
        found = _list(r["metrics"]) if isinstance(r.get("metrics"), list) else scan_metrics(r)
        for m in found:
            if not isinstance(m, dict) or not isinstance(m.get("rows"), list) or str(m.get("file")) in claimed:
                continue
            claimed.add(str(m.get("file")))
            collected.append((r, m))
            multi.setdefault(_file_key(r, m), set()).add(str(r.get("run_id")))
    for r, m in collected:
        rows = [row for row in m["rows"] if isinstance(row, dict)]
        key = _file_key(r, m)
        if len(rows) == 1:  # a single row (a report.json, a one-line metrics.jsonl): values, not a plot
            skip = (*X_KEYS, *TIMING_KEYS) if str(m.get("file")).endswith(".jsonl") else ()
            values = " ".join(
                f'<span class="metric"><small>{_e(k)}</small>{_e(_fmt(v))}</span>'
                for k, v in rows[0].items()
                if _number(v) is not None and str(k).lower() not in skip
            )
            scalars.append((key, f"<td>{_e(_run_label(r))}</td><td>{values}</td>"))
            continue
        x_name = next((k for k in X_KEYS if sum(1 for row in rows if _number(row.get(k)) is not None) >= len(rows) / 2), "")
        names = [k for k in dict.fromkeys(str(k) for row in rows for k in row) if k != x_name and k.lower() not in TIMING_KEYS]
        for name in names:
            pts = [(_number(row.get(x_name)) if x_name else float(i + 1), _number(row.get(name))) for i, row in enumerate(rows)]
            xy = [(x, y) for x, y in pts if x is not None and y is not None]
            if not xy:
                continue
            # one run: fractions such as accuracy and train_accuracy share a chart; several runs: one chart per metric
            single = len(multi[key]) == 1
            unit = (
                single
                and all(0.0 <= y <= 1.0 for _, y in xy)
                and any(w in name.lower() for w in ("acc", "precision", "recall", "f1", "auc"))
            )
            group = "accuracy" if unit else name
            chart = charts.setdefault((key, group), _Chart(title=group, file=key, x_name=x_name or "line"))
            label = name if single else _run_label(r)
            chart.lines.append((label, [x for x, _ in xy], [y for _, y in xy]))
    if not charts and not scalars:
        return '<p class="note">No metrics found: a succeeded run\'s outputs had no <code>*.jsonl</code> or <code>*.json</code> files with numbers.</p>'
    out = ['<div class="charts">']
    for chart in charts.values():
        out.append(f"<figure><figcaption>{_e(chart.title)} <small>{_e(chart.file)}</small></figcaption>{_line_chart(chart)}</figure>")
    out.append("</div>")
    if scalars:
        out.append('<table class="scalars"><thead><tr><th>file</th><th>run</th><th>values</th></tr></thead><tbody>')
        last = None
        for key, cells in sorted(scalars, key=lambda item: item[0]):  # stable sort: newest run first per file
            out.append(f'<tr><td class="src">{_e(key) if key != last else ""}</td>{cells}</tr>')
            last = key
        out.append("</tbody></table>")
    return "\n".join(out)


def _line_chart(chart: _Chart) -> str:
    width, height, left, right, top, bottom = 360, 230, 50, 14, 10, 34
    lines = chart.lines[: len(LINE_COLORS)]
    xs = [x for _, lx, _ in lines for x in lx]
    ys = [y for _, _, ly in lines for y in ly]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - (abs(y0) or 1) * 0.1, y1 + (abs(y1) or 1) * 0.1
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    yt = _ticks(y0, y1, 5)
    y0, y1 = min(y0, yt[0]), max(y1, yt[-1])
    legend_rows = _legend_rows([label for label, _, _ in lines], width - left)
    total = height + 4 + 18 * len(legend_rows)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top + ph * (1 - (y - y0) / (y1 - y0))

    svg = [f'<svg class="chart" viewBox="0 0 {width} {total}" width="{width}" height="{total}" role="img" aria-label="{_e(chart.title)}">']
    for t in yt:
        svg.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{width - right}" y2="{sy(t):.1f}" class="grid"/>')
        svg.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" class="tick" text-anchor="end">{_e(_fmt(t))}</text>')
    for t in _ticks(x0, x1, 6):
        if x0 <= t <= x1:
            svg.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_e(_fmt(t))}</text>')
            svg.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" class="axis"/>')
    svg.append(f'<line x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}" class="axis"/>')
    svg.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>')
    svg.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 30}" class="axislabel" text-anchor="middle">{_e(chart.x_name)}</text>')
    for i, (label, lx, ly) in enumerate(lines):
        color = LINE_COLORS[i % len(LINE_COLORS)]
        step = max(1, len(lx) // MAX_POINTS)
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in list(zip(lx, ly, strict=True))[::step])
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"><title>{_e(label)}</title></polyline>')
        if len(lx) <= 60:
            svg += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{color}"><title>{_e(f"{label}: {_fmt(x)}, {_fmt(y)}")}</title></circle>'
                for x, y in zip(lx, ly, strict=True)
            ]
    index = 0
    for r, row in enumerate(legend_rows):
        x = float(left)
        for label in row:
            color = LINE_COLORS[index % len(LINE_COLORS)]
            y = height + 14 + 18 * r
            svg.append(f'<rect x="{x:.1f}" y="{y - 9}" width="14" height="4" fill="{color}"/>')
            svg.append(f'<text x="{x + 19:.1f}" y="{y - 3}" class="legendtext">{_e(label)}</text>')
            x += 30 + 6.5 * len(label)
            index += 1
    if len(chart.lines) > len(lines):
        svg.append(
            f'<text x="{width - right}" y="{top + 10}" class="tick" text-anchor="end">+{len(chart.lines) - len(lines)} more not drawn</text>'
        )
    svg.append("</svg>")
    return "".join(svg)


def _legend_rows(labels: list[str], room: float) -> list[list[str]]:
    rows: list[list[str]] = [[]]
    used = 0.0
    for label in labels:
        need = 30 + 6.5 * len(label)
        if rows[-1] and used + need > room:
            rows.append([])
            used = 0.0
        rows[-1].append(label)
        used += need
    return rows


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


# -- the run table -------------------------------------------------------------------------------


def _table(runs: Sequence[dict[str, Any]]) -> str:
    out = [
        '<input id="q" type="search" placeholder="Filter runs (id, task, status, path...)" aria-label="filter runs">',
        '<table id="runs"><thead><tr><th>run</th><th>task</th><th>platform</th><th>status</th><th>exit</th><th>started (UTC)</th>'
        "<th>duration</th><th>parameters</th><th>sweep / overrides</th></tr></thead><tbody>",
    ]
    shown = 0  # failed runs whose log is shown expanded: the 3 most recent
    for r in runs:
        status = str(r.get("status") or "unknown")
        start = _time(r.get("start"))
        params = _dict(r.get("parameters"))
        overrides = _dict(r.get("overrides"))
        plist = "".join(
            f'<li><span class="io {_e(str(p.get("io")))}">{"out" if p.get("io") == "output" else "in"}</span> {_e(str(n))}'
            f"{SET_BADGE if n in overrides else ''}: "
            f'<span class="path" title="{_e(str(p.get("path")))}">{_e(_rel(str(p.get("path")), r))}</span></li>'
            for n, p in params.items()
            if isinstance(p, dict)
        )
        values = []
        if isinstance(r.get("sweep"), dict):
            values += [
                f'<li><b>sweep</b> <span title="{_e(str(k))}">{_e(_short_key(str(k)))}</span>={_e(str(v))}</li>'
                for k, v in r["sweep"].items()
            ]
        values += [f"<li>{_e(str(k))}={_e(_rel(str(v), r))}</li>" for k, v in overrides.items() if k not in params]
        if isinstance(r.get("overrides"), list):
            values += [f"<li>{_e(str(v))}</li>" for v in r["overrides"]]
        if isinstance(r.get("policy"), dict):  # the run policy (policy.py): strict, or each relaxation
            from cuberun.policy import summary_of

            text = summary_of(r["policy"]).removeprefix("policy: ")
            values.append(f'<li class="policy"><b>policy</b> {_e(text)}</li>')
        out.append(
            f'<tr class="{_e(status)}"><td class="id">{_e(str(r.get("run_id")))}</td><td>{_e(str(r.get("task")))}</td>'
            f"<td>{_e(str(r.get('platform') or r.get('runner') or ''))}</td>"
            f'<td><span class="pill" style="background:{_color(status)}">{_e(status)}</span></td>'
            f'<td class="num">{_e("" if r.get("exit_code") is None else str(r.get("exit_code")))}</td>'
            f"<td>{_e(start.strftime('%Y-%m-%d %H:%M:%S') if start else '')}</td>"
            f'<td class="num">{_e(_fmt_duration(_duration(r)))}</td><td class="params"><ul>{plist}</ul></td><td class="values"><ul>{"".join(values)}</ul></td></tr>'
        )
        if status not in ("succeeded", "running"):
            shown += 1
            detail = _e(str(r.get("error") or "")) + _log_tail(r, expand=shown <= 3)
            if detail:
                out.append(f'<tr class="detail {_e(status)}"><td colspan="9">{detail}</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _log_tail(record: dict[str, Any], *, expand: bool) -> str:
    from cuberun.safeio import read_tail

    data = read_tail(str(record.get("log")), 16384) if record.get("log") else None
    if data is None:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    summary = f"last {len(lines)} line{'s' if len(lines) != 1 else ''} of {record.get('log')}"
    return f"<details{' open' if expand else ''}><summary>{_e(summary)}</summary><pre>{_e(chr(10).join(lines))}</pre></details>"


# -- small helpers -------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _color(status: str) -> str:
    return STATUS_COLORS.get(status, "#9e9e9e")


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


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _fmt_offset(seconds: float, span: float) -> str:
    if span < 120:
        return f"{_fmt(seconds)} s"
    if span < 7200:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds / 3600:.1f} h"


def _ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks: list[float] = []
    t = first
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


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


CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#d9dee5;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px 48px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:#fff}
h1{font-size:22px;margin:0 0 2px;word-break:break-all}h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:14px 0 4px}h3 small,figcaption small,.src small{color:var(--muted);font-weight:normal}
.sub,.note,.empty{color:var(--muted);margin:0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:92px}
.card b{display:block;font-size:19px}.card span{color:var(--muted);font-size:12px}.card.wide b{font-size:15px;padding-top:3px}
.legend{display:flex;gap:14px;font-size:12px;color:var(--muted)}.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg{max-width:100%;height:auto;display:block}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;fill:var(--fg)}
svg .tick,svg .dur{fill:var(--muted);font-size:11px}svg .axislabel{fill:var(--muted)}
svg .grid{stroke:#eceff3}svg .axis{stroke:#9aa4b1}svg rect.open{opacity:.55}
.group{border:1px solid var(--line);border-radius:8px;padding:2px 12px 8px;margin:10px 0}
.charts{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 12px}figcaption{font-weight:600;margin-bottom:4px}
table.scalars{width:auto;margin-top:14px}table.scalars td{padding:3px 10px 3px 6px;vertical-align:middle}.src{font-weight:600}
.metric{display:inline-block;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:1px 9px;margin:1px 6px 1px 0}.metric small{color:var(--muted);margin-right:6px}
#q{width:360px;max-width:100%;padding:6px 10px;margin-bottom:8px;border:1px solid var(--line);border-radius:6px;font:inherit}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;background:var(--bg);border-bottom:2px solid var(--line);padding:6px 6px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:6px 6px;vertical-align:top}
td.id{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;white-space:nowrap}td.num{text-align:right;white-space:nowrap}.nowrap{white-space:nowrap}
td ul{list-style:none;margin:0;padding:0}td li{margin:1px 0}
.path{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;overflow-wrap:anywhere}
td.params{min-width:300px}td.values{min-width:150px;overflow-wrap:anywhere}
.set{font-size:10px;border:1px solid #b0bec5;color:var(--muted);border-radius:3px;padding:0 3px}
.io{display:inline-block;font-size:10px;text-transform:uppercase;border-radius:3px;padding:0 4px;background:#e3f2fd;color:#0d47a1}.io.output{background:#e8f5e9;color:#1b5e20}
.pill{color:#fff;border-radius:10px;padding:1px 9px;font-size:12px;white-space:nowrap}
tr.detail td{background:#fff8f7;color:#7f1d1d;border-top:0}
pre{background:#1e232b;color:#e6e6e6;padding:8px 10px;border-radius:6px;overflow:auto;max-height:320px;font-size:12px}
@media print{#q{display:none}}
"""

JS = (
    'document.getElementById("q")&&document.getElementById("q").addEventListener("input",function(e){'
    'var q=e.target.value.toLowerCase();document.querySelectorAll("#runs tbody tr").forEach(function(r){'
    "r.hidden=!!q&&r.textContent.toLowerCase().indexOf(q)<0;});});"
)
