"""The Slurm runner against the real single-node test cluster (scripts/backends/slurm.sh).

Every test runs `python -m cuberun` for real with a settings file defining the `slurm` platform
(partition debug, 5 minute limit) and SLURM_CONF from backends.json. Jobs run the task with the
local platform on the shared filesystem. Only jobs these tests submitted are ever cancelled.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cuberun.handshake import MARKER
from cuberun.runners import nested
from tests.conftest import run_records

try:
    from tests.backends import backend_env, require_backend
    from tests.conftest import CLI, EXAMPLES
except ModuleNotFoundError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from backends import backend_env, require_backend  # type: ignore[no-redef]
    from conftest import CLI, EXAMPLES  # type: ignore[no-redef]

pytestmark = pytest.mark.slurm

TIMEOUT = 180

PROBE_YAML = """
name: probe
local:
  command: python3 probe.py
  env: current
tasks:
  fail:
    parameters:
      outputs: {out: {type: file, default: fail.txt}}
  nap:
    parameters:
      outputs: {out: {type: file, default: nap.txt}}
  echo:
    parameters:
      inputs: {src: {type: file, default: "in put's \\"q\\".txt"}}
      outputs: {out: {type: file, default: "out dir/echo.txt"}}
"""

PROBE_APP = """
import os
import sys
import time

task = sys.argv[1]
opts = dict(a[2:].split("=", 1) for a in sys.argv[2:])
print("probe", task, flush=True)
if task == "fail":
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if task == "nap":
    for i in range(1200):
        print("tick", i, flush=True)
        time.sleep(0.25)
if task == "echo":
    os.makedirs(os.path.dirname(opts["out"]), exist_ok=True)
    with open(opts["src"]) as src, open(opts["out"], "w") as out:
        out.write(src.read().strip().upper() + " / " + os.environ.get("GREETING", "-") + "\\n")
"""


@pytest.fixture
def slurm(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """SLURM_CONF etc. for the CLI, and the `slurm` platform in its settings file."""
    details = require_backend("slurm")
    env = backend_env("slurm")
    settings = Path(cli_env["CUBERUN_SETTINGS"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(
        textwrap.dedent(
            f"""
            platforms:
              slurm:
                runner: slurm
                partition: {details.get("partition") or "debug"}
                time: "00:05:00"
            """
        )
    )
    return env


def slurm_cmd(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)


def job_state(env: dict[str, str], job_id: str) -> str:
    out = slurm_cmd(env, "scontrol", "show", "job", "-o", job_id).stdout
    for token in out.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return "?"


def records(workspace: Path, platform: str = "slurm") -> list[dict[str, Any]]:
    return run_records(workspace, platform)


def probe_cube(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(PROBE_YAML))
    (root / "probe.py").write_text(textwrap.dedent(PROBE_APP))
    (root / "workspace").mkdir()
    (root / "workspace" / "in put's \"q\".txt").write_text("hello there\n")
    return root


def check(proc: subprocess.CompletedProcess[str], code: int = 0) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_hello_world_chain_submitted_with_afterok(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = tmp_path / "hello_world"
    shutil.copytree(EXAMPLES / "hello_world", cube, ignore=shutil.ignore_patterns(".cuberun", "chats"))
    proc = cli("run", f"--mlcube={cube}", "--task=hello,bye", "--platform=slurm", env=slurm, timeout=TIMEOUT)
    check(proc)
    chat = (cube / "workspace" / "chats" / "chat_with_alice.txt").read_text().splitlines()
    assert chat == ["Hi, Alice! Nice to meet you.", "Bye, Alice! Talk to you soon."]
    assert "Hi, Alice!" in proc.stdout and "Bye, Alice!" in proc.stdout  # the job logs, streamed
    hello, bye = records(cube / "workspace")
    assert (hello["task"], bye["task"]) == ("hello", "bye")
    assert hello["status"] == bye["status"] == "succeeded"
    hello_id, bye_id = hello["details"]["job_id"], bye["details"]["job_id"]
    assert bye["details"]["dependency"] == f"afterok:{hello_id}"
    assert hello["details"]["job_state"] == "COMPLETED" and hello["details"]["nodes"]
    assert f"submitted task 'bye' as Slurm job {bye_id} after job {hello_id}" in proc.stderr
    assert job_state(slurm, bye_id) == "COMPLETED"
    assert Path(bye["details"]["job_log"]).read_text().count("Bye, Alice!") == 1
    for record in (hello, bye):  # a job log ends with its cuberun's `end` event: its end is known without a wait (slurm/logs.py)
        last = Path(record["details"]["job_log"]).read_bytes().splitlines()[-1]
        assert last.startswith(MARKER) and nested.events(last).exit_code == 0, last


@pytest.mark.slow
def test_matmul_runs_as_a_job(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = tmp_path / "matmul"
    shutil.copytree(EXAMPLES / "matmul", cube, ignore=shutil.ignore_patterns(".cuberun", "matmul.txt"))
    proc = cli("run", f"--mlcube={cube}", "--platform=slurm", env=slurm, timeout=600)
    check(proc)
    assert (cube / "workspace" / "matmul.txt").stat().st_size > 0
    (record,) = records(cube / "workspace")
    assert record["status"] == "succeeded" and record["details"]["job_id"].isdigit()
    assert record["details"]["inner_run_id"]  # the job's own cuberun run, on the compute node


def test_paths_with_spaces_and_quotes_and_p_values(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "my cube's \"dir\"")
    proc = cli(
        "run", f"--mlcube={cube}", "--task=echo", "--platform=slurm", "-Plocal.env_vars.GREETING=hi there",
        "out=other dir/it's.txt", env=slurm, timeout=TIMEOUT,
    )  # fmt: skip
    check(proc)
    assert (cube / "workspace" / "other dir" / "it's.txt").read_text() == "HELLO THERE / hi there\n"


def test_task_exit_code_and_job_state(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "probe")
    proc = cli("run", f"--mlcube={cube}", "--task=fail", "--platform=slurm", env=slurm, timeout=TIMEOUT)
    check(proc, 3)
    (record,) = records(cube / "workspace")
    job_id = record["details"]["job_id"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert errors == [f"cuberun: error: task 'fail' job {job_id} ended FAILED (exit 3:0); log: {record['details']['job_log']} (run {record['run_id']})"]
    assert "failing on purpose" in proc.stdout
    assert (record["status"], record["exit_code"], record["details"]["job_state"]) == ("failed", 3, "FAILED")


def test_chain_stops_after_a_failure(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "probe")
    proc = cli("run", f"--mlcube={cube}", "--task=fail,echo", "--platform=slurm", env=slurm, timeout=TIMEOUT)
    check(proc, 3)
    fail, echo = records(cube / "workspace")
    assert (fail["task"], fail["status"], echo["task"], echo["status"]) == ("fail", "failed", "echo", "cancelled")
    second = proc.stderr.split("after job ", 1)[0].rsplit("Slurm job ", 1)[1].split()[0]
    assert job_state(slurm, second) == "CANCELLED"  # never left pending on a dependency that cannot be met
    assert not (cube / "workspace" / "out dir" / "echo.txt").exists()


def test_ctrl_c_cancels_the_job(cli_env: dict[str, str], slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "probe")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--task=nap", "--platform=slurm"],
            env={**cli_env, **slurm}, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=str(tmp_path),
        )  # fmt: skip
    job_id = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "tick 1" not in out.read_text() and proc.poll() is None:
            time.sleep(0.2)
        assert "tick 1" in out.read_text(), err.read_text()  # the job runs and its output streams
        job_id = err.read_text().split("as Slurm job ", 1)[1].split()[0]
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        state = job_state(slurm, job_id)
        while state != "CANCELLED" and time.monotonic() - sent < 120:  # a hang guard, not a timing check
            time.sleep(0.2)
            state = job_state(slurm, job_id)
        assert state == "CANCELLED"
        assert code == 130, err.read_text()
        assert slurm_cmd(slurm, "squeue", "-h", "-j", job_id).stdout.strip() == ""
        (record,) = records(cube / "workspace")
        assert (record["status"], record["exit_code"], record["details"]["job_id"]) == ("interrupted", 130, job_id)
        assert f"Slurm job {job_id} is CANCELLED" in err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if job_id is not None and job_state(slurm, job_id) in ("PENDING", "RUNNING"):
            slurm_cmd(slurm, "scancel", job_id)  # the job this test submitted, if anything went wrong


def test_unknown_partition_is_one_line(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "probe")
    proc = cli("run", f"--mlcube={cube}", "--task=echo", "--platform=slurm", "-Prunner.partition=nope", env=slurm, timeout=TIMEOUT)
    check(proc, 125)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("cuberun: error: Slurm partition 'nope' does not exist (sbatch: Batch job submission failed: Invalid partition name")
    assert errors[0].endswith("Hint: use one of: debug (sinfo -h -o %P)")


def test_inspect_and_dry_run(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = probe_cube(tmp_path / "probe")
    proc = cli("inspect", f"--mlcube={cube}", "--platform=slurm", env=slurm, timeout=TIMEOUT)
    check(proc)
    info = json.loads(proc.stdout)
    assert info["partitions"]["debug"]["default"] is True
    assert info["sbatch_version"].startswith("slurm")
    assert "is UP" in info["controller"]
    proc = cli("run", f"--mlcube={cube}", "--task=echo", "--platform=slurm", "--dry-run", env=slurm, timeout=TIMEOUT)
    check(proc)
    assert "#SBATCH --partition=debug" in proc.stdout and "\nsbatch --parsable " in proc.stdout
    assert not (cube / "workspace" / ".cuberun" / "slurm").exists()  # a dry run writes nothing


# -- sweeps as job arrays ------------------------------------------------------------------------
SWEEP_YAML = """
name: sweepy
local:
  command: python3 train.py
  env: current
tasks:
  train:
    parameters:
      inputs: {params: {type: file, default: params.yaml}}
      outputs: {model: model/, score: {type: file, default: score.txt}}
"""

SWEEP_APP = """
import os
import sys
import time

opts = dict(a[2:].split("=", 1) for a in sys.argv[2:])
params = dict(line.split(": ", 1) for line in open(opts["params"]).read().splitlines() if ": " in line)
print("training with lr", params["lr"], flush=True)
time.sleep(float(params.get("nap", "0")))
os.makedirs(opts["model"], exist_ok=True)
with open(os.path.join(opts["model"], "weights.txt"), "w") as fh:
    fh.write("lr=" + params["lr"] + "\\n")
with open(opts["score"], "w") as fh:
    fh.write(repr(float(params["lr"]) * 2) + "\\n")
print("trained", params["lr"], flush=True)
"""


def sweep_cube(root: Path, nap: float = 0) -> Path:
    """A task that reads its YAML parameter file (lr, nap) and writes model/ and score.txt."""
    root.mkdir(parents=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(SWEEP_YAML))
    (root / "train.py").write_text(textwrap.dedent(SWEEP_APP))
    (root / "workspace").mkdir()
    (root / "workspace" / "params.yaml").write_text(f"lr: 0.5\nnap: {nap}\n")
    return root


def check_sweep_outputs(workspace: Path, values: list[str], records_: list[dict[str, Any]]) -> None:
    """Every variant: its own output paths with the right contents, and one complete record."""
    assert sorted(r["sweep"]["lr"] for r in records_) == sorted(values)
    for value in values:
        folder = workspace / "sweeps" / f"lr={value}"
        assert float((folder / "model" / "weights.txt").read_text().removeprefix("lr=")) == float(value)  # the variant's parameter file
        assert float((folder / "score.txt").read_text()) == float(value) * 2
    for record in records_:
        assert (record["status"], record["exit_code"]) == ("succeeded", 0), record
        assert set(record["outputs"]) == {"model", "score"} and all(o["sha256"] for o in record["outputs"].values())
        assert record["parameters"]["score"]["path"] == str(workspace / "sweeps" / f"lr={record['sweep']['lr']}" / "score.txt")
        assert record["details"]["job_state"] == "COMPLETED" and record["details"]["inner_run_id"]
    assert not (workspace / "score.txt").exists(), "variants never write the unswept outputs"


def test_sweep_of_20_values_is_one_job_array(cli: CLI, slurm: dict[str, str], tmp_path: Path) -> None:
    cube = sweep_cube(tmp_path / "sweep")
    values = [f"0.{i:02d}" for i in range(1, 21)]
    proc = cli("run", f"--mlcube={cube}", "--task=train", "--platform=slurm", "--sweep", "lr=" + ",".join(values), env=slurm, timeout=TIMEOUT)
    check(proc)
    ws = cube / "workspace"
    found = records(ws)
    assert len(found) == 20
    array_ids = {r["details"]["array_job_id"] for r in found}
    assert len(array_ids) == 1, array_ids  # ONE submission ...
    (array_id,) = array_ids
    assert proc.stderr.count("as Slurm array job") == 1 and proc.stderr.count("submitted ") == 1
    by_value = {r["sweep"]["lr"]: r for r in found}
    assert [by_value[v]["details"]["array_task_id"] for v in values] == list(range(20))  # ... element i = value i
    assert [by_value[v]["details"]["job_id"] for v in values] == [f"{array_id}_{i}" for i in range(20)]
    assert len({r["invocation_id"] for r in found}) == 1 and len({r["run_id"] for r in found}) == 20
    check_sweep_outputs(ws, values, found)
    assert f"[{array_id}_7] trained 0.08" in proc.stdout  # each element's log streamed, after its id
    assert "trained 0.08" in Path(by_value["0.08"]["log"]).read_text()  # and into its own run log
    assert Path(by_value["0.08"]["details"]["job_log"]).name == f"train-{array_id}_7.log"
    again = cli("run", f"--mlcube={cube}", "--task=train", "--platform=slurm", "--sweep", "lr=" + ",".join(values), env=slurm, timeout=TIMEOUT)
    check(again)
    assert again.stderr.count("cuberun: skipping task 'train [lr=") == 20 and "submitted" not in again.stderr
    assert len(records(ws)) == 20


def test_ctrl_c_cancels_the_whole_array(cli_env: dict[str, str], slurm: dict[str, str], tmp_path: Path) -> None:
    cube = sweep_cube(tmp_path / "sweep", nap=300)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--task=train", "--platform=slurm", "--sweep", "lr=1,2,3,4"],
            env={**cli_env, **slurm}, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=str(tmp_path),
        )  # fmt: skip
    array_id = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "training with lr" not in out.read_text() and proc.poll() is None:
            time.sleep(0.2)
        assert "training with lr" in out.read_text(), err.read_text()  # elements run (the cluster has 2 CPUs: others are pending)
        array_id = err.read_text().split("as Slurm array job ", 1)[1].split()[0]
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=60)
        assert code == 130, err.read_text()
        while slurm_cmd(slurm, "squeue", "-h", "-j", array_id).stdout.strip() and time.monotonic() - sent < 120:  # a hang guard
            time.sleep(0.2)
        assert slurm_cmd(slurm, "squeue", "-h", "-j", array_id).stdout.strip() == ""
        states = [t.split("=", 1)[1] for t in slurm_cmd(slurm, "scontrol", "show", "job", "-o", array_id).stdout.split() if t.startswith("JobState=")]
        assert states and set(states) == {"CANCELLED"}, states
        found = records(cube / "workspace")
        assert len(found) == 4
        assert {(r["status"], r["exit_code"], r["details"]["job_state"], r["details"]["array_job_id"]) for r in found} == {("interrupted", 130, "CANCELLED", array_id)}
        assert sorted(r["details"]["array_task_id"] for r in found) == [0, 1, 2, 3]
        assert f"cancelling Slurm array job {array_id}" in err.read_text()
        assert not list((cube / "workspace" / ".cuberun" / "state").glob("train@*.json"))  # nothing recorded as complete
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if array_id is not None and slurm_cmd(slurm, "squeue", "-h", "-j", array_id).stdout.strip():
            slurm_cmd(slurm, "scancel", array_id)  # the array this test submitted, if anything went wrong
