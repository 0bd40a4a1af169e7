"""Golden tests of the Slurm runner's job script and sbatch command (pure), its parsers and exit
code mapping, and its run/chain logic against fake Slurm clients (no cluster needed)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import BackendError, RunnerUnavailable, UsageError
from cuberun.execute import make_runner, run_tasks
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.slurm import SlurmRunner
from cuberun.runners.slurm.jobs import (
    SBATCH_MISSING,
    JobScriptStep,
    JobSpec,
    array_elements,
    expand_task_ids,
    job_exit_code,
    normalize_memory,
    parse_exit,
    parse_job_line,
    parse_sacct,
    parse_time_limit,
    render_job_script,
    sbatch_quote,
)
from cuberun.runners.slurm.logs import _search_jobcomp
from cuberun.spec.load import load_cube

HELLO = """
name: hello_world
platform: {accelerator_count: 2, host_memory_gb: 8}
docker: {image: cuberun/hello_world:0.1}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
  bye:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""

# what `scontrol show job -o` prints on Slurm 22.05 (from the test cluster), with the state fields as placeholders
SCONTROL_LINE = (
    "JobId={id} JobName=cuberun-hello_world-hello UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901755 Nice=0 "
    "Account=(null) QOS=(null) JobState={state} Reason={reason} Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 "
    "ExitCode={exit} RunTime=00:05:01 TimeLimit={limit} TimeMin=N/A SubmitTime=2026-11-22T11:24:50 EligibleTime=2026-11-22T11:24:50 "
    "AccrueTime=2026-11-22T11:24:50 StartTime=2026-11-22T11:24:51 EndTime=2026-11-22T11:29:52 Deadline=N/A SuspendTime=None "
    "SecsPreSuspend=0 LastSchedEval=2026-11-22T11:24:51 Scheduler=Backfill Partition=debug AllocNode:Sid=localhost:29272 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=1G,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 "
    "MinMemoryCPU=1G MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) "
    "Network=(null) Command=/tmp/my dir/JobState=FAKE.sbatch WorkDir=/tmp/my dir StdErr=/tmp/my dir/x-{id}.log StdIn=/dev/null "
    "StdOut=/tmp/my dir/x-{id}.log Power="
)



def START(task: str, run_id: str) -> str:
    """The handshake line the job's cuberun writes when its task starts (the outer one reads the run id from it)."""
    return "cuberun-handshake: " + json.dumps({"v": 1, "event": "start", "task": task, "run_id": run_id}) + "\n"

def scontrol_line(job_id: str, state: str, exit_code: str = "0:0", reason: str = "None", limit: str = "00:05:00") -> str:
    return SCONTROL_LINE.format(id=job_id, state=state, exit=exit_code, reason=reason, limit=limit)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    yield


def make_cube(root: Path, text: str = HELLO) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text))
    (root / "workspace" / "names").mkdir(parents=True, exist_ok=True)
    (root / "workspace" / "names" / "alice.txt").write_text("Alice\n")
    return root


def settings(tmp_path: Path, **entry: Any) -> None:
    (tmp_path / "settings.yaml").write_text(json.dumps({"platforms": {"slurm": {"runner": "slurm", **entry}}}))


def runner_for(
    root: Path, *, params: Sequence[str] = (), options: RunOptions | None = None, workspace: str | None = None
) -> tuple[SlurmRunner, Any]:
    cube = load_cube(root, workspace=workspace, overrides=params)
    runner = make_runner(cube, "slurm", options or RunOptions(), params)
    assert isinstance(runner, SlurmRunner)
    return runner, cube


def resolved(cube: Any, task: str = "hello", overrides: dict[str, str] | None = None) -> Any:
    return resolve_task(cube, task, overrides or {})


# -- golden: the job script and the sbatch command ------------------------------------------------
def test_job_script_from_platform_block_and_settings(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    assert shlex.quote(str(tmp_path)) == str(tmp_path)  # the golden text below assumes an unquoted tmp path
    settings(
        tmp_path,
        partition="gpu",
        account="proj1",
        qos="high",
        time="01:00:00",
        cpus_per_task=4,
        sbatch_args=["--constraint=a100", "--comment=nightly run"],
        cuberun="cuberun",
    )
    runner, cube = runner_for(root)
    steps = runner.run_steps(resolved(cube))
    ws = f"{root}/workspace"
    script, submit = steps
    assert isinstance(script, JobScriptStep)
    assert script.purpose == "job-script"
    assert script.content == textwrap.dedent(
        f"""\
        #!/bin/bash
        # cuberun: task hello of cube hello_world
        #SBATCH --job-name=cuberun-hello_world-hello
        #SBATCH --partition=gpu
        #SBATCH --account=proj1
        #SBATCH --qos=high
        #SBATCH --time=01:00:00
        #SBATCH --cpus-per-task=4
        #SBATCH --mem=8G
        #SBATCH --gres=gpu:2
        #SBATCH --output={ws}/.cuberun/slurm/hello-%j.log
        #SBATCH --chdir={ws}
        #SBATCH --constraint=a100 '--comment=nightly run'
        set -euo pipefail
        export CUBERUN_OUTPUT_LOCKS=held-by-parent
        exec cuberun run \\
            --mlcube={root}/mlcube.yaml \\
            --task=hello \\
            --platform=local \\
            --workspace={ws} \\
            --no-deps \\
            --force \\
            --handshake=1
        """
    )
    assert script.path.startswith(f"{ws}/.cuberun/slurm/hello-") and script.path.endswith(".sbatch")
    assert submit.purpose == "submit"
    assert submit.argv == ("sbatch", "--parsable", script.path)
    # --dry-run prints a here-doc that recreates the file, then the submission
    assert script.display().splitlines()[0] == f"mkdir -p {ws}/.cuberun/slurm && cat > {script.path} <<'CUBERUN_JOB_SCRIPT'"
    assert script.display().endswith(script.content + "CUBERUN_JOB_SCRIPT")
    assert submit.display() == f"sbatch --parsable {script.path}"
    assert script.to_json()["content"] == script.content


def test_job_script_quotes_paths_forwards_overrides_and_options(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "my cube's \"dir\"")
    settings(tmp_path, partition="debug", platform="docker", cuberun=["/opt/cube run/bin/cuberun", "--debug"])
    options = RunOptions(gpus="1", memory="4g", network="none", cpus="0-3", mount="ro", allow_missing_inputs=True, allow_run_args=True)
    params = ["docker.image=x:1", "runner.time=00:10:00"]
    runner, cube = runner_for(root, params=params, options=options)
    (root / "workspace" / "in dir").mkdir()
    (root / "workspace" / "in dir" / "bob's.txt").write_text("Bob\n")
    rt = resolved(cube, overrides={"name": "in dir/bob's.txt"})
    script = runner.run_steps(rt)[0]
    assert isinstance(script, JobScriptStep)
    ws = f"{root}/workspace"
    q = shlex.quote
    assert script.content == "\n".join(
        [
            "#!/bin/bash",
            "# cuberun: task hello of cube hello_world",
            "#SBATCH --job-name=cuberun-hello_world-hello",
            "#SBATCH --partition=debug",
            "#SBATCH --time=00:10:00",
            "#SBATCH --mem=4G",
            "#SBATCH --gres=gpu:1",
            f"#SBATCH --output={q(ws + '/.cuberun/slurm/hello-%j.log')}",
            f"#SBATCH --chdir={q(ws)}",
            "set -euo pipefail",
            "export CUBERUN_OUTPUT_LOCKS=held-by-parent",
            "exec '/opt/cube run/bin/cuberun' \\",
            "    --debug run \\",
            f"    {q('--mlcube=' + str(root) + '/mlcube.yaml')} \\",
            "    --task=hello \\",
            "    --platform=docker \\",
            f"    {q('--workspace=' + ws)} \\",
            "    --no-deps \\",
            "    --force \\",
            "    --handshake=1 \\",
            "    -Pdocker.image=x:1 \\",
            "    --gpus=1 \\",
            "    --network=none \\",
            "    --memory=4g \\",
            "    --cpu=0-3 \\",
            "    --mount=ro \\",
            "    --allow-missing-inputs \\",
            "    --allow-run-args \\",
            f"    {q('name=' + ws + '/in dir/bob' + chr(39) + 's.txt')}",
            "",
        ]
    )
    # bash reads the exec line back into exactly the argv we meant
    exec_text = script.content.split("exec ", 1)[1].replace("\\\n", " ")
    assert shlex.split(exec_text) == runner.inner_argv(rt)
    assert runner.inner_argv(rt)[-1] == f"name={ws}/in dir/bob's.txt"


def test_default_cuberun_is_this_interpreter_and_mem_from_fractional_gb(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube", HELLO.replace("host_memory_gb: 8", "host_memory_gb: 1.5").replace("accelerator_count: 2", "accelerator_count: 0"))
    settings(tmp_path)
    runner, cube = runner_for(root)
    assert runner.inner_argv(resolved(cube))[:4] == [sys.executable, "-m", "cuberun", "run"]
    content = runner.script(resolved(cube))[1]
    assert "#SBATCH --mem=1536M" in content
    assert "--gres" not in content and "--partition" not in content


def test_config_overrides_win_and_gres_can_be_disabled(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path, mem="16G", gres="gpu:a100:1")
    runner, cube = runner_for(root)
    content = runner.script(resolved(cube))[1]
    assert "#SBATCH --mem=16G" in content and "#SBATCH --gres=gpu:a100:1" in content
    runner, cube = runner_for(root, params=["runner.gres=''", "runner.job_name_prefix=nightly"])
    content = runner.script(resolved(cube))[1]
    assert "--gres" not in content
    assert "#SBATCH --job-name=nightly-hello_world-hello" in content


def test_gpu_request_forms(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    runner, _ = runner_for(root, options=RunOptions(gpus="device=0,3"))
    assert runner.gres() == "gpu:2"
    runner, _ = runner_for(root, options=RunOptions(gpus="0"))
    assert runner.gres() is None
    runner, _ = runner_for(root, options=RunOptions(gpus="all"))
    with pytest.raises(UsageError, match="--gpus=all"):
        runner.gres()
    # on the host (inner platform local) Slurm's CUDA_VISIBLE_DEVICES is left alone: no --gpus for the job's cuberun
    runner, cube = runner_for(root, options=RunOptions(gpus="1"))
    assert runner.gres() == "gpu:1"
    assert not any(a.startswith("--gpus") for a in runner.inner_argv(resolved(cube)))


def test_script_name_follows_content(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    runner, cube = runner_for(root)
    a = runner.script(resolved(cube))
    assert runner.script(resolved(cube)) == a  # pure and stable
    runner2, cube2 = runner_for(root, params=["runner.time=5"])
    b = runner2.script(resolved(cube2))
    assert b[0] != a[0] and "#SBATCH --time=5" in b[1]


def test_job_dir_setting_and_percent_escaping(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path, job_dir="jobs 100%")
    runner, cube = runner_for(root)
    content = runner.script(resolved(cube))[1]
    assert f"#SBATCH --output='{root}/workspace/jobs 100%%/hello-%j.log'" in content
    assert runner.log_file(resolved(cube), "42") == f"{root}/workspace/jobs 100%/hello-42.log"


def test_config_errors(tmp_path: Path) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path, sbatch_args=["--output=/tmp/x"])
    runner, cube = runner_for(root)
    with pytest.raises(UsageError, match="must not set --output"):
        runner.run_steps(resolved(cube))
    settings(tmp_path, sbatch_args=["-o/tmp/x"])
    with pytest.raises(UsageError, match="must not set -o"):
        runner_for(root)[0].run_steps(resolved(cube))
    settings(tmp_path, sbatch_args=["--exclusive", "-A", "acct"])  # fine
    assert "#SBATCH --exclusive -A acct" in runner_for(root)[0].script(resolved(cube))[1]
    settings(tmp_path, platform="slurm")
    with pytest.raises(UsageError, match="itself a Slurm platform"):
        runner_for(root)[0].run_steps(resolved(cube))
    settings(tmp_path, platform="dockr")
    with pytest.raises(UsageError, match="unknown platform 'dockr'"):
        runner_for(root)[0].run_steps(resolved(cube))
    settings(tmp_path, job_dir="/tmp/back\\slash")
    with pytest.raises(UsageError, match="backslash"):
        runner_for(root)[0].run_steps(resolved(cube))
    settings(tmp_path, account="a\nb")
    with pytest.raises(UsageError, match="line break"):
        runner_for(root)[0].run_steps(resolved(cube))


def test_array_job_rendering_for_sweeps() -> None:
    spec = JobSpec((("--job-name", "sweep"), ("--output", "/j/s-%A_%a.log")), (("run", "--x=1"), ("run", "--x=2")))
    assert render_job_script(spec) == textwrap.dedent(
        """\
        #!/bin/bash
        #SBATCH --job-name=sweep
        #SBATCH --output=/j/s-%A_%a.log
        #SBATCH --array=0-1
        set -euo pipefail
        case "${SLURM_ARRAY_TASK_ID:-}" in
          0) exec run \\
              --x=1 ;;
          1) exec run \\
              --x=2 ;;
          *) echo "cuberun: unexpected array index ${SLURM_ARRAY_TASK_ID:-none}" >&2; exit 125 ;;
        esac
        """
    )


SWEEP = """
name: sweepy
local: {command: python3 train.py, env: current}
tasks:
  train:
    parameters:
      inputs: {params: {type: file, default: params.yaml}}
      outputs: {model: model/, score: {type: file, default: score.txt}}
"""


def sweep_cube(root: Path) -> Path:
    make_cube(root, SWEEP)
    (root / "workspace" / "params.yaml").write_text("lr: 0.1\n")
    return root


def sweep_tasks(cube: Any, values: Sequence[str]) -> list[Any]:
    """The variants of `--sweep lr=...` resolved as execute resolves them (before their files exist)."""
    from cuberun import sweep

    axes = sweep.parse_axes([f"lr={','.join(values)}"], cube, cube.tasks["train"], {})
    return [resolve_task(cube, "train", v.overrides, check_inputs=False) for v in sweep.variants(axes, cube, cube.tasks["train"], {})]


def test_array_script_and_sbatch_for_a_sweep(tmp_path: Path) -> None:
    root = sweep_cube(tmp_path / "cube")
    settings(tmp_path, partition="debug", time="00:05:00", cuberun="cuberun", array_parallelism=2, sbatch_args=["--exclusive"])
    runner, cube = runner_for(root)
    assert runner.supports_array
    steps = runner.array_steps(sweep_tasks(cube, ["0.1", "1e-3", "$(rm -rf ~)"]))
    script, submit = steps
    assert isinstance(script, JobScriptStep)
    ws = f"{root}/workspace"
    sweeps = f"{ws}/sweeps"

    def element(i: int, label: str) -> str:
        # every argument quoted: a value like $(rm -rf ~) reaches the task literally
        q = shlex.quote
        return (
            f"  {i}) exec cuberun run \\\n"
            f"      --mlcube={root}/mlcube.yaml \\\n      --task=train \\\n      --platform=local \\\n      --workspace={ws} \\\n"
            f"      --no-deps \\\n      --force \\\n      --handshake=1 \\\n"
            f"      {q(f'params={sweeps}/{label}/params.yaml')} \\\n"
            f"      {q(f'model={sweeps}/{label}/model')} \\\n"
            f"      {q(f'score={sweeps}/{label}/score.txt')} ;;\n"
        )

    assert script.content == (
        "#!/bin/bash\n"
        "# cuberun: 3 runs of task train of cube sweepy (a sweep)\n"
        "#SBATCH --job-name=cuberun-sweepy-train\n"
        "#SBATCH --partition=debug\n"
        "#SBATCH --time=00:05:00\n"
        f"#SBATCH --output={ws}/.cuberun/slurm/train-%A_%a.log\n"
        f"#SBATCH --chdir={ws}\n"
        "#SBATCH --array=0-2%2\n"
        "#SBATCH --exclusive\n"
        "set -euo pipefail\n"
        "export CUBERUN_OUTPUT_LOCKS=held-by-parent\n"
        'case "${SLURM_ARRAY_TASK_ID:-}" in\n'
        + element(0, "lr=0.1")
        + element(1, "lr=1e-3")
        + element(2, "lr=_rm_-rf_")
        + '  *) echo "cuberun: unexpected array index ${SLURM_ARRAY_TASK_ID:-none}" >&2; exit 125 ;;\n'
        "esac\n"
    )
    assert script.path.startswith(f"{ws}/.cuberun/slurm/train-array-") and script.path.endswith(".sbatch")
    assert submit.argv == ("sbatch", "--parsable", script.path)
    # bash reads each branch back into exactly the element's argv
    branches = script.content.split('case "${SLURM_ARRAY_TASK_ID:-}" in\n', 1)[1].split(" ;;\n")[:3]
    tasks = sweep_tasks(cube, ["0.1", "1e-3", "$(rm -rf ~)"])
    assert [shlex.split(b.split(") exec ", 1)[1].replace("\\\n", " ")) for b in branches] == [runner.inner_argv(t) for t in tasks]
    assert runner.array_log_file(tasks[0], "40", 2) == f"{ws}/.cuberun/slurm/train-40_2.log"
    settings(tmp_path, array_parallelism=0)
    with pytest.raises(UsageError, match="array_parallelism must be at least 1"):
        runner_for(root)[0].array_steps(tasks)


def test_dry_run_of_a_sweep_shows_one_array_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = sweep_cube(tmp_path / "cube")
    settings(tmp_path)
    runner, cube = runner_for(root)
    run_tasks(cube, runner, ["train"], {}, dry_run=True, sweeps=["lr=0.1,0.2,0.3"])
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 1 and out.count("\nsbatch --parsable ") == 1
    assert "#SBATCH --array=0-2\n" in out and out.count(") exec ") == 3
    assert out.splitlines()[:3] == [f"# {root}/workspace/sweeps/lr={v}/params.yaml" for v in ("0.1", "0.2", "0.3")]
    assert not (root / "workspace" / "sweeps").exists()  # a dry run writes nothing
    # -P config axes give every variant its own runner configuration: separate jobs
    run_tasks(cube, runner, ["train"], {}, dry_run=True, sweeps=["lr=0.1,0.2", "runner.time=1,2"])
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 4 and "--array" not in out


# -- parsers and exit codes ----------------------------------------------------------------------
def test_sbatch_quote() -> None:
    assert sbatch_quote("debug") == "debug"
    assert sbatch_quote("/a b/c") == "'/a b/c'"
    assert sbatch_quote("a#b") == "'a#b'"  # an unquoted # would start a comment
    assert sbatch_quote("a\\b") == "'a\\\\b'"  # sbatch unescapes backslashes even inside quotes
    with pytest.raises(ValueError):
        sbatch_quote("a\nb")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:05:00", 300),
        ("5", 300),
        (5, 300),
        ("5:30", 330),
        ("1-00:00:00", 86400),
        ("2-3", 2 * 86400 + 3 * 3600),
        ("1-2:30", 86400 + 2 * 3600 + 1800),
        ("525600", 525600 * 60),
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("Partition_Limit", None),
        ("", None),
        ("soon", None),
    ],
)
def test_parse_time_limit(text: Any, seconds: float | None) -> None:
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize(
    ("state", "exit_code", "expected"),
    [
        ("COMPLETED", "0:0", 0),
        ("FAILED", "3:0", 3),
        ("FAILED", "0:9", 137),
        ("FAILED", "0:53", 125),  # JobLaunchFailure: not a signal
        ("TIMEOUT", "0:15", 137),
        ("TIMEOUT", "130:0", 137),  # the task handled the warning SIGTERM: still a limit kill
        ("OUT_OF_MEMORY", "0:125", 137),
        ("CANCELLED", "0:15", 143),
        ("CANCELLED", "0:0", 143),
        ("CANCELLED", "130:0", 130),
        ("NODE_FAIL", "0:0", 125),
        ("PREEMPTED", "0:15", 143),
    ],
)
def test_job_exit_code(state: str, exit_code: str, expected: int) -> None:
    assert job_exit_code(state, exit_code) == expected


def test_parse_exit() -> None:
    assert parse_exit("3:0") == (3, 0)
    assert parse_exit("0:15") == (0, 15)
    assert parse_exit(None) == (0, 0)
    assert parse_exit("junk") == (0, 0)


def test_parse_scontrol_line_and_timeout() -> None:
    info = parse_job_line(scontrol_line("77", "TIMEOUT", "0:15", "TimeLimit", "00:01:00"))
    assert info is not None
    assert (info.job_id, info.state, info.exit_code, info.reason, info.time_limit) == ("77", "TIMEOUT", "0:15", "TimeLimit", 60.0)
    assert info.finished
    assert info.fields["NodeList"] == "localhost" and info.fields["Partition"] == "debug"
    # the first JobState wins: a path containing "JobState=FAKE" later on the line changes nothing
    assert parse_job_line(scontrol_line("78", "RUNNING")).state == "RUNNING"  # type: ignore[union-attr]
    assert parse_job_line("slurm_load_jobs error: Invalid job id specified") is None


def test_parse_jobcomp_and_sacct() -> None:
    line = (
        "JobId=4 UserId=root(0) GroupId=root(0) Name=wrap JobState=CANCELLED Partition=debug TimeLimit=525600 "
        "StartTime=2026-11-22T11:23:21 EndTime=2026-11-22T11:23:21 NodeList=localhost NodeCnt=1 ProcCnt=1 WorkDir=/tmp "
        "ReservationName= Tres=cpu=1,mem=1G,node=1,billing=1 Account= QOS= WcKey= Cluster=unknown SubmitTime=2026-11-22T11:23:20 "
        "EligibleTime=2026-11-22T11:23:20 DerivedExitCode=0:0 ExitCode=0:15 "
    )
    info = parse_job_line(line, source="jobcomp")
    assert info is not None and (info.state, info.exit_code, info.source) == ("CANCELLED", "0:15", "jobcomp")
    info = parse_sacct("CANCELLED by 0|0:15\n", "9")
    assert info is not None and (info.job_id, info.state, info.exit_code, info.source) == ("9", "CANCELLED", "0:15", "sacct")
    assert parse_sacct("", "9") is None


def array_line(raw: str, array: str, task: str, state: str, exit_code: str = "0:0", reason: str = "None") -> str:
    """A `scontrol show job -o` line of an array element (or of the array's pending elements)."""
    line = scontrol_line(raw, state, exit_code, reason)
    return line.replace(f"JobId={raw} ", f"JobId={raw} ArrayJobId={array} ArrayTaskId={task} ArrayTaskThrottle=0 ", 1)


def test_expand_task_ids() -> None:
    assert expand_task_ids("4") == [4]
    assert expand_task_ids("2-5%2") == [2, 3, 4, 5]
    assert expand_task_ids("1,3,5-7") == [1, 3, 5, 6, 7]
    assert expand_task_ids("0-8:4") == [0, 4, 8]
    assert expand_task_ids("[2-3]") == [2, 3]
    assert expand_task_ids("") == [] and expand_task_ids("x") == []


def test_array_elements_from_scontrol() -> None:
    # as the test cluster prints an array of 6 with %2: two running, the rest pending on the array's record
    text = "\n".join([array_line("166", "166", "2-5%2", "PENDING", reason="JobArrayTaskLimit"), array_line("168", "166", "1", "RUNNING"),
                      array_line("167", "166", "0", "COMPLETED"), scontrol_line("99", "RUNNING")])  # fmt: skip
    found = array_elements(text, "166")
    assert sorted(found) == [0, 1, 2, 3, 4, 5]
    assert (found[0].job_id, found[0].state, found[0].fields["SlurmJobId"]) == ("166_0", "COMPLETED", "167")
    assert (found[4].job_id, found[4].state, found[4].reason) == ("166_4", "PENDING", "JobArrayTaskLimit")
    info = parse_job_line(array_line("168", "166", "1", "RUNNING"))
    assert info is not None and info.job_id == "166_1"  # what `scontrol show job -o 166_1` is matched against
    assert array_elements(text, "16") == {}


def test_jobcomp_lines_of_array_elements(tmp_path: Path) -> None:
    def comp(raw: str, state: str, exit_code: str, array: str | None = None) -> str:
        extra = f"ArrayJobId={array} " if array else ""
        return f"JobId={raw} UserId=root(0) Name=a JobState={state} Partition=debug TimeLimit=5 {extra}DerivedExitCode=0:0 ExitCode={exit_code} \n"

    log = tmp_path / "jobcomp.log"
    log.write_text(
        comp("61", "COMPLETED", "0:0", "60 ArrayTaskId=0")
        + comp("60", "CANCELLED", "0:0")  # scancel of the array: the elements still pending share this line
        + comp("62", "FAILED", "2:0", "60 ArrayTaskId=1")
        + comp("600", "COMPLETED", "0:0")
    )
    got = {i: _search_jobcomp(str(log), f"60_{i}") for i in range(3)}
    assert {i: (g.job_id, g.state, g.exit_code) for i, g in got.items() if g} == {
        0: ("60_0", "COMPLETED", "0:0"),  # its own line wins over the later shared one
        1: ("60_1", "FAILED", "2:0"),
        2: ("60_2", "CANCELLED", "0:0"),
    }
    assert _search_jobcomp(str(log), "600").state == "COMPLETED"  # type: ignore[union-attr]
    assert _search_jobcomp(str(log), "7_0") is None


def test_normalize_memory() -> None:
    assert normalize_memory("4g") == "4G"
    assert normalize_memory("512M") == "512M"
    assert normalize_memory("1.5GB") == "1536M"
    assert normalize_memory("2147483648") == "2048M"
    with pytest.raises(UsageError):
        normalize_memory("lots")


# -- run / chain against fake Slurm clients --------------------------------------------------------
FAKE = r'''
import json, os, shlex, sys
state_dir = os.environ["FAKE_SLURM"]
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
scenario = json.load(open(os.path.join(state_dir, "scenario.json")))
with open(os.path.join(state_dir, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps([tool] + args) + "\n")

def counter(name):
    path = os.path.join(state_dir, name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    return n

if tool == "sbatch":
    if "sbatch_error" in scenario:
        sys.stderr.write(scenario["sbatch_error"])
        sys.exit(1)
    job_id = str(scenario["first_id"] + counter("submitted"))
    script = open(args[-1]).read()
    pattern, elements = None, None
    for line in script.splitlines():
        if line.startswith("#SBATCH --output="):
            pattern = shlex.split(line[len("#SBATCH "):])[0].split("=", 1)[1]
        if line.startswith("#SBATCH --array=0-"):
            elements = int(line.split("=0-", 1)[1].split("%")[0]) + 1
    if pattern and elements:  # a job array: a log per element (%A_%a)
        for i in range(elements):
            element = f"{job_id}_{i}"
            open(pattern.replace("%A", job_id).replace("%a", str(i)), "w").write(scenario.get("log", "").replace("{id}", element))
    elif pattern:
        open(pattern.replace("%j", job_id), "w").write(scenario.get("log", "").replace("{id}", job_id))
    print(job_id)
elif tool == "scontrol" and args[:2] == ["show", "job"]:
    job_id = args[-1]
    states = scenario["jobs"].get(job_id, ["forgotten"])
    line = states[min(counter("polls-" + job_id), len(states) - 1)]
    if os.path.exists(os.path.join(state_dir, "cancelled-" + job_id)):
        line = scenario["after_cancel"][job_id]
    if line == "forgotten":
        sys.stderr.write("slurm_load_jobs error: Invalid job id specified\n")
        sys.exit(1)
    print(line)
elif tool == "scontrol" and args[:2] == ["show", "config"]:
    print("AccountingStorageType   = accounting_storage/none")
    print("JobCompType             = jobcomp/filetxt")
    print("JobCompLoc              = " + os.path.join(state_dir, "jobcomp.log"))
elif tool == "scontrol" and args[:1] == ["ping"]:
    print("Slurmctld(primary) at vm is UP")
elif tool == "sacct":
    print("Slurm accounting storage is disabled")
elif tool == "sinfo":
    print("debug*\ngpu\ngpu")
elif tool == "scancel":
    for job_id in args:
        open(os.path.join(state_dir, "cancelled-" + job_id), "w").close()
'''


class FakeSlurm:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        program = self.bin / "fake_slurm.py"
        program.write_text(f"#!{sys.executable}\n{FAKE}")
        program.chmod(0o755)
        for tool in ("sbatch", "scontrol", "scancel", "sacct", "sinfo"):
            (self.bin / tool).symlink_to(program)

    def scenario(self, **data: Any) -> None:
        (self.root / "scenario.json").write_text(json.dumps(data))

    def calls(self, tool: str | None = None) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in rows if tool is None or r[0] == tool]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    slurm = FakeSlurm(tmp_path / "fake")
    monkeypatch.setenv("FAKE_SLURM", str(slurm.root))
    monkeypatch.setenv("PATH", f"{slurm.bin}{os.pathsep}{os.environ.get('PATH', '')}")
    return slurm


def test_sbatch_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    runner, _ = runner_for(root)
    assert runner.unavailable_reason() == SBATCH_MISSING == "sbatch not found. Hint: install the Slurm client or use another --platform"
    with pytest.raises(RunnerUnavailable):
        runner.inspect()


def test_timeout_maps_to_137_with_state_and_log(tmp_path: Path, fake: FakeSlurm, capfd: pytest.CaptureFixture[str]) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path, partition="debug")
    fake.scenario(
        first_id=77,
        log=f"{START('hello', 'INNER-1')}cuberun: running task 'hello' on local (run INNER-1)\ntick {{id}}\n",
        jobs={"77": [scontrol_line("77", "RUNNING"), scontrol_line("77", "TIMEOUT", "0:15", "TimeLimit", "00:01:00")]},
    )
    runner, cube = runner_for(root)
    log_path = tmp_path / "run.log"
    outcome = runner.run(runner.plan(resolved(cube)), str(log_path))
    job_log = f"{root}/workspace/.cuberun/slurm/hello-77.log"
    assert outcome.exit_code == 137 and not outcome.interrupted
    assert outcome.reason == f"job 77 ended TIMEOUT (exit 0:15); log: {job_log}"
    assert outcome.details is not None
    assert outcome.details["job_id"] == "77" and outcome.details["job_state"] == "TIMEOUT"
    assert outcome.details["inner_run_id"] == "INNER-1" and outcome.details["job_log"] == job_log
    assert "tick 77" in log_path.read_text()  # the job log streamed into the run log ...
    captured = capfd.readouterr()
    assert "tick 77" in captured.out  # ... and to our stdout
    assert "submitted task 'hello' as Slurm job 77" in captured.err
    assert fake.calls("scancel") == []


def test_forgotten_job_falls_back_to_jobcomp(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(first_id=5, jobs={"5": ["forgotten"]})
    (fake.root / "jobcomp.log").write_text(
        "JobId=5 UserId=root(0) Name=x JobState=FAILED Partition=debug TimeLimit=5 ExitCode=9:0 \n"
        "JobId=50 UserId=root(0) Name=y JobState=COMPLETED Partition=debug TimeLimit=5 ExitCode=0:0 \n"
    )
    runner, cube = runner_for(root)
    outcome = runner.run(runner.plan(resolved(cube)), str(tmp_path / "run.log"))
    assert outcome.exit_code == 9
    assert outcome.details is not None and outcome.details["state_source"] == "jobcomp"
    assert [c[0] for c in fake.calls() if c[0] == "sacct"] == ["sacct"]  # asked once, learned accounting is off


def test_chain_uses_afterok_and_cancels_the_rest_after_a_failure(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(
        first_id=10,
        jobs={
            "10": [scontrol_line("10", "FAILED", "3:0", "NonZeroExitCode")],
            "11": [scontrol_line("11", "PENDING", reason="Dependency")],
        },
    )
    runner, cube = runner_for(root)
    tasks = [resolved(cube, "hello"), resolved(cube, "bye")]
    outcomes = runner.run_chain([runner.plan(t) for t in tasks], [str(tmp_path / "a.log"), str(tmp_path / "b.log")])
    assert len(outcomes) == 1 and outcomes[0].exit_code == 3
    assert outcomes[0].reason is not None and outcomes[0].reason.startswith("job 10 ended FAILED (exit 3:0); log: ")
    submits = fake.calls("sbatch")
    assert submits[0][1:-1] == ["--parsable"]
    assert submits[1][1:-1] == ["--parsable", "--dependency=afterok:10", "--kill-on-invalid-dep=yes"]
    assert fake.calls("scancel") == [["scancel", "11"]]  # only the job this run submitted


def test_unknown_partition_is_one_line_with_the_known_ones(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path, partition="nope")
    fake.scenario(
        first_id=1,
        jobs={},
        sbatch_error="sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified\n",
    )
    runner, cube = runner_for(root)
    with pytest.raises(BackendError) as info:
        runner.run(runner.plan(resolved(cube)), str(tmp_path / "run.log"))
    assert info.value.exit_code == 125
    (line,) = info.value.lines()
    assert line.startswith("Slurm partition 'nope' does not exist (sbatch: Batch job submission failed: Invalid partition name specified); job script: ")
    assert line.endswith("Hint: use one of: debug, gpu (sinfo -h -o %P)")


def test_controller_unreachable_at_submit(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(first_id=1, jobs={}, sbatch_error="sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n")
    runner, cube = runner_for(root)
    with pytest.raises(RunnerUnavailable, match="Slurm controller unreachable"):
        runner.run(runner.plan(resolved(cube)), str(tmp_path / "run.log"))


def test_signal_during_wait_cancels_our_job(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(first_id=30, jobs={"30": [scontrol_line("30", "RUNNING")]}, after_cancel={"30": scontrol_line("30", "CANCELLED", "0:15")})
    runner, cube = runner_for(root)
    import threading

    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        outcome = runner.run(runner.plan(resolved(cube)), str(tmp_path / "run.log"))
    finally:
        timer.cancel()
    assert outcome.interrupted and outcome.exit_code == 130 and outcome.received == signal.SIGINT
    assert outcome.reason is not None and "Slurm job 30 is CANCELLED" in outcome.reason
    assert fake.calls("scancel") == [["scancel", "30"]]


def test_inspect_summarises_the_cluster(tmp_path: Path, fake: FakeSlurm) -> None:
    root = make_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(first_id=1, jobs={})
    runner, _ = runner_for(root)
    info = runner.inspect()
    assert info["runner"] == "slurm" and info["inner_platform"] == "local"
    assert info["controller"] == "Slurmctld(primary) at vm is UP"
    assert info["job_completion"]["type"] == "jobcomp/filetxt"


# -- job arrays (sweeps) against fake Slurm clients ------------------------------------------------
def test_array_is_one_submission_followed_per_element(tmp_path: Path, fake: FakeSlurm, capfd: pytest.CaptureFixture[str]) -> None:
    root = sweep_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(
        first_id=40,
        log=START("train", "INNER-{id}") + "cuberun: running task 'train' on local (run INNER-{id})\nline of {id}\npartial",
        jobs={"40": [
            array_line("40", "40", "0-2", "PENDING", reason="Resources"),
            "\n".join([array_line("40", "40", "2", "PENDING"), array_line("41", "40", "0", "RUNNING"), array_line("42", "40", "1", "RUNNING")]),
            "\n".join([array_line("40", "40", "2", "COMPLETED"), array_line("41", "40", "0", "COMPLETED"),
                       array_line("42", "40", "1", "FAILED", "3:0", "NonZeroExitCode")]),
        ]},
    )  # fmt: skip
    runner, cube = runner_for(root)
    tasks = sweep_tasks(cube, ["0.1", "0.2", "0.3"])
    logs = [tmp_path / f"run{i}.log" for i in range(3)]
    outcomes = runner.run_array([runner.plan(t) for t in tasks], [str(p) for p in logs])
    assert [o.exit_code for o in outcomes] == [0, 3, 0]
    assert len(fake.calls("sbatch")) == 1 and fake.calls("scancel") == []
    assert all(c == ["scontrol", "show", "job", "-o", "40"] for c in fake.calls("scontrol"))  # one query per poll for all elements
    job_dir = f"{root}/workspace/.cuberun/slurm"
    assert outcomes[1].reason == f"job 40_1 ended FAILED (exit 3:0); log: {job_dir}/train-40_1.log"
    details = [dict(o.details or {}) for o in outcomes]
    assert [(d["job_id"], d["array_job_id"], d["array_task_id"], d["element_job_id"]) for d in details] == [
        ("40_0", "40", 0, "41"), ("40_1", "40", 1, "42"), ("40_2", "40", 2, "40")]  # fmt: skip
    assert [d["job_state"] for d in details] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert details[2]["job_log"] == f"{job_dir}/train-40_2.log" and details[2]["inner_run_id"] == "INNER-40_2"
    assert "-array-" in details[0]["job_script"]
    assert [p.read_text() for p in logs] == [f"cuberun: running task 'train' on local (run INNER-40_{i})\nline of 40_{i}\npartial" for i in range(3)]
    out, err = capfd.readouterr()
    for i in range(3):  # each element's lines on our stdout, after its id; a partial line too, once its job ended
        assert f"[40_{i}] line of 40_{i}\n" in out and f"[40_{i}] partial\n" in out
    assert f"submitted 3 runs of task 'train' as Slurm array job 40 (elements 40_0 to 40_2; logs: {job_dir}/train-40_<N>.log)" in err


def test_signal_cancels_the_whole_array(tmp_path: Path, fake: FakeSlurm) -> None:
    root = sweep_cube(tmp_path / "cube")
    settings(tmp_path)
    running = "\n".join([array_line("50", "50", "2", "PENDING"), array_line("51", "50", "0", "RUNNING"), array_line("52", "50", "1", "RUNNING")])
    cancelled = "\n".join([array_line("50", "50", "2", "CANCELLED"), array_line("51", "50", "0", "CANCELLED", "0:15"),
                           array_line("52", "50", "1", "CANCELLED", "0:15")])  # fmt: skip
    fake.scenario(first_id=50, jobs={"50": [running]}, after_cancel={"50": cancelled})
    runner, cube = runner_for(root)
    import threading

    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        outcomes = runner.run_array([runner.plan(t) for t in sweep_tasks(cube, ["1", "2", "3"])], [str(tmp_path / f"run{i}.log") for i in range(3)])
    finally:
        timer.cancel()
    assert [(o.exit_code, o.interrupted) for o in outcomes] == [(130, True)] * 3
    assert outcomes[2].reason is not None and outcomes[2].reason.startswith("was interrupted (SIGINT); Slurm job 50_2 is CANCELLED; log: ")
    assert fake.calls("scancel") == [["scancel", "50"]]  # the array this run submitted, once


def test_forgotten_array_falls_back_to_jobcomp_per_element(tmp_path: Path, fake: FakeSlurm) -> None:
    root = sweep_cube(tmp_path / "cube")
    settings(tmp_path)
    fake.scenario(first_id=60, jobs={"60": ["forgotten"]})
    (fake.root / "jobcomp.log").write_text(
        "JobId=61 UserId=root(0) Name=a JobState=COMPLETED Partition=debug TimeLimit=5 ArrayJobId=60 ArrayTaskId=0 ExitCode=0:0 \n"
        "JobId=60 UserId=root(0) Name=a JobState=FAILED Partition=debug TimeLimit=5 ArrayJobId=60 ArrayTaskId=1 ExitCode=4:0 \n"
    )
    runner, cube = runner_for(root)
    outcomes = runner.run_array([runner.plan(t) for t in sweep_tasks(cube, ["1", "2"])], [str(tmp_path / "a.log"), str(tmp_path / "b.log")])
    assert [o.exit_code for o in outcomes] == [0, 4]
    assert [(o.details or {}).get("state_source") for o in outcomes] == ["jobcomp", "jobcomp"]

