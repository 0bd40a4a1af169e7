"""The Slurm runner on a real MULTI-NODE cluster (scripts/backends/slurm-multi.sh): slurmctld and
three slurmds, each in its own network namespace with its own address, one shared filesystem.

- a sweep is one job array whose elements run on different nodes;
- a node killed mid-sweep (every process in its network namespace: slurmd, slurmstepd, the task):
  slurmctld marks it DOWN and requeues its element (JobRequeue=1), which runs again elsewhere.
  Whatever cuberun reports for that element, nothing may be recorded complete wrongly: every
  succeeded record's outputs are the variant's real outputs, and a failure names the node loss.
Everything goes through the CLI; the killed node is brought back with the backend's own script.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, require_backend
from tests.conftest import CLI, run_records
from tests.integration.test_slurm_runner import check_sweep_outputs, sweep_cube

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600

pytestmark = pytest.mark.slurm_multi


@pytest.fixture
def multi(cli_env: dict[str, str]) -> dict[str, str]:
    details = require_backend("slurm-multi")
    settings = Path(cli_env["CUBERUN_SETTINGS"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(textwrap.dedent(f"""
        platforms:
          slurm:
            runner: slurm
            partition: {details["partition"]}
            time: "00:10:00"
        """))
    return backend_env("slurm-multi")


def scontrol_elements(env: dict[str, str], array_id: str) -> list[dict[str, str]]:
    out = subprocess.run(["scontrol", "show", "job", "-o", array_id], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=60, check=False).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if fields.get("ArrayTaskId"):
            jobs.append(fields)
    return jobs


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace, "slurm")


def test_sweep_array_spreads_over_the_nodes(cli: CLI, multi: dict[str, str], tmp_path: Path) -> None:
    cube = sweep_cube(tmp_path / "sweep", nap=3)
    values = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]
    proc = cli("run", f"--mlcube={cube}", "--task=train", "--platform=slurm", "--sweep", "lr=" + ",".join(values), env=multi, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = records(cube / "workspace")
    check_sweep_outputs(cube / "workspace", values, found)
    (array_id,) = {r["details"]["array_job_id"] for r in found}
    nodes = {job["NodeList"] for job in scontrol_elements(multi, array_id)}
    assert len(nodes) >= 2, nodes  # 1 CPU per node: the six elements cannot all run on one


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False).stdout
    return [int(p) for p in out.split()]


def test_node_killed_mid_sweep_is_requeued_or_failed_never_complete_wrongly(cli_env: dict[str, str], multi: dict[str, str],
                                                                              tmp_path: Path) -> None:
    details = require_backend("slurm-multi")
    cube = sweep_cube(tmp_path / "sweep", nap=25)
    values = ["1", "2", "3"]
    err = tmp_path / "run.stderr"
    out = tmp_path / "run.stdout"
    env = {**cli_env, **multi}
    with err.open("wb") as e, out.open("wb") as o:
        run = subprocess.Popen([sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--task=train", "--platform=slurm",
                                "--sweep", "lr=" + ",".join(values)], env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    victim_ns = details["netns"][1]
    victim_node = details["nodes"][1]
    try:
        deadline = time.monotonic() + 120
        array_id = None
        while time.monotonic() < deadline and run.poll() is None:
            text = err.read_text()
            if "as Slurm array job " in text:
                array_id = text.split("as Slurm array job ", 1)[1].split()[0]
                running = [j for j in scontrol_elements(multi, array_id) if j.get("JobState") == "RUNNING"]
                if any(j.get("NodeList") == victim_node for j in running):
                    break
            time.sleep(0.5)
        assert array_id, err.read_text()
        # kill the node: every process in its network namespace (ours: the backend's slurmd and this test's job)
        victims = _netns_pids(victim_ns)
        assert victims
        own_net = os.readlink(f"/proc/{victims[0]}/ns/net")
        for pid in victims:
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == own_net:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError):
                pass
        code = run.wait(TIMEOUT)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.wait(120)
        # bring the node back (the backend's own script restarts only what is ours and missing)
        subprocess.run(["bash", str(REPO / "scripts" / "backends" / "slurm-multi.sh"), "up"], capture_output=True, timeout=300, check=False)
    stderr = err.read_text()
    assert "Traceback" not in stderr
    found = records(cube / "workspace")
    assert sorted(r["sweep"]["lr"] for r in found) == values, stderr
    for record in found:
        folder = cube / "workspace" / "sweeps" / f"lr={record['sweep']['lr']}"
        if record["status"] == "succeeded":
            # complete means really complete: this variant's own outputs, fingerprinted
            assert float((folder / "score.txt").read_text()) == float(record["sweep"]["lr"]) * 2
            assert set(record["outputs"]) == {"model", "score"}
        else:
            assert record["status"] == "failed" and "outputs" not in record, record
            assert record["details"]["job_state"] in ("NODE_FAIL", "REQUEUED", "PENDING", "FAILED", "CANCELLED"), record["details"]
    assert code == (0 if all(r["status"] == "succeeded" for r in found) else code) and (code == 0) == all(r["status"] == "succeeded" for r in found)
