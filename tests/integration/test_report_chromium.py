"""The HTML run report: self-contained, escaped, and rendered for real by headless Chromium.

Chromium is Debian's `chromium` package (scripts/install-chromium.sh). Without it the rendering tests
skip with the reason, unless CUBERUN_REQUIRE_BACKENDS=1, which makes them fail. A JavaScript error or
a blocked external resource (the page's Content-Security-Policy forbids any) shows up in Chromium's
stderr as a `CONSOLE` line; a canary page checks that such lines are really seen.

CUBERUN_REPORT_SCREENSHOT=docs/report.png makes the digits test keep its screenshot there.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from cuberun.records import list_runs
from cuberun.report import render_report, write_report
from tests.backends import backends_required
from tests.conftest import CLI, EXAMPLES

HOSTILE = '<script>alert("x")</script>'
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught")
WINDOW = (1280, 2000)


# -------------------------------------------------------------------------------- helpers


class Tags(HTMLParser):
    """Every tag name and attribute name of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.append(tag)
        self.attributes.update(name for name, _ in attrs)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "chromium is not installed (Debian's chromium package: bash scripts/install-chromium.sh)"
    if backends_required():
        pytest.fail(f"{reason} (CUBERUN_REQUIRE_BACKENDS=1)", pytrace=False)
    pytest.skip(reason)


def run_chromium(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *mode,
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        page.resolve().as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, number of distinct byte values in the pixel data) of a PNG, with the stdlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width, height, len(set(pixels[:: max(1, len(pixels) // 200_000)]))


def screenshot(page: Path, tmp_path: Path) -> Path:
    png = tmp_path / "report.png"
    result = run_chromium(page, tmp_path, f"--screenshot={png}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert console_lines(result.stderr) == [], "console messages:\n" + "\n".join(console_lines(result.stderr))
    assert png.is_file() and png.stat().st_size > 20_000, "screenshot missing or tiny"
    width, height, distinct = png_facts(png)
    assert (width, height) == WINDOW
    assert distinct > 20, "the screenshot looks blank"
    return png


def dump_dom(page: Path, tmp_path: Path) -> str:
    result = run_chromium(page, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    assert console_lines(result.stderr) == []
    return result.stdout


def write_record(ws: Path, record: dict[str, Any], log: str) -> dict[str, Any]:
    folder = ws / ".cuberun" / "runs" / record["run_id"]
    folder.mkdir(parents=True)
    (folder / "output.log").write_text(log, encoding="utf-8")
    record = {"workspace": str(ws), "log": str(folder / "output.log"), "platform": "local", "runner": "local", **record}
    (folder / "record.json").write_text(json.dumps(record), encoding="utf-8")
    return record


def metrics(path: Path, lr: float, epochs: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch in range(1, epochs + 1):
        loss = 2.3 * math.exp(-lr * 3 * epoch)
        lines.append(
            json.dumps(
                {"epoch": epoch, "loss": loss, "accuracy": 1 - loss / 2.5, "train_accuracy": 1 - loss / 2.7, "elapsed_s": epoch * 0.1}
            )
        )
    path.write_text("\n".join(lines) + "\nnot json\n", encoding="utf-8")


def hand_written_workspace(root: Path) -> Path:
    """Three invocations' worth of records: a prepare/train/evaluate chain, a sweep with a failed
    variant, and an old record without invocation_id whose strings are hostile HTML."""
    ws = root / "work space"
    cube = {"name": "digits", "version": "0.1", "path": str(root / "cube" / "mlcube.yaml")}

    def param(io: str, kind: str, rel: str) -> dict[str, str]:
        return {"io": io, "type": kind, "path": str(ws / rel)}

    metrics(ws / "logs" / "metrics.jsonl", 0.1)
    (ws / "report.json").write_text(json.dumps({"accuracy": 0.9639, "samples": 360, "model": "mlp", "labels": [0, 1]}), encoding="utf-8")
    chain = "20261122-100000-run-aaaaaa"
    write_record(
        ws,
        {
            "run_id": "20261122-100000-prepare-000001",
            "invocation_id": chain,
            "task": "prepare",
            "cube": cube,
            "status": "succeeded",
            "exit_code": 0,
            "start": "2026-11-22T10:00:00.000Z",
            "end": "2026-11-22T10:00:02.500Z",
            "duration_s": 2.5,
            "parameters": {"params": param("input", "file", "params.yaml"), "data_dir": param("output", "directory", "data")},
        },
        "ok\n",
    )
    write_record(
        ws,
        {
            "run_id": "20261122-100002-train-000002",
            "invocation_id": chain,
            "task": "train",
            "cube": cube,
            "status": "succeeded",
            "exit_code": 0,
            "start": "2026-11-22T10:00:02.600Z",
            "end": "2026-11-22T10:00:09.000Z",
            "duration_s": 6.4,
            "parameters": {"data_dir": param("input", "directory", "data"), "log_dir": param("output", "directory", "logs")},
        },
        "trained\n",
    )
    write_record(
        ws,
        {
            "run_id": "20261122-100009-evaluate-000003",
            "invocation_id": chain,
            "task": "evaluate",
            "cube": cube,
            "status": "succeeded",
            "exit_code": 0,
            "start": "2026-11-22T10:00:09.100Z",
            "end": "2026-11-22T10:00:11.000Z",
            "duration_s": 1.9,
            "parameters": {"report": param("output", "file", "report.json")},
        },
        "accuracy 0.9639\n",
    )
    sweep = "20261122-110000-run-bbbbbb"
    for i, (lr, status) in enumerate([("0.05", "succeeded"), ("0.2", "succeeded"), ("9", "failed")]):
        out = f"sweeps/train.lr={lr}"
        if status == "succeeded":
            metrics(ws / out / "logs" / "metrics.jsonl", float(lr))
        write_record(
            ws,
            {
                "run_id": f"20261122-110000-train-00001{i}",
                "invocation_id": sweep,
                "task": "train",
                "cube": cube,
                "status": status,
                "exit_code": 0 if status == "succeeded" else 1,
                "start": f"2026-11-22T11:00:0{i}.000Z",
                "end": f"2026-11-22T11:00:0{5 + i}.000Z",
                "sweep": {"train.lr": lr},
                "overrides": {"log_dir": str(ws / out / "logs")},
                "parameters": {"log_dir": param("output", "directory", f"{out}/logs")},
            },
            "epoch 1\nValueError: learning rate 9 diverged\n" if status == "failed" else "done\n",
        )
    write_record(
        ws,
        {
            "run_id": "20261121-090000-hello-legacy",
            "task": HOSTILE,
            "cube": {"name": HOSTILE},
            "status": "succeeded",
            "exit_code": 0,
            "start": "2026-11-21T09:00:00Z",
            "end": "2026-11-21T09:00:01Z",
            "parameters": {"chat": {"io": "output", "type": "file", "path": f'/tmp/"><img src=x onerror=alert(1)>{HOSTILE}.txt'}},
        },
        "hi\n",
    )
    return ws


# -------------------------------------------------------------------------------- tests


def test_report_is_self_contained_escaped_and_complete(tmp_path: Path) -> None:
    ws = hand_written_workspace(tmp_path)
    out = write_report(ws, tmp_path / "out" / "report.html")
    page = out.read_text(encoding="utf-8")
    runs = list_runs(ws)
    assert len(runs) == 7
    for r in runs:
        assert r["run_id"] in page
    # nothing from outside: no URLs, no external references, the CSP forbids them anyway
    assert not re.search(r"(https?|file|ftp)://|url\(|@import", page, re.IGNORECASE)
    tags = Tags()
    tags.feed(page)
    assert not {"img", "link", "iframe", "object", "embed", "base"} & set(tags.names)
    assert not {"src", "href", "xlink:href", "onerror", "onload"} & tags.attributes
    assert tags.names.count("script") == 1  # the table filter only
    assert "default-src 'none'" in page
    # every record string is escaped
    assert HOSTILE not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # a timeline per invocation (the legacy run is a group of its own), newest first
    timelines = re.findall(r'<div class="group"><h3>.*?</h3>', page)
    assert len(timelines) == 3
    assert "invocation 20261122-110000-run-bbbbbb" in timelines[0] and "1 failed, 2 succeeded" in timelines[0]
    assert "invocation 20261122-100000-run-aaaaaa" in timelines[1] and "3 succeeded" in timelines[1]
    assert "run 20261121-090000-hello-legacy" in timelines[2]
    assert page.count('<svg class="timeline"') == 3
    # metrics: per-metric charts across the sweep variants and the chain's train run, timing columns left out
    captions = re.findall(r"<figcaption>(.*?) <small>(.*?)</small>", page)
    assert sorted(captions) == [
        ("accuracy", "log_dir/metrics.jsonl"),
        ("loss", "log_dir/metrics.jsonl"),
        ("train_accuracy", "log_dir/metrics.jsonl"),
    ]
    assert page.count('<svg class="chart"') == 3
    assert "lr=0.05" in page and "lr=0.2" in page and "elapsed_s" not in page.split("<h2>Runs</h2>")[0]
    assert page.count("<polyline") == 9  # 3 metrics x (2 variants + the chain's train)
    assert "<small>accuracy</small>0.9639" in page and "<small>samples</small>360" in page
    # the failed variant: status, exit code and the end of its log
    assert "ValueError: learning rate 9 diverged" in page
    assert re.search(r'<span class="pill" style="background:#c62828">failed</span></td><td class="num">1</td>', page)


def test_an_empty_workspace_gets_a_page_too(tmp_path: Path) -> None:
    page = write_report(tmp_path / "nothing", tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No runs recorded" in page
    assert render_report([]).startswith("<!DOCTYPE html>")


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The check below is only worth something if Chromium really reports page errors on stderr."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>canary</p><script>undefinedFunction();</script>", encoding="utf-8")
    result = run_chromium(bad, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    assert any("undefinedFunction" in line for line in console_lines(result.stderr)), result.stderr[-3000:]


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    ws = hand_written_workspace(tmp_path)
    page = write_report(ws, tmp_path / "report.html")
    screenshot(page, tmp_path)
    dom = dump_dom(page, tmp_path)
    for r in list_runs(ws):
        assert r["run_id"] in dom
    assert dom.count("<svg") >= 6 and "<polyline" in dom
    assert "<img" not in dom  # the hostile path stayed text


def test_report_of_the_digits_example_in_chromium(cli: CLI, tmp_path: Path) -> None:
    """Real records: prepare, train, evaluate, then a sweep of train over the learning rate."""
    chromium()  # skip (or fail) before spending a minute on training
    cube = tmp_path / "digits"
    shutil.copytree(EXAMPLES / "digits", cube, ignore=shutil.ignore_patterns(".cuberun", "data", "model", "logs", "report.json", "sweeps"))
    result = cli("run", f"--mlcube={cube}", "--task=prepare,train,evaluate", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    result = cli("run", f"--mlcube={cube}", "--task=train", "--sweep", "train.mlp.learning_rate=0.003,0.01", "--jobs", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ws = cube / "workspace"
    runs = list_runs(ws)
    # prepare reads params.yaml too (it has the swept key): it runs per variant, like train
    assert [r["task"] for r in runs][:3] == ["prepare", "train", "evaluate"]
    assert sorted(r["task"] for r in runs[3:]) == ["prepare", "prepare", "train", "train"]
    assert len({r.get("invocation_id") for r in runs}) == 2

    page = write_report(ws, ws / ".cuberun" / "report.html")
    png = screenshot(page, tmp_path)
    dom = dump_dom(page, tmp_path)
    for r in runs:
        assert r["run_id"] in dom
    assert "<svg" in dom and "<polyline" in dom
    assert re.search(r"<figcaption>loss <small>log_dir/metrics.jsonl</small>", dom)
    assert "learning_rate=0.01" in dom
    keep = os.environ.get("CUBERUN_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(png, keep)
