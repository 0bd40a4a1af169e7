"""README command 1 as a newcomer sees it the first time: the digits cube run with an empty env
cache, offline (the machine's pip configuration names local package indexes; no traffic beyond
loopback). What the user must see on stderr: that the cube's Python environment is being built
and that this happens once, where pip's output went (a log file: none of pip's own lines, such
as `WARNING: Location ... is ignored`, on the screen), progress lines for each phase of the
build, and a summary at the end naming the report. The second run says everything is up to
date. No clock is compared: the lines' order and content are."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.conftest import EXAMPLES
from tests.docs.doctest_blocks import offline_prefix

pytestmark = pytest.mark.slow

BUILD = "cuberun: building the Python environment"


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefix = offline_prefix()
    if prefix is None:
        skip_or_fail("no network namespace can be made here (unshare --net, or a user namespace) to run offline")
    return subprocess.run([*(prefix or []), sys.executable, "-m", "cuberun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, check=False)


def test_readme_command_1_with_an_empty_env_cache(tmp_path: Path, cli_env: dict[str, str]) -> None:
    shutil.copytree(EXAMPLES / "digits", tmp_path / "examples" / "digits",
                    ignore=shutil.ignore_patterns(".cuberun", "data", "model", "logs", "report.json", "__pycache__"))
    cache = tmp_path / "empty-cache"  # never the session's shared env cache: the build must happen here
    env = {**cli_env, "CUBERUN_CACHE_DIR": str(cache)}
    for name in ("CUBERUN_PROGRESS", "CUBERUN_PROGRESS_INTERVAL", "COLUMNS"):  # the defaults a user has
        env.pop(name, None)

    first = run(["run", "--mlcube=examples/digits"], tmp_path, env)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    # only cuberun's own lines (the summary's rows are indented): no pip output, no noise
    assert all(ln.startswith(("cuberun: ", "  ")) for ln in lines), "\n".join(ln for ln in lines if not ln.startswith(("cuberun: ", "  ")))
    assert not any("WARNING: Location" in ln or ln.startswith(("Collecting", "Processing", "Successfully")) for ln in lines)

    # the environment is built, once, and the user is told so before it starts
    assert lines[0] == "cuberun: building the cube's Python environment once; later runs reuse it"
    told = re.fullmatch(r"cuberun: creating Python environment (\S+) with Python [\d.]+; pip's output goes to (\S+\.log) \(-v shows it here\)",
                        lines[1])
    assert told, lines[:3]
    env_dir, log = Path(told.group(1)), Path(told.group(2))
    assert env_dir.parent == cache / "envs" and "Successfully installed" in log.read_text(encoding="utf-8")
    # progress lines for each phase, in order, each with the elapsed time
    progress = [ln for ln in lines if ln.startswith(BUILD)]
    assert all(re.search(r" \((\d+ min )?\d+ s\)$", ln) for ln in progress), progress
    phases = list(dict.fromkeys(re.sub(r"^" + BUILD + r"(: ([a-z ]+))?.*$", r"\2", ln).strip() for ln in progress))
    assert phases == ["", "creating the virtualenv", "resolving", "installing"], progress
    assert any(re.match(BUILD + r": installing, \d+/\d+ packages \(", ln) for ln in progress), progress
    ready = [i for i, ln in enumerate(lines) if re.fullmatch(r"cuberun: Python environment ready in \d+ s", ln)]
    last = max(i for i, ln in enumerate(lines) if ln.startswith(BUILD))
    assert len(ready) == 1 and last < ready[0], lines  # the progress lines end with the build

    # the summary at the end: what ran, what each task wrote, where the records are, what next
    summary = lines[lines.index(next(ln for ln in lines if ln.startswith("cuberun: summary: "))):]
    assert re.fullmatch(r"cuberun: summary: 3 ran, 0 skipped, 0 failed \(\d+\.\d s\)", summary[0]), summary
    assert [row.split()[:2] for row in summary[1:4]] == [["ran", "prepare"], ["ran", "train"], ["ran", "evaluate"]], summary
    assert summary[3].endswith("wrote examples/digits/workspace/report.json"), summary
    assert summary[4] == "  logs and records: examples/digits/workspace/.cuberun/runs/RUN/ (output.log, record.json)"
    assert summary[5].startswith("  next: cuberun show --mlcube=examples/digits ") and len(summary) == 6
    report = json.loads((tmp_path / "examples" / "digits" / "workspace" / "report.json").read_text())
    assert report["accuracy"] > 0.9

    second = run(["run", "--mlcube=examples/digits"], tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert "building" not in second.stderr and "creating Python environment" not in second.stderr
    summary = second.stderr[second.stderr.index("cuberun: summary: "):].splitlines()
    assert summary[0] == "cuberun: summary: 0 ran, 3 skipped, 0 failed"
    for row, task in zip(summary[1:4], ["prepare", "train", "evaluate"], strict=True):
        assert re.fullmatch(rf"  skipped +{task} +up to date: code, environment, inputs, parameters and command unchanged, outputs intact", row), row
    assert summary[4] == "  next: cuberun report --mlcube=examples/digits  |  add --force to run the skipped tasks anyway"
