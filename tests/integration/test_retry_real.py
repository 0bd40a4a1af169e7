"""Per-task time limits and retries (retry.py) for real: a flaky task (it fails while a marker
file in its output folder is missing, and leaves the marker) on local, docker and podman succeeds
on its second attempt; a task over its limit is stopped on docker and podman (exit 124, no
container of the run left), on Kubernetes (the Job's activeDeadlineSeconds: exit 124, Job and pods
gone) and on Slurm (`--time` in whole minutes, checked with scontrol; the job's cuberun stops the
task at the exact seconds, exit 124). Everything goes through the CLI in a subprocess.

The other runners' retry tests live in their own real-test modules, next to the fixtures that
build their images (tests/integration/retries.py holds the shared checks): test_apptainer_real,
test_charliecloud_runner, test_ssh_runner and test_backendai_real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, client_env, require_backend
from tests.conftest import CLI, run_records
from tests.integration import retries

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600

FLAKY_PY = retries.FLAKY_PY
FLAKY_ENTRY = retries.FLAKY_ENTRY  # the same program as one `python3 -c` entrypoint, for a container


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cuberun: error:")]


def check_second_attempt(cube: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Exit 0 on attempt 2 of 3 (tests/integration/retries.py), the marker in `workspace/out`."""
    return retries.check_second_attempt(cube / "workspace", proc, cube / "workspace" / "out" / "marker")


# -- local ----------------------------------------------------------------------------------------------
def local_cube(root: Path, retries: int) -> Path:
    root.mkdir()
    (root / "flaky.py").write_text(FLAKY_PY)
    (root / "mlcube.yaml").write_text(textwrap.dedent(f"""\
        name: flaky
        local: {{command: python3 flaky.py, env: current}}
        tasks:
          flaky:
            retries: {retries}
            parameters: {{outputs: {{out: out/}}}}
        """))
    return root


def test_local_flaky_task_succeeds_on_its_second_attempt(cli: CLI, tmp_path: Path) -> None:
    cube = local_cube(tmp_path / "flaky", retries=2)
    proc = cli("run", f"--mlcube={cube}", "--platform=local", "--retry-delay=0.1")
    check_second_attempt(cube, proc)


def test_local_retries_from_the_command_line_win_over_the_cube(cli: CLI, tmp_path: Path) -> None:
    cube = local_cube(tmp_path / "flaky", retries=2)
    proc = cli("run", f"--mlcube={cube}", "--platform=local", "--retries=0")
    assert proc.returncode == 3, proc.stderr
    (record,) = run_records(cube / "workspace")
    assert record["exit_code"] == 3 and "attempts" not in record
    assert record["limits"] == {"retries": 0, "retry_delay": 2.0, "retries_source": "cli"}
    assert (cube / "workspace" / "out" / "marker").read_text() == "x"  # one attempt only


def test_local_retries_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cuberun import api

    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "none.yaml"))
    cube = local_cube(tmp_path / "flaky", retries=0)
    result = api.run(cube, platform="local", retries=1, retry_delay=0)
    (run,) = result.tasks
    assert result.ok and (run.status, run.attempt) == ("succeeded", 2)
    assert [a["exit_code"] for a in run.attempts] == [3, 0]


GATED_PY = """\
import os, sys, time
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--out="))
with open(os.path.join(out, "starts"), "a") as f:
    f.write("x")
print("fault: READY", os.getpid(), os.getpid(), flush=True)
for _ in range(6000):  # at most 10 minutes: the test interrupts it long before
    time.sleep(0.1)
sys.exit(3)
"""


def test_ctrl_c_is_never_retried(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.faults.helpers import Background, interrupt

    cube = local_cube(tmp_path / "gated", retries=3)
    (cube / "flaky.py").write_text(GATED_PY)
    run = Background(["run", f"--mlcube={cube}", "--platform=local", "--retry-delay=0"], {**cli_env, "PYTHONPATH": str(REPO / "src")}, tmp_path)
    try:
        run.wait_ready()
        code, _ = interrupt(run, 2)
    finally:
        run.stop()
    assert code == 130, run.stderr
    assert (cube / "workspace" / "out" / "starts").read_text() == "x"  # one attempt, none after the interrupt
    (record,) = run_records(cube / "workspace")
    assert record["status"] == "interrupted" and [a["exit_code"] for a in record["attempts"]] == [130]
    assert "attempt 2" not in run.stderr


# -- docker and podman ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["docker", pytest.param("podman", marks=pytest.mark.podman)])
def engine(request: pytest.FixtureRequest) -> tuple[str, dict[str, str], str]:
    """The engine (docker or podman, the same runner), its environment and its local base image."""
    kind = str(request.param)
    details = require_backend(kind)
    env = client_env(kind)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return kind, env, str(details["base_image"])


def run_engine(engine: tuple[str, dict[str, str], str], tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kind, env, _ = engine
    full = {**env, "CUBERUN_SETTINGS": str(tmp / "settings.yaml"), "MLCUBE_SYSTEM_SETTINGS": str(tmp / "none.yaml"),
            "CUBERUN_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "cuberun", *args, f"--platform={kind}"], env=full, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


def containers_named(engine: tuple[str, dict[str, str], str], name: str) -> list[str]:
    """The engine's containers (running or not) of exactly this name."""
    kind, env, _ = engine
    listed = subprocess.run([kind, "ps", "-a", "--format", "{{.Names}}"], env=env, capture_output=True, text=True, timeout=60, check=True)
    return [n for n in listed.stdout.split() if n == name]


def test_container_flaky_task_succeeds_on_its_second_attempt(engine: tuple[str, dict[str, str], str], tmp_path: Path) -> None:
    kind, _, base = engine
    cube = tmp_path / "flaky"
    cube.mkdir()
    (cube / "mlcube.yaml").write_text(json.dumps({
        "name": "flaky", "docker": {"image": base},
        "tasks": {"flaky": {"entrypoint": FLAKY_ENTRY, "retries": 2, "parameters": {"outputs": {"out": "out/"}}}},
    }))
    record = check_second_attempt(cube, run_engine(engine, tmp_path, "run", f"--mlcube={cube}", "--retry-delay=0.1"))
    assert record["runner"] == "docker" and record["command"][0] == kind
    names = [a["container"] for a in record["attempts"]]
    assert len(set(names)) == 2  # each attempt had its own container, and none is left
    for name in names:
        assert not containers_named(engine, name)


def test_container_task_over_its_cube_time_limit_is_stopped(engine: tuple[str, dict[str, str], str], tmp_path: Path) -> None:
    kind, _, base = engine
    cube = tmp_path / "slow"
    cube.mkdir()
    (cube / "mlcube.yaml").write_text(json.dumps({
        "name": "slow", "docker": {"image": base},
        "tasks": {"slow": {"entrypoint": "python3 -c 'import time; print(\"started\", flush=True); time.sleep(300)'", "timeout": 3}},
    }))
    dry = ok(run_engine(engine, tmp_path, "run", f"--mlcube={cube}", "--dry-run"))
    assert "# slow: limits: timeout 3 s (cube)" in dry.stdout
    proc = run_engine(engine, tmp_path, "run", f"--mlcube={cube}")
    assert proc.returncode == 124, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "timed out after 3 s (tasks.slow.timeout)" in line
    (record,) = run_records(cube / "workspace")
    assert (record["status"], record["exit_code"], record["details"]["timed_out"]) == ("failed", 124, True)
    assert record["command"][0] == kind
    name = next(a.split("=", 1)[1] for a in record["command"] if a.startswith("--name="))
    assert not containers_named(engine, name)


# -- Kubernetes -----------------------------------------------------------------------------------------
K8S_CUBE = """\
name: NAME
docker:
  image: local/busybox:1.0
tasks:
  sleep:
    entrypoint: sh -c 'echo started; sleep 300' sleep
"""


def k8s_cube(tmp_path: Path, stem: str, text: str) -> tuple[Any, str, Path]:
    """The test cluster (as tests/integration/test_k8s_real.py uses it) and a cube of a fresh name."""
    from tests.integration.test_k8s_real import Cluster

    details = require_backend("k8s")
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {"k8s-test": {
        "runner": "k8s", "kubeconfig": details["kubeconfig"], "namespace": "default", "volume": "hostPath",
        "image_pull_policy": "Never", "poll_interval": 0.5, "start_timeout": 120}}}))
    env = {**os.environ, "CUBERUN_SETTINGS": str(settings), "MLCUBE_SYSTEM_SETTINGS": str(tmp_path / "none.yaml"),
           "CUBERUN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO / "src")}
    env.pop("KUBECONFIG", None)
    name = f"{stem}-{os.urandom(3).hex()}"
    cube = tmp_path / name
    (cube / "workspace").mkdir(parents=True)
    (cube / "mlcube.yaml").write_text(text.replace("NAME", name))
    return Cluster(details, env), name, cube


@pytest.mark.k8s
def test_k8s_job_over_its_deadline_is_stopped(tmp_path: Path) -> None:
    cluster, name, cube = k8s_cube(tmp_path, "deadline", K8S_CUBE)
    proc = cluster.cuberun("run", f"--mlcube={cube}", "--task=sleep", "--platform=k8s-test", "--timeout=8")
    assert proc.returncode == 124, f"{proc.stdout}\n{proc.stderr}"
    assert "does not apply" not in proc.stderr  # --timeout is mapped, not ignored
    (line,) = error_lines(proc.stderr)
    assert "ran past its activeDeadlineSeconds" in line
    (record,) = run_records(cube / "workspace")
    assert (record["exit_code"], record["details"]["timed_out"]) == (124, True)
    job = next(s["manifest"] for s in record["steps"] if s["purpose"] == "run")
    assert job["spec"]["activeDeadlineSeconds"] == 8
    cluster.assert_nothing_left(name)


K8S_FLAKY = """\
name: NAME
docker:
  image: local/busybox:1.0
tasks:
  flaky:
    retries: 1
    entrypoint: sh -c 'for a; do case "$a" in --out=*) o=$(echo "$a" | cut -d= -f2-);; esac; done; if [ -e "$o/marker" ]; then echo second; else mkdir -p "$o" && touch "$o/marker" && echo first && exit 3; fi' flaky
    parameters:
      outputs: {out: out/}
"""


@pytest.mark.k8s
def test_k8s_retries_are_the_jobs_backoff_limit(tmp_path: Path) -> None:
    cluster, name, cube = k8s_cube(tmp_path, "flaky", K8S_FLAKY)
    proc = cluster.cuberun("run", f"--mlcube={cube}", "--task=flaky", "--platform=k8s-test")
    ok(proc)
    (record,) = run_records(cube / "workspace")
    job = next(s["manifest"] for s in record["steps"] if s["purpose"] == "run")
    assert job["spec"]["backoffLimit"] == 1
    assert (record["attempt"], record["max_attempts"]) == (2, 2)
    attempts = record["attempts"]
    assert [a["exit_code"] for a in attempts] == [3, 0] and len({a["pod"] for a in attempts}) == 2  # a new pod per attempt
    assert "succeeded on attempt 2 of 2" in proc.stderr
    assert "first" in proc.stdout and "second" in proc.stdout
    cluster.assert_nothing_left(name)


# -- Slurm ----------------------------------------------------------------------------------------------
SLURM_CUBE = """\
name: nap
local:
  command: python3 nap.py
  env: current
tasks:
  nap:
    timeout: 4
"""


@pytest.mark.slurm
def test_slurm_job_gets_the_time_limit_and_the_task_is_stopped(cli: CLI, cli_env: dict[str, str], tmp_path: Path) -> None:
    details = require_backend("slurm")
    env = backend_env("slurm")
    settings = Path(cli_env["CUBERUN_SETTINGS"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"platforms:\n  slurm:\n    runner: slurm\n    partition: {details.get('partition') or 'debug'}\n    time: '00:05:00'\n")
    cube = tmp_path / "nap"
    (cube / "workspace").mkdir(parents=True)
    (cube / "mlcube.yaml").write_text(SLURM_CUBE)
    (cube / "nap.py").write_text("import time\nprint('napping', flush=True)\ntime.sleep(600)\n")
    dry = cli("run", f"--mlcube={cube}", "--platform=slurm", "--dry-run", env=env)
    assert "#SBATCH --time=1" in dry.stdout, dry.stdout  # 4 s: one minute, rounded up (over the platform's 5)
    proc = cli("run", f"--mlcube={cube}", "--platform=slurm", env=env, timeout=TIMEOUT)
    assert proc.returncode == 124, f"{proc.stdout}\n{proc.stderr}"
    (record,) = run_records(cube / "workspace", "slurm")
    job_id = record["details"]["job_id"]
    assert record["exit_code"] == 124 and record["details"]["job_state"] == "FAILED"
    # the job's cuberun stopped it at 4 s: worded and recorded as on every other runner (handshake `error` event's `timeout`)
    assert record["details"]["timed_out"] is True and record["details"]["timeout"] == 4, record["details"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and f"timed out after 4 s (tasks.nap.timeout) and was stopped in job {job_id}" in errors[0], proc.stderr
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=60, check=False).stdout
    if shown:
        assert "TimeLimit=00:01:00" in shown.split(), shown
    else:  # scontrol has forgotten the job: accounting has it
        acct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Timelimit"], env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=60, check=True).stdout
        assert acct.strip() == "00:01:00", acct


@pytest.mark.slurm
def test_slurm_retries_resubmit_the_job(cli: CLI, cli_env: dict[str, str], tmp_path: Path) -> None:
    details = require_backend("slurm")
    env = backend_env("slurm")
    settings = Path(cli_env["CUBERUN_SETTINGS"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"platforms:\n  slurm:\n    runner: slurm\n    partition: {details.get('partition') or 'debug'}\n    time: '00:05:00'\n")
    cube = local_cube(tmp_path / "flaky", retries=2)
    (cube / "workspace").mkdir()
    proc = cli("run", f"--mlcube={cube}", "--platform=slurm", "--retry-delay=0", env=env, timeout=TIMEOUT)
    ok(proc)
    (record,) = run_records(cube / "workspace", "slurm")
    assert (record["attempt"], record["max_attempts"]) == (2, 3)
    attempts = record["attempts"]
    assert [a["exit_code"] for a in attempts] == [3, 0]
    assert len({a["job_id"] for a in attempts}) == 2  # one job per attempt
    assert record["details"]["job_id"] == attempts[-1]["job_id"]
    assert "--retries=0" in " ".join(record["command"]) or any("--retries=0" in json.dumps(s) for s in record["steps"])
    assert (cube / "workspace" / "out" / "marker").read_text() == "xx"
    assert "succeeded on attempt 2 of 3" in proc.stderr
