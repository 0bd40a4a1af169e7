"""Load: 200 tasks through the local runner with --jobs 2; nothing lost, every record complete."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, write_tree

N = 200


@pytest.mark.slow
def test_200_tasks_with_two_jobs(cli: CLI, tmp_path: Path) -> None:
    tasks = "".join(f"  t{i:03d}:\n    parameters:\n      outputs: {{out: {{type: file, default: out/t{i:03d}.txt}}}}\n" for i in range(N))
    write_tree(tmp_path, {
        "mlcube.yaml": "name: load\nlocal: {command: python3 t.py, env: current}\ntasks:\n" + tasks,
        "t.py": "import sys\nopen(sys.argv[2].split('=', 1)[1], 'w').write(sys.argv[1])\n",
    })
    start = time.monotonic()
    got = cli("run", "--jobs", "2", timeout=1800)
    wall = time.monotonic() - start
    assert got.returncode == 0, got.stderr[-2000:]
    ws = tmp_path / "workspace"
    assert sorted(p.read_text() for p in (ws / "out").iterdir()) == [f"t{i:03d}" for i in range(N)]
    records = [json.loads(p.read_text()) for p in (ws / ".cuberun" / "runs").glob("*/record.json")]
    assert len(records) == N
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 and r["end"] and "outputs" in r for r in records)
    assert len({r["invocation_id"] for r in records}) == 1
    task_time = sum(r["duration_s"] for r in records)
    print(f"\n{N} tasks, --jobs 2: wall {wall:.1f} s, {wall / N * 1000:.0f} ms per task; summed task time {task_time:.1f} s")
    again = cli("run", "--jobs", "2", timeout=1800)
    assert again.returncode == 0 and again.stderr.count("cuberun: skipping task") == N
