"""A self-contained HTML report of the runs in a workspace: timeline, metrics plots, run table.

One file, no external resources: inline CSS, inline SVG charts and a few lines of inline JS (a table
filter). Every string that comes from a record or a metrics file is escaped.

`data` reads what the report shows from the run records (metrics files, times), `fmt` turns it into
text, `svg` draws the charts and `page` puts the page together and writes it.
"""

from __future__ import annotations

from cuberun.report.data import scan_metrics
from cuberun.report.page import render_report, write_report

__all__ = ["render_report", "scan_metrics", "write_report"]
