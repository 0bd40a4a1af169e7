"""The kubeflow runner: the KFP v2 pipeline compiled offline for the mnist example (structure,
dependencies, images, args, PVC mounts, resources), and the submission flow.

There is no Kubeflow Pipelines server here. Compilation is real (the `kfp` SDK). Submission is
tested twice: in-process through the runner's `client_factory` seam with a fake `kfp.Client`
(the arguments cuberun passes, the per-task outcome mapping, the deadline, Ctrl-C), and through
the real CLI with the real `kfp.Client` against FakeKFPAPI (tests/k8s_fake_api.py), an in-test
HTTP server on 127.0.0.1 that speaks the few v2beta1 calls used (healthz, experiments, create
and get run, terminate). The server's answers are scripted, not a real KFP backend. The kfp tests need `kfp` + `kfp-kubernetes`, which cannot
share a venv with the `kubernetes` 37 client (kfp pins kubernetes<31 and exact requests/urllib3
versions): scripts/test.sh runs this file in a second venv. CUBERUN_REQUIRE_KFP=1 turns a
missing kfp into a failure instead of a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from cuberun.errors import RunnerUnavailable, TaskFailed, UsageError
from cuberun.execute import make_runner, run_tasks
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.kubeflow import ComponentStep, KubeflowRunner
from cuberun.spec.load import load_cube
from tests.conftest import CLI, EXAMPLES

PVC = "mnist-ws"


def require_kfp() -> None:
    try:
        import kfp  # noqa: F401
        from kfp import kubernetes  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CUBERUN_REQUIRE_KFP") == "1":
            pytest.fail(f"kfp is required (CUBERUN_REQUIRE_KFP=1): {exc}", pytrace=False)
        pytest.skip(f"needs kfp and kfp-kubernetes (pip install 'cuberun[kubeflow]'): {exc}")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    yield


@pytest.fixture
def mnist(tmp_path: Path) -> Path:
    """A private copy of the mnist example (runs write records and outputs into its workspace)."""
    dst = tmp_path / "mnist"
    shutil.copytree(EXAMPLES / "mnist", dst, ignore=shutil.ignore_patterns(".cuberun", "data", "model", "logs", "metrics.json"))
    return dst


def runner_for(cube_dir: Path, *params: str, options: RunOptions | None = None) -> KubeflowRunner:
    params = (f"runner.pvc={PVC}", *params)
    cube = load_cube(cube_dir, overrides=params)
    runner = make_runner(cube, "kubeflow", options or RunOptions(), params)
    assert isinstance(runner, KubeflowRunner)
    return runner


def resolved(runner: KubeflowRunner, *names: str) -> list[Any]:
    return [resolve_task(runner.cube, n, check_inputs=False) for n in names]


def compiled(runner: KubeflowRunner, names: tuple[str, ...], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    runner.compile(resolved(runner, *names), path)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 2, "the pipeline spec and the kubernetes platform spec (kfp-kubernetes)"
    return docs[0], docs[1]


# -- compilation (offline, real kfp) -----------------------------------------------------------------
def test_mnist_pipeline_structure(mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    runner = runner_for(mnist, options=RunOptions(gpus="1"))
    spec, platform = compiled(runner, ("download", "train", "evaluate"), tmp_path / "mnist.yaml")

    assert spec["pipelineInfo"]["name"] == "mnist"
    assert sorted(spec["components"]) == ["comp-download", "comp-evaluate", "comp-train"]
    dag = spec["root"]["dag"]["tasks"]
    assert sorted(dag) == ["download", "evaluate", "train"]
    assert "dependentTasks" not in dag["download"]
    assert dag["train"]["dependentTasks"] == ["download"]
    assert sorted(dag["evaluate"]["dependentTasks"]) == ["download", "train"]
    assert all(t["cachingOptions"] == {} for t in dag.values()), "caching is off: tasks have side effects on the volume"
    assert {name: t["taskInfo"]["name"] for name, t in dag.items()} == {"download": "download", "train": "train", "evaluate": "evaluate"}

    executors = spec["deploymentSpec"]["executors"]
    train = executors[spec["components"]["comp-train"]["executorLabel"]]["container"]
    assert train["image"] == "cuberun/mnist:0.1"
    assert "command" not in train  # the image ENTRYPOINT applies
    assert train["args"] == ["train", f"--data_dir=/mnt/mlcube/{PVC}/data", f"--train_config=/mnt/mlcube/{PVC}/train.yaml",
                             f"--log_dir=/mnt/mlcube/{PVC}/logs", f"--model_dir=/mnt/mlcube/{PVC}/model"]
    assert train["resources"]["resourceMemoryLimit"] == "2Gi" and train["resources"]["resourceMemoryRequest"] == "2Gi"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert str(train["resources"]["accelerator"]["resourceCount"]) == "1"
    evaluate = executors["exec-evaluate"]["container"]
    assert evaluate["args"][-1] == f"--metrics=/mnt/mlcube/{PVC}/metrics.json"

    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(mounts) == ["exec-download", "exec-evaluate", "exec-train"]
    for executor in mounts.values():
        (mount,) = executor["pvcMount"]
        assert mount["mountPath"] == f"/mnt/mlcube/{PVC}"
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == PVC


def test_only_the_selected_tasks_are_compiled(mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    spec, _ = compiled(runner_for(mnist), ("train",), tmp_path / "train.yaml")
    assert list(spec["root"]["dag"]["tasks"]) == ["train"]
    assert "dependentTasks" not in spec["root"]["dag"]["tasks"]["train"]


def test_dependencies_through_tasks_left_out(mnist: Path) -> None:
    """evaluate needs train's model and download's data; with train left out (up to date), it still runs after download."""
    runner = runner_for(mnist)
    assert runner.dependencies(["download", "train", "evaluate"]) == {"download": [], "train": ["download"], "evaluate": ["download", "train"]}
    assert runner.dependencies(["download", "evaluate"]) == {"download": [], "evaluate": ["download"]}


ENTRYPOINT_CUBE = """
name: getting_started
docker: {image: mlcommons/getting_started:0.0.1}
tasks:
  download_data:
    entrypoint: python 01_download_dataset.py
    parameters:
      inputs: {parameters_file: parameters.yaml}
      outputs: {data_dir: {type: directory, default: data}}
  preprocess_data:
    entrypoint: python 02_preprocess_dataset.py
    parameters:
      inputs: {data_dir: {type: directory, default: data}}
      outputs: {preprocessed: {type: directory, default: preprocessed}}
"""


def test_entrypoint_tasks_and_settings(tmp_path: Path) -> None:
    require_kfp()
    root = tmp_path / "gs"
    root.mkdir()
    (root / "mlcube.yaml").write_text(ENTRYPOINT_CUBE)
    runner = runner_for(root, "runner.sub_path=cubes/gs", "runner.image_pull_policy=IfNotPresent", "runner.cpu=2", "runner.caching=true")
    spec, platform = compiled(runner, ("download_data", "preprocess_data"), tmp_path / "gs.yaml")
    container = spec["deploymentSpec"]["executors"]["exec-download-data"]["container"]
    assert container["command"] == ["python", "01_download_dataset.py"]
    assert container["args"] == [f"--parameters_file=/mnt/mlcube/{PVC}/parameters.yaml", f"--data_dir=/mnt/mlcube/{PVC}/data"]
    assert str(container["resources"]["resourceCpuLimit"]) == "2"
    assert spec["root"]["dag"]["tasks"]["preprocess-data"]["dependentTasks"] == ["download-data"]
    assert spec["root"]["dag"]["tasks"]["preprocess-data"]["cachingOptions"] == {"enableCache": True}
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-download-data"]
    assert executor["pvcMount"][0]["subPath"] == "cubes/gs"
    assert executor["imagePullPolicy"] == "IfNotPresent"


def test_cli_compiles_offline_without_a_host(cli: CLI, mnist: Path) -> None:
    require_kfp()
    res = cli("run", f"--mlcube={mnist}", "--platform=kubeflow", f"-Prunner.pvc={PVC}", "--task=train")
    assert res.returncode == 0, res.stderr
    out = mnist / "workspace" / ".cuberun" / "kubeflow" / "mnist.yaml"
    assert f"compiled pipeline 'mnist' to {out}; not submitted: pipeline_host is not set" in res.stderr
    spec = next(yaml.safe_load_all(out.read_text()))
    assert sorted(spec["root"]["dag"]["tasks"]) == ["download", "train"]  # train's prerequisite comes along (task graph)


def test_output_setting(cli: CLI, mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    target = tmp_path / "out" / "pipe.yaml"
    res = cli("run", f"--mlcube={mnist}", "--platform=kubeflow", f"-Prunner.pvc={PVC}", "--task=download", f"-Prunner.output={target}")
    assert res.returncode == 0, res.stderr
    assert target.is_file()


# -- without kfp, and bad settings (no kfp needed) ----------------------------------------------------
def test_dry_run_describes_the_tasks(cli: CLI) -> None:
    res = cli("run", f"--mlcube={EXAMPLES / 'mnist'}", "--platform=kubeflow", f"-Prunner.pvc={PVC}", "--task=evaluate", "--dry-run",
              "-Prunner.pipeline_host=http://127.0.0.1:1")
    assert res.returncode == 0, res.stderr
    assert "# kubeflow pipeline 'mnist', task 'evaluate' (after: download, train)" in res.stdout
    assert f"#   args:    evaluate --data_dir=/mnt/mlcube/{PVC}/data" in res.stdout
    assert "submitted to http://127.0.0.1:1" in res.stdout


def test_pvc_is_mandatory() -> None:
    cube = load_cube(EXAMPLES / "mnist")
    runner = make_runner(cube, "kubeflow", RunOptions(), ())
    with pytest.raises(UsageError) as err:
        runner.run_steps(resolve_task(cube, "download", check_inputs=False))
    assert "needs the PersistentVolumeClaim" in err.value.lines()[0] and "-Prunner.pvc=NAME" in err.value.lines()[0]


def test_without_kfp_the_extra_is_named(cli: CLI, tmp_path: Path, mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "blocked" / "kfp"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("No module named kfp (blocked by the test)")\n')
    res = cli("run", f"--mlcube={mnist}", "--platform=kubeflow", f"-Prunner.pvc={PVC}", "--task=download",
              env={"PYTHONPATH": str(tmp_path / "blocked")})
    assert res.returncode == 125
    assert "the kubeflow runner needs the 'kfp' package. Hint: pip install 'cuberun[kubeflow]'" in res.stderr
    monkeypatch.setitem(sys.modules, "kfp", None)
    assert "pip install 'cuberun[kubeflow]'" in (runner_for(mnist).unavailable_reason() or "")


def test_component_step_json() -> None:
    runner = runner_for(EXAMPLES / "mnist")
    (step,) = runner.run_steps(resolve_task(runner.cube, "train", check_inputs=False))
    assert isinstance(step, ComponentStep)
    data = step.to_json()
    assert data["argv"][0] == "train" and data["component"]["after"] == ["download"]


# -- submission through the seam ------------------------------------------------------------------------
@dataclass
class TaskDetail:
    display_name: str
    state: str
    error: Any = None


@dataclass
class RunDetails:
    task_details: list[TaskDetail] = field(default_factory=list)


@dataclass
class Run:
    state: str
    run_details: RunDetails = field(default_factory=RunDetails)
    error: Any = None


@dataclass
class Error:
    message: str


@dataclass
class Submitted:
    run_id: str


class FakeClient:
    """Stands in for kfp.Client: records the calls, plays back a script of run states."""

    instances: ClassVar[list[FakeClient]] = []
    script: ClassVar[list[Run]] = []
    interrupt_at: int | None = None  # send ourselves SIGINT on this get_run call

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0
        self.terminated: list[str] = []
        FakeClient.instances.append(self)

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Submitted:
        assert Path(pipeline_file).is_file()
        self.pipeline = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
        self.submitted.append((pipeline_file, kwargs))
        return Submitted("run-42")

    def get_run(self, run_id: str) -> Run:
        assert run_id == "run-42"
        self.polls += 1
        if FakeClient.interrupt_at == self.polls:
            os.kill(os.getpid(), signal.SIGINT)
        return FakeClient.script[min(self.polls, len(FakeClient.script)) - 1]

    def terminate_run(self, run_id: str) -> None:
        self.terminated.append(run_id)


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    require_kfp()
    monkeypatch.setattr(FakeClient, "instances", [])
    monkeypatch.setattr(FakeClient, "interrupt_at", None)
    monkeypatch.setattr(KubeflowRunner, "client_factory", FakeClient)
    return FakeClient


def submit(mnist: Path, *params: str, task: str = "evaluate") -> list[Any]:
    runner = runner_for(mnist, "runner.pipeline_host=http://kfp.example:8888", "runner.poll_interval=0.05", *params)
    return run_tasks(runner.cube, runner, [task], {})


def records(mnist: Path) -> dict[str, str]:
    import json

    found = {}
    for path in (mnist / "workspace" / ".cuberun" / "runs").glob("*/record.json"):
        data = json.loads(path.read_text())
        found[data["task"]] = data["status"]
    return found


def test_submit_and_wait_success(fake_client: type[FakeClient], mnist: Path) -> None:
    fake_client.script = [Run("PENDING"), Run("RUNNING"), Run("SUCCEEDED")]
    results = submit(mnist, "runner.experiment=digits", "runner.namespace=team-a", "runner.client_args={existing_token: t0k}")
    assert [(r.task, r.status) for r in results] == [("download", "succeeded"), ("train", "succeeded"), ("evaluate", "succeeded")]
    (client,) = fake_client.instances
    assert client.kwargs == {"host": "http://kfp.example:8888", "existing_token": "t0k", "namespace": "team-a"}
    ((path, kwargs),) = client.submitted
    assert path == str(mnist / "workspace" / ".cuberun" / "kubeflow" / "mnist.yaml")
    assert kwargs["experiment_name"] == "digits"
    assert kwargs["namespace"] == "team-a"
    assert kwargs["enable_caching"] is False and kwargs["arguments"] == {}
    assert kwargs["run_name"].startswith("mnist-download-train-evaluate-")
    assert sorted(client.pipeline["root"]["dag"]["tasks"]) == ["download", "evaluate", "train"]
    assert client.polls == 3
    assert records(mnist) == {"download": "succeeded", "train": "succeeded", "evaluate": "succeeded"}


def test_a_failed_task_fails_the_run(fake_client: type[FakeClient], mnist: Path) -> None:
    details = RunDetails([TaskDetail("download", "SUCCEEDED"), TaskDetail("train", "FAILED", Error("exit status 3")),
                          TaskDetail("evaluate", "SKIPPED")])
    fake_client.script = [Run("RUNNING"), Run("FAILED", details)]
    with pytest.raises(TaskFailed) as err:
        submit(mnist)
    assert err.value.exit_code == 1
    assert "task 'train' failed in pipeline run run-42: exit status 3" in err.value.lines()[0]
    assert records(mnist) == {"download": "succeeded", "train": "failed", "evaluate": "cancelled"}


def test_run_failure_without_task_details(fake_client: type[FakeClient], mnist: Path) -> None:
    fake_client.script = [Run("FAILED", error=Error("the PVC mnist-ws was not found"))]
    with pytest.raises(TaskFailed) as err:
        submit(mnist, task="download")
    assert "pipeline run run-42 ended FAILED: the PVC mnist-ws was not found" in err.value.lines()[0]


def test_deadline(fake_client: type[FakeClient], mnist: Path) -> None:
    fake_client.script = [Run("RUNNING")]
    with pytest.raises(TaskFailed) as err:
        submit(mnist, "runner.timeout=0.3", task="download")
    assert err.value.exit_code == 124
    assert "did not finish within 0.3 s" in err.value.lines()[0]


def test_ctrl_c_terminates_the_run(fake_client: type[FakeClient], mnist: Path) -> None:
    fake_client.script = [Run("RUNNING")]
    fake_client.interrupt_at = 2
    with pytest.raises(TaskFailed) as err:
        submit(mnist)
    assert err.value.exit_code == 130
    (client,) = fake_client.instances
    assert client.terminated == ["run-42"]
    assert records(mnist)["download"] == "interrupted"


def test_unreachable_host_is_one_line(monkeypatch: pytest.MonkeyPatch, mnist: Path) -> None:
    require_kfp()

    def broken(**kwargs: Any) -> Any:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(KubeflowRunner, "client_factory", broken)
    with pytest.raises(RunnerUnavailable) as err:
        submit(mnist, task="download")
    assert "cannot connect to the Kubeflow Pipelines API at http://kfp.example:8888" in err.value.lines()[0]


# -- the real kfp.Client, through the CLI, against an in-test KFP API server ----------------------------
NO_PROXY = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"), "")
NO_PROXY.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
ALL_OK = {"download": "SUCCEEDED", "train": "SUCCEEDED", "evaluate": "SUCCEEDED"}


def kfp_args(mnist: Path, url: str, *extra: str) -> list[str]:
    return ["run", f"--mlcube={mnist}", "--platform=kubeflow", f"-Prunner.pvc={PVC}", f"-Prunner.pipeline_host={url}",
            "-Prunner.poll_interval=0.1", *extra]


def test_cli_submits_to_a_kfp_api_and_waits(cli: CLI, mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    from tests.k8s_fake_api import FakeKFPAPI

    states = [("RUNNING", {"download": "RUNNING"}), ("RUNNING", {"download": "SUCCEEDED", "train": "RUNNING"}), ("SUCCEEDED", ALL_OK)]
    with FakeKFPAPI(states) as api:
        res = cli(*kfp_args(mnist, api.url, "--task=evaluate"), env={**NO_PROXY, "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "Run details" not in res.stdout and "Run details" in res.stderr  # kfp's prints go to stderr
    assert "submitted pipeline run run-1" in res.stderr
    assert "task 'train' in pipeline run run-1: SUCCEEDED" in res.stderr
    (experiment,) = [r.body for r in api.requests if r.method == "POST" and r.path == "/apis/v2beta1/experiments"]
    assert experiment["display_name"] == "mnist"
    (run,) = [r.body for r in api.requests if r.method == "POST" and r.path == "/apis/v2beta1/runs"]
    assert run["display_name"].startswith("mnist-download-train-evaluate-")
    assert run["experiment_id"] == "exp-1"
    submitted = run["pipeline_spec"]  # with a platform spec, kfp sends both
    dag = submitted["pipeline_spec"]["root"]["dag"]["tasks"]
    assert dag["evaluate"]["dependentTasks"] == ["download", "train"]
    mounts = submitted["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]["pvcMount"]
    assert mounts[0]["mountPath"] == f"/mnt/mlcube/{PVC}"
    assert len([r for r in api.requests if r.method == "GET" and r.path == "/apis/v2beta1/runs/run-1"]) >= 3


def test_cli_reports_the_failed_task(cli: CLI, mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    from tests.k8s_fake_api import FakeKFPAPI

    with FakeKFPAPI([("FAILED", {"download": "SUCCEEDED", "train": "FAILED"})]) as api:
        res = cli(*kfp_args(mnist, api.url, "--task=evaluate"), env={**NO_PROXY, "HOME": str(tmp_path)})
    assert res.returncode == 1
    assert "task 'train' failed in pipeline run run-1: train failed: exit status 3" in res.stderr
    assert records(mnist) == {"download": "succeeded", "train": "failed", "evaluate": "cancelled"}


def test_cli_ctrl_c_terminates_the_kfp_run(cli_env: dict[str, str], mnist: Path, tmp_path: Path) -> None:
    require_kfp()
    import subprocess

    from tests.k8s_fake_api import FakeKFPAPI

    with FakeKFPAPI([("RUNNING", {"download": "RUNNING"})]) as api:
        proc = subprocess.Popen([sys.executable, "-m", "cuberun", *kfp_args(mnist, api.url, "--task=download")],
                                env={**cli_env, **NO_PROXY, "HOME": str(tmp_path)}, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert api.wait_for(lambda: api.polls.get("run-1", 0) >= 2), "the run was never polled"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, err
        assert api.terminated == ["run-1"]
        assert "interrupted: terminating pipeline run run-1" in err
