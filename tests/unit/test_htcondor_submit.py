"""Golden tests of the HTCondor runner plugin (plugins/cuberun-htcondor): the submit description
and the commands `--dry-run` prints (pure), HTCondor's quoting rules, the status mapping, and
that cuberun finds the runner through its entry point. The real runs are in
tests/integration/test_htcondor_runner.py."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.process import Captured
from cuberun.resolve import ResolvedTask, resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.batch_polling import FollowBounds, Job
from cuberun.spec.load import load_cube

PLUGIN_SRC = Path(__file__).resolve().parents[2] / "plugins" / "cuberun-htcondor" / "src"
try:
    import cuberun_htcondor  # noqa: F401  (installed by scripts/test.sh)
    INSTALLED = True
except ImportError:  # pure tests still run from the source tree
    sys.path.insert(0, str(PLUGIN_SRC))
    INSTALLED = False

from cuberun_htcondor import submit as sub  # noqa: E402
from cuberun_htcondor.runner import HTCondorRunner, _status  # noqa: E402

CUBE = """
name: probe
platform: {accelerator_count: 0, host_memory_gb: 2}
local: {command: sh probe.sh}
tasks:
  copy:
    parameters:
      inputs: {data: data/, cfg: {type: file, default: params.yaml}}
      outputs: {out: copied/}
"""

GOLDEN_SHARED = """\
universe = vanilla
executable = /usr/bin/env
arguments = "sh probe.sh copy --data={ws}/data --cfg={ws}/params.yaml --out={ws}/copied"
initialdir = {root}
output = {ws}/.cuberun/htcondor/copy-$(ClusterId).$(ProcId).out
error = {ws}/.cuberun/htcondor/copy-$(ClusterId).$(ProcId).err
log = {ws}/.cuberun/htcondor/copy-$(ClusterId).log
getenv = false
environment = "GREETING='hello world' PRICE=$(DOLLAR)5"
should_transfer_files = NO
transfer_executable = false
request_cpus = 2
request_memory = 2048
requirements = (OpSys == "LINUX")
batch_name = cuberun-probe-copy
+ProjectName = "ml"
queue
"""

GOLDEN_TRANSFER = """\
universe = vanilla
executable = /usr/bin/env
arguments = "sh probe.sh copy --data=data --cfg=params.yaml --out=copied"
initialdir = {root}
output = {ws}/.cuberun/htcondor/copy-$(ClusterId).$(ProcId).out
error = {ws}/.cuberun/htcondor/copy-$(ClusterId).$(ProcId).err
log = {ws}/.cuberun/htcondor/copy-$(ClusterId).log
getenv = false
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
transfer_executable = false
stream_output = true
stream_error = true
transfer_input_files = {ws}/data, {ws}/params.yaml, {ws}/copied, {root}/probe.sh
transfer_output_files = copied
transfer_output_remaps = "copied = {ws}/copied"
request_memory = 2048
batch_name = cuberun-probe-copy
queue
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    yield


def make_cube(tmp_path: Path) -> Path:
    root = tmp_path / "probe"
    (root / "workspace" / "data").mkdir(parents=True)
    (root / "workspace" / "params.yaml").write_text("a: 1\n")
    (root / "probe.sh").write_text("echo hi\n")
    (root / "mlcube.yaml").write_text(CUBE)
    return root


def runner_for(root: Path, config: dict[str, Any] | None = None, options: RunOptions | None = None) -> tuple[HTCondorRunner, ResolvedTask]:
    from cuberun import settings as settings_mod

    cube = load_cube(str(root))
    merged = settings_mod.effective_config(HTCondorRunner.schema, {"runner": "htcondor"}, cube.section("htcondor"), config or {}, "built-in")
    return HTCondorRunner(cube, merged, "htcondor", options or RunOptions()), resolve_task(cube, "copy", {})


def test_shared_filesystem_submit_description_is_golden(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, {"request_cpus": 2, "requirements": '(OpSys == "LINUX")',
                                     "env_vars": {"GREETING": "hello world", "PRICE": "$5"}, "submit": {"+ProjectName": '"ml"'}})
    text = runner.description(task).render()
    assert text == GOLDEN_SHARED.format(root=root, ws=root / "workspace")


def test_transfer_mode_moves_inputs_and_maps_outputs_back(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, {"files": "transfer"})
    assert runner.description(task).render() == GOLDEN_TRANSFER.format(root=root, ws=root / "workspace")


def test_dry_run_prints_the_submit_file_and_every_command(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, {"bin_dir": "/opt/condor/bin", "schedd": "schedd@a", "pool": "cm:9618"})
    steps = runner.run_steps(task)
    path, content = runner.submit_file(task)
    assert path.startswith(str(root / "workspace" / ".cuberun" / "htcondor" / "copy-")) and path.endswith(".sub")
    lines = [s.display() for s in steps]
    assert lines[0] == f"mkdir -p {root}/workspace/.cuberun/htcondor && cat > {path} <<'CUBERUN_SUBMIT'\n{content}CUBERUN_SUBMIT"
    assert lines[1:] == [
        f"cd {root}/workspace/.cuberun/htcondor && /opt/condor/bin/condor_submit -terse -name schedd@a -pool cm:9618 {path}",
        "# follow: /opt/condor/bin/condor_q -name schedd@a -pool cm:9618 CLUSTER -json -attributes "
        "ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,RemoveReason,LeaveJobInQueue",
        "# then: /opt/condor/bin/condor_history -name schedd@a -pool cm:9618 CLUSTER -json -limit 1 -attributes "
        "ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,RemoveReason,LeaveJobInQueue",
        "# on Ctrl-C: /opt/condor/bin/condor_rm -name schedd@a -pool cm:9618 CLUSTER",
    ]
    assert runner.submit_file(task) == (path, content)  # named by its content: stable


def test_quoting_follows_condor_submit_new_syntax() -> None:
    assert sub.arguments(["a", "b c", "it's", 'say "hi"', "", "$HOME"]) == \
        """"a 'b c' 'it''s' 'say ""hi""' '' $(DOLLAR)HOME\""""
    with pytest.raises(UsageError, match="newline"):
        sub.arguments(["a\nqueue 100"])
    with pytest.raises(UsageError, match="not an environment variable name"):
        sub.environment({"A B": "1"})
    with pytest.raises(UsageError, match="comma"):
        sub.file_list(["/data/a,b"], "transfer_input_files")
    with pytest.raises(UsageError, match="not a valid name"):
        sub.SubmitDescription((("queue 5\nexecutable", "x"),)).render()


def test_managed_commands_cannot_be_overridden(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, {"submit": {"executable": "/bin/rm"}})
    with pytest.raises(UsageError, match="cuberun writes 'executable' itself"):
        runner.description(task)


def test_an_unbalanced_command_is_a_usage_error(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, {"command": "sh probe.sh it's"})
    with pytest.raises(UsageError, match="htcondor.command: cannot split"):
        runner.description(task)


def test_gpus_and_memory_map_to_requests(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, task = runner_for(root, options=RunOptions(gpus="2", memory="4g"))
    desc = runner.description(task)
    assert desc.get("request_gpus") == "2" and desc.get("request_memory") == "4G"
    runner, task = runner_for(root, options=RunOptions(gpus="all"))
    with pytest.raises(UsageError, match="--gpus=all"):
        runner.description(task)


def test_status_mapping() -> None:
    done = _status({"JobStatus": 4, "ExitCode": 3, "ExitBySignal": False})
    assert done.ended and done.exit_code == 3
    killed = _status({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9})
    assert killed.exit_code == 137 and killed.signal == 9
    held = _status({"JobStatus": 5, "HoldReason": "Failed to execute '/x'"})
    assert held.stuck and not held.ended and held.reason == "Failed to execute '/x'"
    removed = _status({"JobStatus": 3, "RemoveReason": "via condor_rm (by user x)"})
    assert removed.ended and removed.exit_code == 125
    assert not _status({"JobStatus": 1}).ended


class FakePool:
    """Answers the runner's condor_q / condor_history calls in sequence: each poll takes the next
    (queue ad, history ad) pair (None: the tool lists nothing); records the tools called."""

    def __init__(self, answers: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str], shield: bool = False) -> Captured:
        tool = os.path.basename(argv[0])
        self.calls.append(tool)
        if tool == "condor_rm":
            return Captured(0, "", "")
        assert self.answers, "polled more often than the test expected"
        queued, history = self.answers[0]
        if tool == "condor_history":
            self.answers.pop(0)
            return Captured(0, json.dumps([history]) if history else "", "")
        assert tool == "condor_q" and argv[1] == "12.0" and "-json" in argv, argv
        if queued is not None:
            self.answers.pop(0)
        return Captured(0, json.dumps([queued]) if queued else "", "")


def fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> tuple[HTCondorRunner, FakePool]:
    runner, _ = runner_for(make_cube(tmp_path))
    fake = FakePool(answers)
    monkeypatch.setattr(runner, "_client", fake)
    return runner, fake


def test_a_job_the_queue_lists_as_completed_has_not_ended_until_it_left_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    completed = {"JobStatus": 4, "ExitCode": 3, "ExitBySignal": False, "LeaveJobInQueue": False}
    runner, fake = fake_runner(tmp_path, monkeypatch, [(completed, None), (None, completed)])
    leaving, problem = runner.status("12.0")
    assert problem is None and leaving is not None
    assert not leaving.ended and not leaving.stuck and leaving.state == "Completed, leaving the queue"
    assert fake.calls == ["condor_q"]  # the queue's word is taken: no history call
    ended, problem = runner.status("12.0")
    assert problem is None and ended is not None and ended.ended and ended.exit_code == 3 and ended.state == "Completed"
    assert fake.calls == ["condor_q", "condor_q", "condor_history"]


def test_a_removed_job_ends_when_it_left_the_queue_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    removed = {"JobStatus": 3, "RemoveReason": "via condor_rm (by user x)"}
    runner, _ = fake_runner(tmp_path, monkeypatch, [(removed, None), (None, removed)])
    first, _problem = runner.status("12.0")
    assert first is not None and not first.ended and first.state == "Removed, leaving the queue"
    second, _problem = runner.status("12.0")
    assert second is not None and second.ended and second.exit_code == 125 and second.reason == "was removed (via condor_rm (by user x))"


@pytest.mark.parametrize("leave", [True, "JobStatus == 4 && (CompletionDate =?= UNDEFINED || time() - CompletionDate < 864000)", 1])
def test_a_job_that_stays_in_the_queue_by_design_ends_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leave: Any) -> None:
    """LeaveJobInQueue set (a boolean, or an expression -json prints as its text): the job never
    moves to the history by itself, so Completed / Removed in the queue is the end."""
    killed = {"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9, "LeaveJobInQueue": leave}
    removed = {"JobStatus": 3, "RemoveReason": "by x", "LeaveJobInQueue": leave}
    runner, fake = fake_runner(tmp_path, monkeypatch, [(killed, None), (removed, None)])
    first, _problem = runner.status("12.0")
    assert first is not None and first.ended and first.exit_code == 137 and first.signal == 9
    second, _problem = runner.status("12.0")
    assert second is not None and second.ended and second.exit_code == 125
    assert fake.calls == ["condor_q", "condor_q"]


@pytest.mark.parametrize("leave", [None, False, "false", "FALSE", 0])
def test_leave_job_in_queue_false_or_absent_means_leaving(leave: Any) -> None:
    ad = {"JobStatus": 4, "ExitCode": 0} if leave is None else {"JobStatus": 4, "ExitCode": 0, "LeaveJobInQueue": leave}
    assert not _status(ad, queued=True).ended
    assert _status(ad).ended  # the history's ad


def test_the_follow_loop_waits_for_the_history_and_reports_its_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = {"JobStatus": 2}
    completed = {"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 15}
    runner, fake = fake_runner(tmp_path, monkeypatch, [(running, None), (completed, None), (completed, None), (None, completed)])
    cancel = SimpleNamespace(requested=False, count=0, received=None)
    outcome = runner.follow_job(Job("12.0", (), "HTCondor job 12.0"), ["12"], str(tmp_path / "log"), cancel)
    assert outcome.exit_code == 143 and outcome.signal == 15 and "was killed by signal 15" in (outcome.reason or "")
    assert fake.answers == [] and fake.calls[-1] == "condor_history"


def test_after_ctrl_c_the_removal_is_confirmed_once_the_job_left_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = {"JobStatus": 2}
    removed = {"JobStatus": 3, "RemoveReason": "via condor_rm"}
    runner, fake = fake_runner(tmp_path, monkeypatch, [(running, None), (removed, None), (removed, None), (None, removed)])
    status, _problem = runner.status("12.0")
    cancel = SimpleNamespace(requested=True, count=1, received=signal.SIGINT)
    outcome = runner._removed(Job("12.0", (), "HTCondor job 12.0"), ["12"], [], cancel, 0.0, status)
    assert outcome.interrupted and outcome.exit_code == 130 and (outcome.reason or "").endswith("HTCondor job 12.0 is Removed")
    assert fake.answers == [] and fake.calls.count("condor_rm") == 1 and fake.calls[-1] == "condor_history"


def test_the_wait_for_the_job_to_leave_the_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue that keeps the removed job (a stuck shadow): cancel_wait bounds the wait."""
    removed = {"JobStatus": 3, "RemoveReason": "via condor_rm"}
    runner, fake = fake_runner(tmp_path, monkeypatch, [(removed, None)] * 1000)
    monkeypatch.setattr(runner, "bounds", lambda: FollowBounds(cancel_wait=0.5))
    status = runner._confirm_removed(Job("12.0", (), "HTCondor job 12.0"), [], None)
    assert status is not None and not status.ended and status.state == "Removed, leaving the queue"
    assert 0 < len(fake.calls) < 1000


@pytest.mark.skipif(not INSTALLED, reason="the plugin is not installed (scripts/test.sh installs it)")
def test_cuberun_finds_the_plugin_through_its_entry_point(tmp_path: Path) -> None:
    from cuberun.runners import registry

    assert "htcondor" in registry.plugin_names() and registry.get("htcondor") is HTCondorRunner
    root = make_cube(tmp_path)
    (root / "mlcube.yaml").write_text(CUBE + "htcondor: {files: transfer, request_cpus: 3}\n")
    cube = load_cube(str(root))
    assert not cube.warnings  # the plugin's section is known, not "unknown top-level key"
    runner = make_runner(cube, "htcondor", RunOptions())  # a platform named like the plugin's runner
    assert isinstance(runner, HTCondorRunner) and runner.config["files"] == "transfer" and runner.config["request_cpus"] == 3
    (root / "mlcube.yaml").write_text(CUBE + "htcondor: {files: ftp}\n")
    with pytest.raises(Exception, match="htcondor.files"):
        load_cube(str(root))


def test_a_sweep_is_one_cluster_with_one_argument_line_per_variant(tmp_path: Path) -> None:
    root = make_cube(tmp_path)
    runner, _ = runner_for(root)
    cube = runner.cube
    variants = [resolve_task(cube, "copy", {"out": "sweeps/lr=0.1/out"}), resolve_task(cube, "copy", {"out": "sweeps/it's 2/out"})]
    found = runner.array_file(variants)
    assert found is not None
    path, content = found
    ws = root / "workspace"
    assert "arguments = $(CuberunArgs)\n" in content and path.endswith(".sub") and "-array-" in path
    assert content.endswith(
        "queue CuberunArgs from (\n"
        f'"sh probe.sh copy --data={ws}/data --cfg={ws}/params.yaml --out={ws}/sweeps/lr=0.1/out"\n'
        f"\"sh probe.sh copy --data={ws}/data --cfg={ws}/params.yaml '--out={ws}/sweeps/it''s 2/out'\"\n"
        ")\n"
    )
    steps = runner.array_steps(variants)
    assert [s.purpose for s in steps] == ["submit-file", "submit", "follow", "then", "on Ctrl-C"]
    transfer, _ = runner_for(root, {"files": "transfer"})
    assert transfer.array_file(variants) is None  # other files per variant: one submission each
    assert [s.purpose for s in transfer.array_steps(variants)].count("submit") == 2
