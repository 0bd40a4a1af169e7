"""The end-of-run summary, through the CLI on the local platform: what ran, what was skipped
and why, what failed, the outputs written, logs and records, the next command; --json has it
as an object, --quiet has none."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import CLI, write_tree

CUBE = """\
name: pipeline
local:
  command: python3 app.py
tasks:
  make:
    parameters:
      inputs: {seed: {type: file, default: seed.txt}}
      outputs: {data: {type: file, default: data.txt}}
  use:
    parameters:
      inputs: {data: {type: file, default: data.txt}}
      outputs: {result: {type: file, default: out/result.txt}}
  broken:
    parameters:
      inputs: {data: {type: file, default: data.txt}}
      outputs: {result: {type: file, default: never.txt}}
"""

APP = """\
import sys
task, *args = sys.argv[1:]
opts = dict(a[2:].split("=", 1) for a in args)
if task == "broken":
    print("something went wrong", file=sys.stderr)
    sys.exit(3)
src = opts.get("seed") or opts["data"]
dst = opts.get("data") if task == "make" else opts["result"]
with open(src) as fh, open(dst, "w") as out:
    out.write(task + ":" + fh.read())
"""


def cube(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "pipe", {"mlcube.yaml": CUBE, "app.py": APP, "workspace/seed.txt": "1"})


def summary_of(stderr: str) -> list[str]:
    assert stderr.count("cuberun: summary: ") == 1, stderr
    return stderr[stderr.index("cuberun: summary: "):].splitlines()


def test_summary_after_runs_and_skips(cli: CLI, tmp_path: Path) -> None:
    root = cube(tmp_path)
    first = cli("run", f"--mlcube={root}", "--task=make,use", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = summary_of(first.stderr)
    assert re.fullmatch(r"cuberun: summary: 2 ran, 0 skipped, 0 failed \(\d+\.\d s\)", lines[0]), lines
    assert re.fullmatch(r"  ran +make +\d+\.\d s  wrote pipe/workspace/data\.txt", lines[1]), lines
    assert re.fullmatch(r"  ran +use +\d+\.\d s  wrote pipe/workspace/out/result\.txt", lines[2]), lines
    assert lines[3] == "  logs and records: pipe/workspace/.cuberun/runs/RUN/ (output.log, record.json)"
    [use_id] = [p.name for p in (root / "workspace" / ".cuberun" / "runs").iterdir() if "-use-" in p.name]
    assert lines[4] == f"  next: cuberun show --mlcube={root} {use_id}  |  cuberun report --mlcube={root}"

    second = cli("run", f"--mlcube={root}", "--task=make,use", cwd=tmp_path)
    lines = summary_of(second.stderr)
    assert lines[0] == "cuberun: summary: 0 ran, 2 skipped, 0 failed"
    assert re.fullmatch(r"  skipped +make +up to date.*", lines[1]) and re.fullmatch(r"  skipped +use +up to date.*", lines[2]), lines
    assert lines[3] == f"  next: cuberun report --mlcube={root}  |  add --force to run the skipped tasks anyway"  # no run record this time


def test_summary_of_a_failure_names_the_log(cli: CLI, tmp_path: Path) -> None:
    root = cube(tmp_path)
    got = cli("run", f"--mlcube={root}", "--task=broken", cwd=tmp_path)
    assert got.returncode == 3
    lines = summary_of(got.stderr)
    assert re.fullmatch(r"cuberun: summary: 1 ran, 0 skipped, 1 failed \(\d+\.\d s\)", lines[0]), lines  # make ran first (it writes data.txt)
    assert re.fullmatch(r"  ran +make +\d+\.\d s  wrote pipe/workspace/data\.txt", lines[1]), lines
    [failed] = [ln for ln in lines if ln.startswith("  failed")]
    assert re.fullmatch(r"  failed +broken +\d+\.\d s  failed; log pipe/workspace/\.cuberun/runs/[^/]+-broken-[0-9a-f]+/output\.log", failed), lines
    assert got.stderr.rstrip().splitlines()[-1].startswith("cuberun: error: task 'broken' failed with exit code 3")


def test_json_has_the_summary_and_quiet_has_none(cli: CLI, tmp_path: Path) -> None:
    root = cube(tmp_path)
    got = cli("run", f"--mlcube={root}", "--task=make", "--json", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    assert [t["task"] for t in data["tasks"]] == ["make"] and data["tasks"][0]["status"] == "succeeded"
    summary = data["summary"]
    assert (summary["ran"], summary["skipped"], summary["failed"]) == (1, 0, 0)
    [task] = summary["tasks"]
    assert task["outputs"] == ["pipe/workspace/data.txt"] and task["status"] == "ran" and isinstance(task["seconds"], float)
    assert summary["next"][0] == f"cuberun show --mlcube={root} {task['run_id']}"
    assert "cuberun: summary" not in got.stderr

    quiet = cli("run", f"--mlcube={root}", "--task=use", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert (root / "workspace" / "out" / "result.txt").read_text() == "use:make:1"
    both = cli("run", f"--mlcube={root}", "-q", "-v", cwd=tmp_path)
    assert both.returncode == 2 and "--quiet and --verbose exclude each other" in both.stderr


SWEEP_CUBE = """\
name: sweep
local:
  command: python3 fit.py
tasks:
  train:
    parameters:
      inputs: {config: {type: file, default: train.yaml}}
      outputs: {score: {type: file, default: score.txt}}
"""

FIT = """\
import sys
import yaml
opts = dict(a[2:].split("=", 1) for a in sys.argv[2:])
cfg = yaml.safe_load(open(opts["config"]))
if cfg["lr"] == 0.5:
    sys.exit(4)
open(opts["score"], "w").write(str(cfg["lr"] * 100))
"""


def test_summary_names_each_sweep_variant(cli: CLI, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "sw", {"mlcube.yaml": SWEEP_CUBE, "fit.py": FIT, "workspace/train.yaml": "lr: 1\n"})
    first = cli("run", f"--mlcube={root}", "--task=train", "--sweep=lr=0.01,0.1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "cuberun: running task 'train [lr=0.01]' on local" in first.stderr
    lines = summary_of(first.stderr)
    assert re.fullmatch(r"cuberun: summary: 2 ran, 0 skipped, 0 failed \(\d+\.\d s\)", lines[0]), lines
    assert re.fullmatch(r"  ran +train \[lr=0\.01\] +\d+\.\d s  wrote sw/workspace/sweeps/lr=0\.01/score\.txt", lines[1]), lines
    assert re.fullmatch(r"  ran +train \[lr=0\.1\] +\d+\.\d s  wrote sw/workspace/sweeps/lr=0\.1/score\.txt", lines[2]), lines

    again = cli("run", f"--mlcube={root}", "--task=train", "--sweep=lr=0.01,0.1", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert [t["sweep"] for t in data["tasks"]] == [{"lr": "0.01"}, {"lr": "0.1"}]
    summary = data["summary"]
    assert [(t["label"], t["status"], t["sweep"]) for t in summary["tasks"]] == [
        ("train [lr=0.01]", "skipped", {"lr": "0.01"}), ("train [lr=0.1]", "skipped", {"lr": "0.1"})]

    failed = cli("run", f"--mlcube={root}", "--task=train", "--sweep=lr=0.1,0.5", cwd=tmp_path)
    assert failed.returncode == 4, failed.stderr
    lines = summary_of(failed.stderr)
    assert re.fullmatch(r"cuberun: summary: 0 ran, 1 skipped, 1 failed \(\d+\.\d s\)", lines[0]), lines
    assert re.fullmatch(r"  skipped +train \[lr=0\.1\] +up to date.*", lines[1]), lines
    [bad] = [ln for ln in lines if ln.startswith("  failed")]
    assert re.fullmatch(r"  failed +train \[lr=0\.5\] +\d+\.\d s  failed; log sw/workspace/\.cuberun/runs/[^/]+-train-[0-9a-f]+/output\.log", bad), lines
    assert failed.stderr.rstrip().splitlines()[-1].startswith("cuberun: error: task 'train [lr=0.5]' failed with exit code 4")
