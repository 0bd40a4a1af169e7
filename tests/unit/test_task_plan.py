"""The plan of a task (runners/base.py TaskPlan): made once per run of a task and consumed by the
up-to-date identity, the run record and the run itself; a runner of the first contract
(`run(task, log_path)`) still works. Command construction only: the docker and backendai runs
themselves are tested against the real backends (tests/integration)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from cuberun import testing
from cuberun.process import Outcome, stream
from cuberun.resolve import ResolvedTask, resolve_task
from cuberun.runners.base import Runner, RunOptions, Step, TaskPlan
from cuberun.schema import Field

CUBE = """\
name: planned
docker: {image: "repo/planned:1"}
backendai: {image: "python:3.11"}
tasks:
  t:
    entrypoint: python3 main.py
    parameters:
      outputs: {out: {type: directory, default: out/}}
"""


@pytest.fixture
def cube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in testing.isolated_env(tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    return testing.make_cube(tmp_path / "cube", CUBE)


def test_a_docker_plan_names_its_container_once(cube: Path) -> None:
    runner = testing.make_runner(cube, "docker")
    rt = resolve_task(runner.cube, "t", allow_missing_inputs=True)
    plan = runner.plan(rt)
    name = plan.value("container")
    assert f"--name={name}" in plan.steps[0].argv
    assert runner.watchdog_cleanup(plan) == [["docker", "rm", "-f", name]]  # type: ignore[attr-defined]
    assert runner.plan(rt).value("container") != name  # a new run of the same task: a new container
    assert not any(k.startswith("_names") for k in vars(runner))  # no memo keyed by id(task)


def test_the_docker_identity_leaves_the_container_name_out(cube: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cuberun.runners.docker import DockerRunner, ImageState

    monkeypatch.setattr(DockerRunner, "image_state", lambda self, refresh=False: ImageState(True, {}, "sha256:abc"))
    runner = testing.make_runner(cube, "docker")
    rt = resolve_task(runner.cube, "t", allow_missing_inputs=True)
    one, two = runner.plan(rt), runner.plan(rt)
    assert one.value("container") != two.value("container")
    assert runner.identity(one) == runner.identity(two) == runner.fingerprint(rt)
    assert "--name=cuberun-t-*" in runner.identity(one)["command"][0]


def test_a_backendai_plan_names_its_session_once(cube: Path) -> None:
    runner = testing.make_runner(cube, "backendai")
    rt = resolve_task(runner.cube, "t", allow_missing_inputs=True)
    plan = runner.plan(rt)
    name = plan.value("session")
    submit = next(s for s in plan.steps if s.purpose == "submit")
    assert name in submit.argv
    runner._configured = True  # type: ignore[attr-defined]  # command construction only: no vfolder check
    [session] = runner.plan_batch([plan])  # type: ignore[attr-defined]
    assert session.name == name  # what is submitted is what the record shows


class _FirstContract(Runner):
    """A plugin written for the first contract: run(task, log_path), run_array(tasks, ...)."""

    name = "firstcontract"
    schema: ClassVar[dict[str, Field]] = {}
    supports_array = True

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        outs = [str(p.host_path) for p in task.params if p.io == "output"]
        code = "import os, sys\nfor o in sys.argv[1:]:\n    os.makedirs(o, exist_ok=True)\n    open(os.path.join(o, 'x'), 'w').write('x')\n"
        return [Step((sys.executable, "-c", code, *outs))]

    def run(self, task: ResolvedTask, log_path: str) -> Outcome:  # type: ignore[override]
        assert isinstance(task, ResolvedTask)
        with open(log_path, "ab") as log:
            return stream(self.run_steps(task)[0].argv, log=log)

    def run_array(self, tasks: Sequence[ResolvedTask], log_paths: Sequence[str]) -> list[Outcome]:  # type: ignore[override]
        return [self.run(t, p) for t, p in zip(tasks, log_paths, strict=True)]  # type: ignore[arg-type]


def test_a_runner_of_the_first_contract_is_given_the_task(cube: Path, tmp_path: Path) -> None:
    from cuberun.execute import run_tasks
    from cuberun.spec.load import load_cube

    loaded = load_cube(cube)
    runner = _FirstContract(loaded, {}, "firstcontract", RunOptions())
    [result] = run_tasks(loaded, runner, ["t"], {})
    assert result.status == "succeeded"
    rt = resolve_task(loaded, "t")
    plan = runner.plan(rt)
    assert isinstance(plan, TaskPlan) and plan.steps == tuple(runner.run_steps(rt))
    assert runner.identity(plan) == {"runner": "firstcontract", "command": [list(plan.steps[0].argv)]}
    assert runner.run(plan, str(tmp_path / "a.log")).exit_code == 0  # a plan: unwrapped to its task
    assert runner.run(rt, str(tmp_path / "b.log")).exit_code == 0  # type: ignore[arg-type]  # a task still works
    assert [o.exit_code for o in runner.run_array([plan, plan], [str(tmp_path / "c.log")] * 2)] == [0, 0]


def test_plans_are_immutable(cube: Path) -> None:
    runner = testing.make_runner(cube, "docker")
    plan = runner.plan(resolve_task(runner.cube, "t", allow_missing_inputs=True))
    with pytest.raises(AttributeError):
        plan.steps = ()  # type: ignore[misc]

