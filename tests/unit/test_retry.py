"""Per-task time limits and retries (retry.py): the cube keys and their one-line errors, which
value wins, the bounded back-off, what --dry-run shows, the Slurm job script (--time in
minutes, the job's cuberun told not to retry) and the summary line. Pure: nothing runs here;
the real runs are in tests/integration/test_retry_real.py."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from cuberun.errors import SpecError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.retry import MAX_DELAY, backoff, limits, minutes
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube
from cuberun.summary import render
from tests.conftest import CLI


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))


def cube_with(tmp_path: Path, task_keys: str) -> Path:
    root = tmp_path / "cube"
    root.mkdir(exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent("""\
        name: limited
        docker: {image: example/limited:0.1}
        local: {command: python3 main.py}
        tasks:
          train:
        """) + textwrap.indent(textwrap.dedent(task_keys), "    ")
        + "    parameters: {outputs: {model: {type: directory, default: model}}}\n")
    return root


@pytest.mark.parametrize(("keys", "message"), [
    ("timeout: 0\n", "tasks.train.timeout: must be a number of seconds more than 0"),
    ("timeout: soon\n", "tasks.train.timeout: must be a number of seconds more than 0"),
    ("timeout: true\n", "tasks.train.timeout: must be a number of seconds more than 0"),
    ("retries: -1\n", "tasks.train.retries: must be a whole number from 0 to 100"),
    ("retries: 1.5\n", "tasks.train.retries: must be a whole number from 0 to 100"),
    ("retries: 101\n", "tasks.train.retries: must be a whole number from 0 to 100"),
    ("retires: 2\n", "unknown key 'retires' in task 'train'"),
])
def test_bad_limits_are_one_precise_error(tmp_path: Path, keys: str, message: str) -> None:
    root = cube_with(tmp_path, keys)
    with pytest.raises(SpecError) as err:
        load_cube(root)
    text = "\n".join(err.value.lines())
    assert message in text, text
    if "retires" in keys:
        assert "did you mean 'retries'" in text


def test_the_invocation_wins_over_the_cube(tmp_path: Path) -> None:
    task = load_cube(cube_with(tmp_path, "timeout: 30\nretries: 2\n")).tasks["train"]
    assert (task.timeout, task.retries) == (30.0, 2)
    assert limits(RunOptions(), task).to_json() == {"timeout": 30.0, "timeout_source": "cube", "retries": 2, "retry_delay": 2.0,
                                                    "retries_source": "cube"}
    mine = limits(RunOptions(timeout=5, retries=0, retry_delay=0.5), task)
    assert (mine.timeout, mine.retries, mine.delay, mine.timeout_source, mine.retries_source) == (5, 0, 0.5, "cli", "cli")
    assert limits(RunOptions(), load_cube(cube_with(tmp_path, "")).tasks["train"]).to_json() == {}


def test_backoff_doubles_and_is_bounded() -> None:
    assert [backoff(2, n) for n in (2, 3, 4, 5)] == [2, 4, 8, 16]
    assert backoff(2, 60) == MAX_DELAY
    assert backoff(0, 5) == 0
    assert (minutes(1), minutes(60), minutes(61), minutes(3600)) == (1, 1, 2, 60)


def test_dry_run_shows_the_limits(cli: CLI, tmp_path: Path) -> None:
    root = cube_with(tmp_path, "timeout: 30\n")
    proc = cli("run", f"--mlcube={root}", "--platform=docker", "--dry-run", "--retries=2", "--retry-delay=1")
    assert proc.returncode == 0, proc.stderr
    assert "# train: limits: timeout 30 s (cube), retries 2 (cli; back-off 1 s doubling, at most 300 s)" in proc.stdout
    proc = cli("run", f"--mlcube={root}", "--platform=docker", "--dry-run", "--json", "--timeout=5")
    assert json.loads(proc.stdout)["limits"] == {"train": {"timeout": 5.0, "timeout_source": "cli"}}


def test_bad_retries_on_the_command_line(cli: CLI, tmp_path: Path) -> None:
    root = cube_with(tmp_path, "")
    proc = cli("run", f"--mlcube={root}", "--platform=docker", "--dry-run", "--retries=-1")
    assert proc.returncode != 0 and "--retries" in proc.stderr and "Traceback" not in proc.stderr


def test_slurm_time_limit_in_minutes_and_the_job_cuberun_does_not_retry(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text(json.dumps({"platforms": {"slurm": {"runner": "slurm", "time": "02:00:00"}}}))
    root = cube_with(tmp_path, "timeout: 61\nretries: 1\n")
    cube = load_cube(root)
    runner = make_runner(cube, "slurm", RunOptions(), ())
    _, script = runner.script(resolve_task(cube, "train", {}, check_inputs=False))  # type: ignore[attr-defined]
    assert "#SBATCH --time=2\n" in script and "02:00:00" not in script  # the task's limit, rounded up to whole minutes
    assert "--retries=0" in script  # this side submits each attempt: the job's cuberun runs the task once
    runner = make_runner(load_cube(cube_with(tmp_path, "")), "slurm", RunOptions(), ())
    _, script = runner.script(resolve_task(runner.cube, "train", {}, check_inputs=False))  # type: ignore[attr-defined]
    assert "#SBATCH --time=02:00:00\n" in script and "--retries" not in script


def test_summary_line_names_the_attempt(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run = ws / ".cuberun" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"task": "train", "run_id": "r1", "status": "succeeded", "elapsed_s": 2.0,
                                                 "attempt": 2, "max_attempts": 3, "attempts": [], "parameters": {}}))
    from cuberun.summary import collect

    class Result:
        task, run_id, status, reason, sweep = "train", "r1", "succeeded", None, None

    text = render(collect(ws, [Result()], cwd=os.fspath(tmp_path)))
    assert "succeeded on attempt 2 of 3" in text


def test_a_time_limit_the_remote_cuberun_enforced_is_a_timeout_here() -> None:
    """ssh: exit 124 is a timeout only when the remote run's record says so (a task may exit 124 itself);
    each attempt names its remote run (the real run: tests/integration/test_ssh_runner.py)."""
    from types import SimpleNamespace

    from cuberun.process import Outcome
    from cuberun.retry import attempt_entry
    from cuberun.runners.ssh.runner import _timed_out

    far = {"exit_code": 124, "details": {"timed_out": True, "timeout": 3.0}}
    assert _timed_out(far, 124) == 3.0
    assert _timed_out(far, 1) is None  # not what the ssh session ended with
    assert _timed_out({"exit_code": 124, "details": {}}, 124) is None  # the task's own exit 124
    assert _timed_out(None, 124) is None  # no remote record fetched
    outcome = Outcome(124, 4.0, details={"remote": {"run_id": "20261202-1-flaky-abc"}, "timed_out": True, "timeout": 3.0})
    entry = attempt_entry(1, outcome, SimpleNamespace(values={}))  # type: ignore[arg-type]
    assert entry == {"attempt": 1, "exit_code": 124, "elapsed_s": 4.0, "timed_out": True, "remote_run": "20261202-1-flaky-abc"}


def test_which_runners_apply_a_time_limit_and_which_retry_natively() -> None:
    """A runner that cannot apply a time limit says so in one warning (retry.run_attempts) and in --dry-run."""
    from cuberun.runners.backendai import BackendAIRunner
    from cuberun.runners.charliecloud import CharliecloudRunner
    from cuberun.runners.docker import DockerRunner
    from cuberun.runners.k8s import KubernetesRunner
    from cuberun.runners.kubeflow import KubeflowRunner
    from cuberun.runners.local import LocalRunner
    from cuberun.runners.singularity import SingularityRunner
    from cuberun.runners.slurm import SlurmRunner
    from cuberun.runners.ssh import SSHRunner

    applied = [LocalRunner, DockerRunner, SingularityRunner, CharliecloudRunner, KubernetesRunner, SlurmRunner, SSHRunner, BackendAIRunner]
    assert all(r.enforces_timeout for r in applied)
    assert not KubeflowRunner.enforces_timeout
    assert [r for r in [*applied, KubeflowRunner] if r.native_retries] == [KubernetesRunner]


def test_migrate_refuses_to_drop_the_limits(cli: CLI, tmp_path: Path) -> None:
    root = cube_with(tmp_path, "timeout: 30\nretries: 1\n")
    proc = cli("migrate", str(root), "--to=container_config", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "tasks.train.timeout" in line and "tasks.train.retries" in line
