"""The HTCondor runner plugin (plugins/cuberun-htcondor) against a REAL HTCondor pool
(scripts/backends/htcondor.sh: condor_master and its daemons in the sid rootfs, on loopback).

cuberun finds the runner only through the `cuberun.runners` entry point of the installed plugin
(scripts/test.sh installs it). A settings file names the pool's user-side tools as the platform's
`bin_dir`: they run condor_submit/condor_q/condor_history/condor_rm inside the rootfs as the
non-root user cuberun-submit (HTCondor refuses jobs owned by root); the runner knows nothing of
that. The jobs run as cuberun-submit inside the rootfs and see the host's /tmp at the same path,
so cubes and workspaces live in the pool's world-writable jobs folder and cuberun runs with
umask 0 (its output folders must be writable by the job's user: on a real pool cuberun and the
jobs run as the same user). Every wait is bounded; only processes these tests started are
signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import require_backend
from tests.conftest import run_records
from tests.faults.helpers import error_line, processes_mentioning, wait_until

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
MARK = f"cuberun-htc-{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.htcondor

PROBE_SH = """\
#!/bin/sh
# probe MODE --key=value...: what the tests ask the job to do
mode=$1; shift
for a in "$@"; do
  case "$a" in
    --data=*) data=${a#--data=} ;;
    --out=*) out=${a#--out=} ;;
  esac
done
case "$mode" in
  copy) mkdir -p "$out" && cp -r "$data"/. "$out"/ && echo "copied $(ls "$data" | wc -l) files as $(id -un) in $(pwd)" ;;
  report) { echo "user=$(id -un)"; echo "greeting=$GREETING"; echo "price=$PRICE"; for a in "$@"; do echo "arg=$a"; done; } > "$out" ;;
  fail) echo "failing on purpose"; echo "to stderr" >&2; exit 3 ;;
  sleep) echo "$$" > "$out"; echo started; exec python3 -c 'import time; time.sleep(300)' "$MARK" ;;
  *) echo "unknown mode $mode"; exit 64 ;;
esac
"""

CUBE = """\
name: probe
local:
  command: sh probe.sh
tasks:
  copy:
    parameters:
      inputs: {data: data/}
      outputs: {out: copied/}
  report:
    parameters:
      outputs: {out: {type: file, default: report/report.txt}}
  fail:
    parameters: {}
  sleep:
    parameters:
      outputs: {out: {type: file, default: pid.txt}}
"""


class Pool:
    def __init__(self, details: dict[str, Any], root: Path, env: dict[str, str]) -> None:
        self.details = details
        self.root = root
        self.env = env

    def cuberun(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False, umask=0)

    def cube(self) -> Path:
        dest = Path(tempfile.mkdtemp(prefix="cube-", dir=self.root))
        os.chmod(dest, 0o777)
        (dest / "mlcube.yaml").write_text(CUBE)
        (dest / "probe.sh").write_text(PROBE_SH.replace("$MARK", MARK))
        data = dest / "workspace" / "data"
        data.mkdir(parents=True, mode=0o777)
        os.chmod(dest / "workspace", 0o777)
        (data / "a.txt").write_text("alpha\n")
        (data / "b with space.txt").write_text("beta\n")
        return dest

    def tool(self, *args: str) -> str:
        res = subprocess.run([str(Path(self.details["bin_dir"]) / args[0]), *args[1:]], capture_output=True, text=True,
                             timeout=120, check=False, cwd=self.root)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def in_queue(self, cluster: str) -> str:
        return self.tool("condor_q", cluster, "-af", "JobStatus").strip()


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    details = require_backend("htcondor")
    try:
        import cuberun_htcondor  # noqa: F401
    except ImportError:
        message = "the cuberun-htcondor plugin is not installed (scripts/test.sh installs plugins/cuberun-htcondor)"
        if os.environ.get("CUBERUN_REQUIRE_BACKENDS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    jobs = Path(details["condor_config"]).parent / "jobs"  # world-writable, seen by the pool at the same path
    root = Path(tempfile.mkdtemp(prefix="runner-", dir=jobs))
    os.chmod(root, 0o1777)
    here = tmp_path_factory.mktemp("htcondor")
    settings = here / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {"condor-test": {"runner": "htcondor", "bin_dir": details["bin_dir"]}}}))
    env = {**os.environ, "CUBERUN_SETTINGS": str(settings), "MLCUBE_SYSTEM_SETTINGS": str(here / "none.yaml"),
           "CUBERUN_CACHE_DIR": str(here / "cache"), "GREETING": "from the host"}
    try:
        yield Pool(details, root, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(pool: Pool, cube: Path, task: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return pool.cuberun("run", "--mlcube", str(cube), "--task", task, "--platform", "condor-test", *extra)


def test_hello_world_unmodified_runs_as_a_vanilla_job(pool: Pool) -> None:
    """The example cube as shipped (its Dockerfile's ENTRYPOINT, mapped to the cube's files, is
    the job's program), on the platform the plugin's name provides (no settings entry)."""
    cube = Path(tempfile.mkdtemp(prefix="hello-", dir=pool.root))
    shutil.copytree(REPO / "examples" / "hello_world", cube, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".cuberun", "chats"))
    subprocess.run(["chmod", "-R", "a+rwX", str(cube)], check=True)
    proc = ok(pool.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--platform", "htcondor",
                           f"-Prunner.bin_dir={pool.details['bin_dir']}"))
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    assert chat.read_text() == "Hi, Alice! Nice to meet you.\n"
    assert "Hi, Alice!" in proc.stdout  # the job's stdout streamed back
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded" and record["runner"] == "htcondor" and record["details"]["cluster"].isdigit()
    cluster = record["details"]["cluster"]
    assert pool.tool("condor_history", cluster, "-limit", "1", "-af", "Owner", "JobStatus", "ExitCode").split() == \
        [pool.details["submit_user"], "4", "0"]
    again = ok(pool.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--platform", "htcondor",
                            f"-Prunner.bin_dir={pool.details['bin_dir']}"))
    assert "skipping task 'hello'" in again.stderr


@pytest.mark.parametrize("files", ["shared", "transfer"])
def test_directory_in_directory_out(pool: Pool, files: str) -> None:
    cube = pool.cube()
    proc = ok(run(pool, cube, "copy", f"-Prunner.files={files}"))
    out = cube / "workspace" / "copied"
    assert (out / "a.txt").read_text() == "alpha\n" and (out / "b with space.txt").read_text() == "beta\n"
    assert f"copied 2 files as {pool.details['submit_user']}" in proc.stdout
    # shared: the job runs in the cube folder; transfer: in HTCondor's scratch folder on the execute side
    assert (f"in {cube}" in proc.stdout) == (files == "shared"), proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    sub = Path(record["details"]["submit_file"]).read_text()
    assert f"should_transfer_files = {'NO' if files == 'shared' else 'YES'}" in sub
    assert "copied 2 files" in Path(record["log"]).read_text()
    assert "skipping task 'copy'" in ok(run(pool, cube, "copy", f"-Prunner.files={files}")).stderr


def test_arguments_and_environment_reach_the_job_verbatim(pool: Pool) -> None:
    """HTCondor's own quoting (not a shell's): spaces, quotes and $ arrive as written."""
    cube = pool.cube()
    ok(run(pool, cube, "report", "-Prunner.env_vars={GREETING: 'hello \"big\" world', PRICE: '$5 or $(x)'}",
           "-Prunner.command=[sh, probe.sh, report, \"--data=it's\", $HOME]"))
    lines = (cube / "workspace" / "report" / "report.txt").read_text().splitlines()
    assert lines[:3] == [f"user={pool.details['submit_user']}", 'greeting=hello "big" world', "price=$5 or $(x)"]
    assert "arg=--data=it's" in lines and "arg=$HOME" in lines


def test_failing_task_propagates_its_exit_code(pool: Pool) -> None:
    cube = pool.cube()
    proc = run(pool, cube, "fail")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "failing on purpose" in proc.stdout and "to stderr" in proc.stdout  # both streams streamed
    line = error_line(proc.stderr)
    assert "exited with code 3" in line and ".err" in line
    [record] = records(cube / "workspace")
    assert record["status"] == "failed" and record["exit_code"] == 3


def test_ctrl_c_removes_the_job(pool: Pool) -> None:
    cube = pool.cube()
    pid_file = cube / "workspace" / "pid.txt"
    here = Path(tempfile.mkdtemp(prefix="bg-", dir=pool.root))
    with (here / "out").open("wb") as out, (here / "err").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cuberun", "run", "--mlcube", str(cube), "--task", "sleep", "--platform", "condor-test"],
                                env=pool.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, umask=0)
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "" and bool(processes_mentioning(MARK)), 180, 0.2), \
            (here / "err").read_text()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    stderr = (here / "err").read_text()
    assert code == 130, stderr
    assert "removing HTCondor job" in stderr
    assert "interrupted (SIGINT)" in error_line(stderr)
    [record] = records(cube / "workspace")
    assert record["status"] != "succeeded" and record["exit_code"] == 130
    cluster = record["details"]["cluster"] if record.get("details") else stderr.split("HTCondor job ", 1)[1].split(".", 1)[0]
    assert pool.in_queue(cluster) == "", "the job is still in the queue"
    assert pool.tool("condor_history", cluster, "-limit", "1", "-af", "JobStatus").strip() == "3"  # Removed
    assert wait_until(lambda: not processes_mentioning(MARK), 30), processes_mentioning(MARK)
    assert took < 120


def test_a_job_kept_in_the_queue_by_leave_in_queue_ends_there(pool: Pool) -> None:
    """`leave_in_queue` (an expression: -json prints it as its text) keeps the completed job in
    the queue: cuberun takes Completed there as the end (its exit code from the queue's ad)
    instead of waiting for a move to the history that never comes (max_wait would end it, 124)."""
    cube = pool.cube()
    proc = run(pool, cube, "fail", "-Prunner.submit={leave_in_queue: 'JobStatus == 4'}", "-Prunner.max_wait=120")
    [record] = records(cube / "workspace")
    cluster = record["details"]["cluster"]
    try:
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "exited with code 3" in error_line(proc.stderr)
        assert pool.in_queue(cluster) == "4"  # still there: cuberun did not wait for it to leave
    finally:
        subprocess.run([str(Path(pool.details["bin_dir"]) / "condor_rm"), cluster], capture_output=True, timeout=120, check=False, cwd=pool.root)


def test_missing_executable_is_one_line_and_leaves_no_job(pool: Pool) -> None:
    cube = pool.cube()
    proc = run(pool, cube, "copy", "-Prunner.command=/nonexistent/bin/prog")
    assert proc.returncode == 125, proc.stdout + proc.stderr
    line = error_line(proc.stderr)
    assert "Held" in line and "/nonexistent/bin/prog" in line and "removed it" in line
    [record] = records(cube / "workspace")
    assert record["status"] == "failed"
    cluster = record["details"]["cluster"]
    assert pool.in_queue(cluster) == ""
    assert not (cube / "workspace" / "copied" / "a.txt").exists()


def test_condor_submit_refusal_is_one_line(pool: Pool) -> None:
    """A submit description condor_submit itself refuses (a bad requirements expression)."""
    cube = pool.cube()
    proc = run(pool, cube, "copy", "-Prunner.requirements=(((")
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "condor_submit refused" in error_line(proc.stderr)


@pytest.mark.parametrize("files", ["shared", "transfer"])
def test_sweep_is_one_cluster_one_process_per_variant(pool: Pool, files: str) -> None:
    """shared: ONE cluster (`queue ... from`), process i = variant i; transfer: each variant moves
    other files, so one submission per variant (outputs under `sweeps/lr=...`: the `=` escaped in
    transfer_output_remaps)."""
    from tests.integration.test_slurm_runner import SWEEP_APP, SWEEP_YAML

    cube = Path(tempfile.mkdtemp(prefix="sweep-", dir=pool.root))
    (cube / "mlcube.yaml").write_text(textwrap.dedent(SWEEP_YAML))
    (cube / "train.py").write_text(textwrap.dedent(SWEEP_APP))
    (cube / "workspace").mkdir()
    (cube / "workspace" / "params.yaml").write_text("lr: 0.5\nnap: 0\n")
    subprocess.run(["chmod", "-R", "a+rwX", str(cube)], check=True)
    values = ["0.1", "0.2", "0.3"]
    proc = ok(pool.cuberun("run", "--mlcube", str(cube), "--task", "train", "--platform", "condor-test", "--sweep", "lr=" + ",".join(values), f"-Prunner.files={files}"))
    found = records(cube / "workspace")
    by_value = {r["sweep"]["lr"]: r for r in found}
    assert len(found) == 3
    if files == "shared":
        assert len({r["details"]["cluster"] for r in found}) == 1  # ONE submission
        assert [by_value[v]["details"]["proc"] for v in values] == [0, 1, 2]  # process i = variant i
    else:
        assert len({r["details"]["cluster"] for r in found}) == 3
    for value in values:
        folder = cube / "workspace" / "sweeps" / f"lr={value}"
        assert (folder / "model" / "weights.txt").read_text() == f"lr={value}\n"
        assert float((folder / "score.txt").read_text()) == float(value) * 2
        assert by_value[value]["status"] == "succeeded"
    assert proc.stdout.count("trained") == 3
