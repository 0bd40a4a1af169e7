"""Text for the page: HTML escaping, status colours, numbers, durations, axis ticks."""

from __future__ import annotations

import html
import math

from cuberun.report.data import STATUS_COLORS


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _color(status: str) -> str:
    return STATUS_COLORS.get(status, "#9e9e9e")


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
