"""The inline SVG charts: the timeline of each invocation and the metrics line charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cuberun.report.data import (
    LINE_COLORS,
    MAX_POINTS,
    STATUS_COLORS,
    TIMING_KEYS,
    X_KEYS,
    _count,
    _dict,
    _duration,
    _end,
    _file_key,
    _list,
    _number,
    _run_label,
    _short_key,
    _time,
    scan_metrics,
)
from cuberun.report.fmt import _clip, _color, _e, _fmt, _fmt_duration, _fmt_offset, _ticks
from cuberun.valueclass import dataclass, field


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
