"""The report page: its header and summary cards, the run table, the inline CSS and JS; writing it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cuberun import __version__
from cuberun.records import list_runs
from cuberun.report.data import LOG_TAIL, SET_BADGE, _dict, _duration, _rel, _short_key, _time
from cuberun.report.fmt import _color, _e, _fmt_duration
from cuberun.report.svg import _metrics_section, _timelines


def write_report(workspace: Path, output: Path, *, title: str | None = None) -> Path:
    """Write the HTML report of every run recorded in `workspace` to `output`; return `output`."""
    runs = list_runs(workspace)
    page = render_report(runs, workspace=workspace, title=title)
    from cuberun.safeio import write_file

    write_file(output, page, what="report", hint=f"give the path of an HTML file, e.g. -o {output / 'report.html' if output.is_dir() else 'report.html'}")
    return output


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
