"""The run policy (cuberun.policy): the strict default, the allow-list, each named relaxation,
and how the docker runner maps it (golden) and shows it in --dry-run."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.policy import Policy, decide, disallowed, summary_of
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube
from tests.conftest import CLI

STRICT = ["--network=none", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp:rw,exec,mode=1777"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    yield


def base(**kw: object) -> Policy:
    args: dict[str, object] = {"need_internet": False, "cli_network": None, "settings_network": None, "cube_network": None, "input_mode": None,
                                   "input_mode_source": "cli", "host_user": (True, "cube"), "remove": (True, "cube"), "raw_args": (), "allow_run_args": False}
    args.update(kw)
    return decide(**args)  # type: ignore[arg-type]


def test_strict_default() -> None:
    p = base()
    assert p.strict and p.network == "none" and p.inputs_read_only and p.host_user and p.remove
    assert p.summary().startswith("policy: strict (no network")


def test_each_relaxation_is_named() -> None:
    assert base(need_internet=True).to_json()["network"] == "default"
    assert [r.name for r in base(need_internet=True).relaxations] == ["network"]
    p = base(cli_network="host", input_mode="rw", host_user=(False, "settings"), remove=(False, "cube"),
             raw_args=[("cpu_args", ["--ipc=host"], "settings")], security_opt=("seccomp=unconfined", "cli"))
    assert [(r.name, r.source) for r in p.relaxations] == [
        ("network", "cli"), ("writable-inputs", "cli"), ("user", "settings"), ("keep-container", "cube"), ("security-opt", "cli"), ("run-args", "settings")]
    assert "network: --network=host (from cli)" in summary_of(p.to_json())
    assert base(cli_network="none").strict  # --network none is no relaxation


def test_allow_list() -> None:
    assert disallowed(["--shm-size=2g", "--gpus", "all", "-e", "A=1", "-eB=2", "--init", "--ulimit", "nofile=10"]) == []
    assert disallowed(["--privileged", "--shm-size", "1g", "--cap-add=SYS_ADMIN", "-v", "/:/host"]) == ["--privileged", "--cap-add=SYS_ADMIN", "-v", "/:/host"]


def test_cube_raw_args_need_allow_run_args() -> None:
    with pytest.raises(UsageError, match="docker.gpu_args has '--privileged'") as info:
        base(raw_args=[("gpu_args", ["--privileged"], "cube")])
    assert "pass --allow-run-args" in str(info.value.hint)
    p = base(raw_args=[("gpu_args", ["--privileged"], "cube")], allow_run_args=True)
    assert [r.detail for r in p.relaxations] == ["docker.gpu_args: --privileged (--allow-run-args)"]
    with pytest.raises(UsageError, match="the cube sets the container network to 'host'"):
        base(cube_network="host")


CUBE = """
name: c
platform: {need_internet_access: true}
docker: {image: example/c:1, cpu_args: --shm-size=1g --privileged}
tasks:
  t:
    parameters:
      inputs: {data: {type: directory, default: data, opts: rw}}
"""


def test_docker_mapping_golden(tmp_path: Path) -> None:
    (tmp_path / "mlcube.yaml").write_text(textwrap.dedent(CUBE))
    (tmp_path / "workspace" / "data").mkdir(parents=True)
    cube = load_cube(tmp_path)
    with pytest.raises(UsageError, match="'--privileged'"):
        make_runner(cube, "docker", RunOptions()).run_steps(resolve_task(cube, "t"))
    runner = make_runner(cube, "docker", RunOptions(allow_run_args=True))
    rt = resolve_task(cube, "t")
    argv = list(runner.run_steps(rt)[0].argv)
    assert argv[5:12] == ["-u", "1000:1000", *STRICT[1:], "--shm-size=1g", "--privileged"]  # the engine's default network: no --network
    policy = runner.policy(rt)
    assert policy is not None
    assert [r.name for r in policy.relaxations] == ["network", "writable-inputs", "run-args"]


def test_dry_run_shows_the_policy(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "mlcube.yaml").write_text("name: c\ndocker: {image: example/c:1}\ntasks: {t: {}}\n")
    strict = cli("run", f"--mlcube={tmp_path}", "--platform=docker", "--dry-run")
    assert strict.returncode == 0 and "# t: policy: strict" in strict.stdout and "--network=none" in strict.stdout
    relaxed = cli("run", f"--mlcube={tmp_path}", "--platform=docker", "--dry-run", "--network=host", "--json")
    data = json.loads(relaxed.stdout)
    assert data["policy"]["t"]["relaxations"] == [{"name": "network", "detail": "--network=host", "source": "cli"}]
    refused = cli("run", f"--mlcube={tmp_path}", "--platform=docker", "--dry-run", "-Pdocker.cpu_args=--privileged")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("cuberun: error: the cube's docker.cpu_args has '--privileged'")


def test_report_shows_the_policy_of_each_run() -> None:
    from cuberun.report import render_report

    strict = {"run_id": "r1", "task": "t", "status": "succeeded", "start": "2026-12-02T07:00:00+00:00", "policy": base().to_json()}
    relaxed = {**strict, "run_id": "r2", "policy": base(cli_network="host").to_json()}
    html = render_report([strict, relaxed])
    assert "<b>policy</b> strict (no network" in html
    assert "<b>policy</b> relaxed: network: --network=host (from cli)" in html
