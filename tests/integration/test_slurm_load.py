"""Load on the real Slurm test cluster: a 50-element sweep as one job array.

Nothing may be lost: 50 records, each complete (succeeded, exit 0, outputs recorded), 50 output
folders with the right contents. The test prints the wall time and the per-task overhead against
a raw `sbatch --array` of the same 50 task commands (figures only: no timed assertions, the
cluster is shared with the other tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from tests.backends import backend_env
    from tests.conftest import CLI
    from tests.integration.test_slurm_runner import check, check_sweep_outputs, records, slurm, slurm_cmd, sweep_cube
except ModuleNotFoundError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_slurm_runner import check, check_sweep_outputs, records, slurm, slurm_cmd, sweep_cube  # type: ignore[no-redef]

    from backends import backend_env  # type: ignore[no-redef]
    from conftest import CLI  # type: ignore[no-redef]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

__all__ = ["slurm"]  # the fixture, shared with test_slurm_runner

ELEMENTS = 50
TIMEOUT = 600


def raw_array_seconds(env: dict[str, str], cube: Path, values: list[str], workdir: Path) -> float:
    """The same 50 task commands (no cuberun) as a plain `sbatch --array`, from submission until
    squeue no longer lists it: what Slurm itself costs on this cluster."""
    for i, value in enumerate(values):
        (workdir / str(i)).mkdir(parents=True)
        (workdir / str(i) / "params.yaml").write_text(f"lr: {value}\nnap: 0\n")
    script = workdir / "raw.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --array=0-{len(values) - 1}\n"
        f"#SBATCH --output={workdir}/raw-%A_%a.log\n"
        "#SBATCH --time=00:05:00\n"
        f'd={workdir}/"$SLURM_ARRAY_TASK_ID"\n'
        f'exec python3 {cube}/train.py train --params="$d/params.yaml" --model="$d/model" --score="$d/score.txt"\n'
    )
    start = time.monotonic()
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        while slurm_cmd(env, "squeue", "-h", "-j", job_id).stdout.strip():
            if time.monotonic() - start > TIMEOUT:
                raise AssertionError(f"raw array job {job_id} still queued after {TIMEOUT} s")
            time.sleep(0.1)
        return time.monotonic() - start
    finally:
        if slurm_cmd(env, "squeue", "-h", "-j", job_id).stdout.strip():
            slurm_cmd(env, "scancel", job_id)  # the array this test submitted


def test_sweep_of_50_elements_loses_nothing(cli: CLI, slurm: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cube = sweep_cube(tmp_path / "sweep")
    values = [str(round(0.001 * (i + 1), 3)) for i in range(ELEMENTS)]
    start = time.monotonic()
    proc = cli("run", f"--mlcube={cube}", "--task=train", "--platform=slurm", "--sweep", "lr=" + ",".join(values), env=slurm, timeout=TIMEOUT)
    wall = time.monotonic() - start
    check(proc)
    ws = cube / "workspace"
    found = records(ws)
    assert len(found) == ELEMENTS, proc.stderr
    assert len({r["details"]["array_job_id"] for r in found}) == 1
    assert sorted(r["details"]["array_task_id"] for r in found) == list(range(ELEMENTS))
    check_sweep_outputs(ws, values, found)
    nested = [r for r in records(ws, platform="local") if r.get("nested")]  # the jobs' own cuberun runs
    assert len(nested) == ELEMENTS and all(r["status"] == "succeeded" for r in nested)
    raw = raw_array_seconds(backend_env("slurm"), cube, values, tmp_path / "raw")
    inner = sum(float(r["duration_s"]) for r in nested) / ELEMENTS
    with capsys.disabled():
        print(
            f"\nslurm load: {ELEMENTS}-element sweep as one job array: cuberun wall {wall:.2f} s ({wall / ELEMENTS * 1000:.0f} ms per task); "
            f"raw sbatch --array of the same commands {raw:.2f} s ({raw / ELEMENTS * 1000:.0f} ms per task); "
            f"per-task overhead of cuberun {(wall - raw) / ELEMENTS * 1000:.0f} ms; "
            f"mean task run inside the job (nested cuberun record) {inner * 1000:.0f} ms"
        )
