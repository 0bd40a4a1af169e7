"""Golden Kubernetes manifests of the k8s runner (pure: no cluster, no client), validated
strictly against the Kubernetes 1.37 schemas with kubernetes-validate, plus our own checks for
what those schemas cannot express (DNS-1123 names, restart policies, quantities, labels)."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cuberun.errors import RunnerUnavailable, UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.k8s import KubernetesRunner
from cuberun.runners.k8s.manifests import ManifestStep, check_manifest, dns_label, gib_quantity, job_name, label_value, memory_quantity
from cuberun.spec.load import load_cube
from tests.conftest import CLI, EXAMPLES

NAME = re.compile(r"^cuberun-[a-z0-9-]+-[a-z0-9]{5}$")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))  # absent unless a test writes it
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setattr(os, "getuid", lambda: 1000)  # the pod runs as the host user's uid:gid
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    yield


def runner_for(cube_dir: Path, *params: str, options: RunOptions | None = None, platform: str = "k8s") -> KubernetesRunner:
    cube = load_cube(cube_dir, overrides=params)
    runner = make_runner(cube, platform, options or RunOptions(), params)
    assert isinstance(runner, KubernetesRunner)
    return runner


def job_for(runner: KubernetesRunner, task: str) -> dict[str, Any]:
    rt = resolve_task(runner.cube, task, check_inputs=False)
    *before, step = runner.run_steps(rt)
    assert isinstance(step, ManifestStep) and step.manifest["kind"] == "Job"
    assert [s.purpose for s in before] == (["network-policy"] if runner.policy(rt).network == "none" else [])
    return dict(step.manifest)


def normalized(job: dict[str, Any]) -> dict[str, Any]:
    """Pin the random Job name to NAME and the cube file annotation to FILE after checking them."""
    doc = copy.deepcopy(job)
    name = doc["metadata"]["name"]
    assert NAME.match(name) and len(name) <= 63, name
    text = json.dumps(doc).replace(name, "NAME")
    doc = json.loads(text)
    assert Path(doc["metadata"]["annotations"]["cuberun.io/cube-file"]).name == "mlcube.yaml"
    doc["metadata"]["annotations"]["cuberun.io/cube-file"] = "FILE"
    return doc


STRICT_CONTAINER = {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def ro(path: str, sub: str) -> dict[str, Any]:
    """A read-only input mount over the workspace volume."""
    return {"name": "workspace", "mountPath": path, "subPath": sub, "readOnly": True}


def job(cube: str, task: str, container: dict[str, Any], *, pvc: str, volume: dict[str, Any] | None = None,
        pod_extra: dict[str, Any] | None = None, inputs: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": cube, "app.kubernetes.io/component": task, "app.kubernetes.io/managed-by": "cuberun",
              "cuberun.io/job": "NAME"}
    mounts = container.pop("volumeMounts", [{"name": "workspace", "mountPath": f"/mnt/mlcube/{pvc}"}])
    container = {"name": "task", **container, "securityContext": STRICT_CONTAINER, "volumeMounts": [*mounts, *inputs, TMP_MOUNT]}
    pod: dict[str, Any] = {"restartPolicy": "Never", "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                           **(pod_extra or {}), "containers": [container],
                           "volumes": [volume or {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc}}, {"name": "tmp", "emptyDir": {}}]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "NAME", "namespace": "default", "labels": labels,
                     "annotations": {"cuberun.io/cube-file": "FILE", "cuberun.io/task-name": task}},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


ENTRYPOINT_CUBE = """
name: getting_started
docker: {image: mlcommons/getting_started:0.0.1}
platform: {accelerator_count: 1}
tasks:
  download_data:
    entrypoint: python 01_download_dataset.py
    parameters:
      inputs: {parameters_file: parameters.yaml}
      outputs: {data_dir: {type: directory, default: data}}
  check_gpus:
    entrypoint: ./check_gpus.sh
    parameters:
      outputs: {report: {type: file, default: reports/gpus.txt}}
"""


def make_cube(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text))
    return root


# -- golden manifests ------------------------------------------------------------------------------
def golden_cases(tmp: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (generated, expected), for the strict validation test too."""
    cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    r = runner_for(EXAMPLES / "hello_world")
    cases["hello_world"] = (job_for(r, "hello"), job("hello_world", "hello", {
        "image": "cuberun/hello_world:0.1",
        "args": ["hello", "--name=/mnt/mlcube/hello-world/names/alice.txt", "--chat=/mnt/mlcube/hello-world/chats/chat_with_alice.txt"],
    }, pvc="hello-world", inputs=(ro("/mnt/mlcube/hello-world/names/alice.txt", "names/alice.txt"),)))

    r = runner_for(EXAMPLES / "mnist", options=RunOptions(gpus="2"))
    cases["mnist_train_gpus_memory"] = (job_for(r, "train"), job("mnist", "train", {
        "image": "cuberun/mnist:0.1",
        "args": ["train", "--data_dir=/mnt/mlcube/mnist/data", "--train_config=/mnt/mlcube/mnist/train.yaml",
                 "--log_dir=/mnt/mlcube/mnist/logs", "--model_dir=/mnt/mlcube/mnist/model"],
        "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "2"}},
    }, pvc="mnist", inputs=(ro("/mnt/mlcube/mnist/data", "data"), ro("/mnt/mlcube/mnist/train.yaml", "train.yaml"))))

    r = runner_for(EXAMPLES / "mnist", "runner.pvc=team-data", "runner.namespace=ml", "runner.cpu=500m", "runner.backoff_limit=2",
                   "runner.sub_path=cubes/mnist", options=RunOptions(memory="4g"))
    expected = job("mnist", "evaluate", {
        "image": "cuberun/mnist:0.1",
        "args": ["evaluate", "--data_dir=/mnt/mlcube/team-data/data", "--model_dir=/mnt/mlcube/team-data/model",
                 "--log_dir=/mnt/mlcube/team-data/logs", "--metrics=/mnt/mlcube/team-data/metrics.json"],
        "resources": {"requests": {"memory": "4Gi", "cpu": "500m"}, "limits": {"memory": "4Gi", "cpu": "500m"}},
        "volumeMounts": [{"name": "workspace", "mountPath": "/mnt/mlcube/team-data", "subPath": "cubes/mnist"}],
    }, pvc="team-data", inputs=(ro("/mnt/mlcube/team-data/data", "cubes/mnist/data"), ro("/mnt/mlcube/team-data/model", "cubes/mnist/model")))
    expected["metadata"]["namespace"] = "ml"
    expected["spec"]["backoffLimit"] = 2
    cases["mnist_evaluate_config"] = (job_for(r, "evaluate"), expected)

    cube = make_cube(tmp / "getting_started", ENTRYPOINT_CUBE)
    r = runner_for(cube)
    cases["entrypoint"] = (job_for(r, "download_data"), job("getting_started", "download_data", {
        "image": "mlcommons/getting_started:0.0.1",
        "command": ["python", "01_download_dataset.py"],
        "args": ["--parameters_file=/mnt/mlcube/getting-started/parameters.yaml", "--data_dir=/mnt/mlcube/getting-started/data"],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }, pvc="getting-started", inputs=(ro("/mnt/mlcube/getting-started/parameters.yaml", "parameters.yaml"),)))
    cases["entrypoint_single_token"] = (job_for(r, "check_gpus"), job("getting_started", "check_gpus", {
        "image": "mlcommons/getting_started:0.0.1",
        "command": ["./check_gpus.sh"],
        "args": ["--report=/mnt/mlcube/getting-started/reports/gpus.txt"],  # the reference drops these (bug 2.3)
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }, pvc="getting-started"))

    (tmp / "settings.yaml").write_text("platforms:\n  single-node:\n    runner: k8s\n    volume: hostPath\n    env: {GREETING: hi}\n")
    r = runner_for(EXAMPLES / "hello_world", "runner.run_as=2000:3000", "runner.image_pull_policy=Never", options=RunOptions(gpus="0"),
                   platform="single-node")
    ws = str(EXAMPLES / "hello_world" / "workspace")
    cases["hostpath"] = (job_for(r, "bye"), job("hello_world", "bye", {
        "image": "cuberun/hello_world:0.1",
        "imagePullPolicy": "Never",
        "args": ["bye", "--name=/mnt/mlcube/hello-world/names/alice.txt", "--chat=/mnt/mlcube/hello-world/chats/chat_with_alice.txt"],
        "env": [{"name": "GREETING", "value": "hi"}],
    }, pvc="hello-world", volume={"name": "workspace", "hostPath": {"path": ws, "type": "DirectoryOrCreate"}},
        pod_extra={"securityContext": {"runAsUser": 2000, "runAsGroup": 3000, "runAsNonRoot": True}},
        inputs=(ro("/mnt/mlcube/hello-world/names/alice.txt", "names/alice.txt"),)))

    # the task's time limit and retries (retry.py): the cube's, with the invocation's winning over them and over the platform
    limited = make_cube(tmp / "limited", ENTRYPOINT_CUBE.replace("    entrypoint: ./check_gpus.sh\n", "    entrypoint: ./check_gpus.sh\n"
                                                                  "    timeout: 90.5\n    retries: 3\n"))
    r = runner_for(limited, "runner.backoff_limit=5", "runner.active_deadline_seconds=600", options=RunOptions(retries=1))
    expected = job("getting_started", "check_gpus", {
        "image": "mlcommons/getting_started:0.0.1",
        "command": ["./check_gpus.sh"],
        "args": ["--report=/mnt/mlcube/getting-started/reports/gpus.txt"],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }, pvc="getting-started")
    expected["spec"] = {"backoffLimit": 1, "activeDeadlineSeconds": 91, "template": expected["spec"]["template"]}
    cases["limits"] = (job_for(r, "check_gpus"), expected)
    return cases


GOLDEN = ["hello_world", "mnist_train_gpus_memory", "mnist_evaluate_config", "entrypoint", "entrypoint_single_token", "hostpath", "limits"]


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_job(case: str, tmp_path: Path) -> None:
    generated, expected = golden_cases(tmp_path)[case]
    assert normalized(generated) == expected
    assert check_manifest(generated) == []


def test_pvc_manifest_from_platform_block() -> None:
    r = runner_for(EXAMPLES / "mnist", "runner.create_pvc=true", "runner.storage_class=fast-ssd", "runner.access_mode=ReadWriteMany")
    (step,) = r.configure_steps()
    assert isinstance(step, ManifestStep) and step.purpose == "pvc"
    assert step.manifest == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "mnist", "namespace": "default",
                     "labels": {"app.kubernetes.io/managed-by": "cuberun", "app.kubernetes.io/name": "mnist"}},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "fast-ssd"},
    }
    assert check_manifest(step.manifest) == []
    # no PVC step unless configure creates it, and never for hostPath
    assert runner_for(EXAMPLES / "mnist").configure_steps() == []
    assert runner_for(EXAMPLES / "mnist", "runner.create_pvc=true", "runner.volume=hostPath").configure_steps() == []
    assert runner_for(EXAMPLES / "mnist", "runner.create_pvc=true", "runner.storage=20").pvc_manifest()["spec"]["resources"] == \
        {"requests": {"storage": "20Gi"}}


def all_generated(tmp: Path) -> list[tuple[str, dict[str, Any]]]:
    docs = [(name, gen) for name, (gen, _) in golden_cases(tmp).items()]
    r = runner_for(EXAMPLES / "mnist", "runner.create_pvc=true", "runner.storage_class=fast-ssd")
    docs.append(("pvc", dict(r.pvc_manifest())))
    return docs


def test_every_manifest_validates_strictly(tmp_path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the test extra)")
    for name, doc in all_generated(tmp_path):
        try:
            kv.validate(doc, "1.37.0", strict=True)
        except kv.ValidationError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{name}: {exc}")


def test_dry_run_prints_manifests_kubectl_can_apply(cli: CLI) -> None:
    res = cli("run", f"--mlcube={EXAMPLES / 'mnist'}", "--platform=k8s", "--task=train", "--dry-run", "-Prunner.create_pvc=true", "--gpus=1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("---\n")
    docs = [d for d in yaml.safe_load_all(res.stdout) if d is not None]
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Job", "Job"]  # train needs download first (task graph)
    assert [d["metadata"]["annotations"]["cuberun.io/task-name"] for d in docs[1:]] == ["download", "train"]
    for doc in docs:
        assert check_manifest(doc) == []
    try:
        import kubernetes_validate as kv
    except ImportError:
        return
    for doc in docs:
        kv.validate(doc, "1.37.0", strict=True)


def test_dry_run_json_carries_the_manifests(cli: CLI) -> None:
    res = cli("run", f"--mlcube={EXAMPLES / 'hello_world'}", "--platform=k8s", "--task=hello", "--dry-run", "--json", "-Prunner.run_as=1000:1000")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    netpol, step = data["steps"]
    assert step["argv"] == netpol["argv"] == ["kubectl", "apply", "-f", "-"]
    assert step["manifest"]["kind"] == "Job" and netpol["manifest"]["kind"] == "NetworkPolicy"
    name = step["manifest"]["metadata"]["name"]
    assert netpol["manifest"]["metadata"]["name"] == name
    assert netpol["manifest"]["spec"] == {"podSelector": {"matchLabels": {"cuberun.io/job": name}}, "policyTypes": ["Ingress", "Egress"]}
    assert step["manifest"]["spec"]["template"]["metadata"]["labels"]["cuberun.io/job"] == name  # the policy selects the Job's pod
    assert data["policy"]["hello"]["strict"] is True and data["policy"]["hello"]["network"] == "none"


# -- the run policy ------------------------------------------------------------------------------------
def test_network_policy_golden_and_valid(tmp_path: Path) -> None:
    r = runner_for(EXAMPLES / "hello_world", "runner.namespace=ml")
    rt = resolve_task(r.cube, "hello", check_inputs=False)
    netpol, jobstep = r.run_steps(rt)
    assert isinstance(netpol, ManifestStep) and netpol.purpose == "network-policy"
    name = jobstep.manifest["metadata"]["name"]  # type: ignore[attr-defined]
    assert netpol.manifest == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ml", "labels": {
            "app.kubernetes.io/name": "hello_world", "app.kubernetes.io/component": "hello", "app.kubernetes.io/managed-by": "cuberun",
            "cuberun.io/job": name}},
        "spec": {"podSelector": {"matchLabels": {"cuberun.io/job": name}}, "policyTypes": ["Ingress", "Egress"]},
    }
    assert check_manifest(netpol.manifest) == []
    bad = copy.deepcopy(dict(netpol.manifest))
    bad["spec"]["podSelector"] = {}
    assert any("selects every pod of the namespace" in p for p in check_manifest(bad))
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(dict(netpol.manifest), "1.37.0", strict=True)


def relaxations(r: KubernetesRunner, task: str) -> list[tuple[str, str, str]]:
    rt = resolve_task(r.cube, task, check_inputs=False)
    return [(x.name, x.detail, x.source) for x in r.policy(rt).relaxations]


def test_relaxations_are_mapped_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hello = EXAMPLES / "hello_world"
    # --network=NAME: no NetworkPolicy
    r = runner_for(hello, options=RunOptions(network="pod"))
    assert [s.purpose for s in r.run_steps(resolve_task(r.cube, "hello", check_inputs=False))] == ["run"]
    assert relaxations(r, "hello") == [("network", "--network=pod", "cli")]
    # need_internet_access: no NetworkPolicy either
    r = runner_for(EXAMPLES / "mnist")
    assert [s.purpose for s in r.run_steps(resolve_task(r.cube, "download", check_inputs=False))] == ["run"]
    assert relaxations(r, "download")[0][:1] == ("network",)
    # --mount=rw: no read-only input mounts
    r = runner_for(hello, options=RunOptions(mount="rw"))
    assert [m["mountPath"] for m in _container(job_for(r, "hello"))["volumeMounts"]] == ["/mnt/mlcube/hello-world", "/tmp"]
    assert relaxations(r, "hello") == [("writable-inputs", "inputs mounted read-write", "cli")]
    # read_only_root: false, keep_jobs: true
    r = runner_for(hello, "runner.read_only_root=false", "runner.keep_jobs=true")
    assert _container(job_for(r, "hello"))["securityContext"]["readOnlyRootFilesystem"] is False
    assert [x[0] for x in relaxations(r, "hello")] == ["keep-container", "writable-root"]
    # cuberun run as root: the pod cannot be non-root with the host's uid
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    r = runner_for(hello)
    doc = job_for(r, "hello")
    assert _pod(doc)["securityContext"] == {"runAsUser": 0, "runAsGroup": 0}
    assert check_manifest(doc) == []
    assert relaxations(r, "hello") == [("user", "the pod runs as root (uid 0): cuberun runs as root; set run_as: UID:GID for a non-root pod", "host")]
    r = runner_for(hello, "runner.run_as=1000")
    assert _pod(job_for(r, "hello"))["securityContext"] == {"runAsUser": 1000, "runAsNonRoot": True}
    assert relaxations(r, "hello") == []


def test_an_input_that_is_the_workspace_makes_it_read_only(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "whole", """
        name: whole
        docker: {image: example/whole:1}
        tasks:
          t:
            parameters:
              inputs: {ws: {type: directory, default: .}, cfg: conf.yaml}
        """)
    mounts = _container(job_for(runner_for(cube), "t"))["volumeMounts"]
    assert mounts == [{"name": "workspace", "mountPath": "/mnt/mlcube/whole", "readOnly": True},
                      ro("/mnt/mlcube/whole/conf.yaml", "conf.yaml"), TMP_MOUNT]


def test_dry_run_shows_the_policy(cli: CLI) -> None:
    res = cli("run", f"--mlcube={EXAMPLES / 'hello_world'}", "--platform=k8s", "--task=hello", "--dry-run", "--network=pod", "--mount=rw")
    assert res.returncode == 0, res.stderr
    assert [d["kind"] for d in yaml.safe_load_all(res.stdout) if d] == ["Job"]
    assert "# hello: policy: relaxed: network: --network=pod (from cli); writable-inputs: inputs mounted read-write (from cli)" in res.stdout


# -- the package is optional -------------------------------------------------------------------------
def _block_module(root: Path, name: str) -> dict[str, str]:
    """A PYTHONPATH entry whose `name` package fails to import, as when it is not installed."""
    pkg = root / "blocked" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'raise ImportError("No module named {name} (blocked by the test)")\n')
    return {"PYTHONPATH": str(root / "blocked")}


def test_without_kubernetes_package_run_names_the_extra_and_dry_run_works(cli: CLI, tmp_path: Path) -> None:
    env = _block_module(tmp_path, "kubernetes")
    res = cli("run", f"--mlcube={EXAMPLES / 'hello_world'}", "--platform=k8s", "--task=hello", env=env)
    assert res.returncode == 125
    assert "the k8s runner needs the 'kubernetes' package. Hint: pip install 'cuberun[k8s]'" in res.stderr
    res = cli("run", f"--mlcube={EXAMPLES / 'hello_world'}", "--platform=k8s", "--task=hello", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert "kind: Job" in res.stdout


def test_unavailable_reason_without_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    r = runner_for(EXAMPLES / "hello_world")
    assert r.unavailable_reason() == "the k8s runner needs the 'kubernetes' package. Hint: pip install 'cuberun[k8s]'"
    with pytest.raises(RunnerUnavailable):
        r.inspect()


def test_cuberun_start_does_not_import_kubernetes() -> None:
    import subprocess

    code = "import sys, cuberun.cli.main, cuberun.runners.k8s, cuberun.runners.kubeflow; print(sorted(m for m in ('kubernetes', 'kfp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# -- errors before anything is submitted --------------------------------------------------------------
def test_path_outside_the_workspace_is_an_error(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "alice.txt"
    r = runner_for(EXAMPLES / "hello_world")
    rt = resolve_task(r.cube, "hello", {"name": str(outside)}, check_inputs=False)
    with pytest.raises(UsageError) as err:
        r.run_steps(rt)
    text = err.value.lines()[0]
    assert f"{outside} is outside the workspace" in text
    assert "mounts only the workspace (at /mnt/mlcube/hello-world)" in text
    assert "override name=RELATIVE/PATH" in text


@pytest.mark.parametrize("gpus, hint", [("all", "give a count, e.g. --gpus=2"), ("device=0,1", "give a count, e.g. --gpus=2")])
def test_gpu_forms_kubernetes_cannot_express(gpus: str, hint: str) -> None:
    r = runner_for(EXAMPLES / "hello_world", options=RunOptions(gpus=gpus))
    with pytest.raises(UsageError) as err:
        job_for(r, "hello")
    assert hint in err.value.lines()[0]


@pytest.mark.parametrize("param, message", [
    ("runner.pvc=My_PVC", "persistentVolumeClaim.claimName: 'My_PVC' is not a valid DNS-1123 subdomain"),
    ("runner.namespace=Team A", "metadata.namespace: 'Team A' is not a valid DNS-1123 label"),
    ("runner.cpu=two", "resources.requests.cpu: 'two' is not a valid quantity"),
    ("runner.memory=lots", "resources.requests.memory: 'lots' is not a valid quantity"),
    ("runner.labels={team: a b}", "metadata.labels.team: 'a b' is not a valid label value"),
])
def test_invalid_config_is_caught_before_submission(param: str, message: str) -> None:
    r = runner_for(EXAMPLES / "hello_world", param)
    with pytest.raises(UsageError) as err:
        job_for(r, "hello")
    assert message in err.value.lines()[0]
    assert "Hint: fix the k8s platform settings" in err.value.lines()[0]


# -- our checks, where kubernetes-validate is silent --------------------------------------------------
def _valid_job(tmp: Path) -> dict[str, Any]:
    return golden_cases(tmp)["mnist_train_gpus_memory"][0]


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return _pod(doc)["containers"][0]  # type: ignore[no-any-return]


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("restartPolicy Sometimes", lambda d: _pod(d).update(restartPolicy="Sometimes"), "restartPolicy: 'Sometimes' is not allowed here"),
    ("restartPolicy Always", lambda d: _pod(d).update(restartPolicy="Always"), "restartPolicy: 'Always' is not allowed here"),
    ("name Train_42", lambda d: d["metadata"].update(name="Train_42"), "metadata.name: 'Train_42' is not a valid DNS-1123 label"),
    ("name too long", lambda d: d["metadata"].update(name="a" * 64), "is not a valid DNS-1123 label"),
    ("memory lots", lambda d: _container(d)["resources"]["limits"].update(memory="lots"), "'lots' is not a valid quantity"),
    ("gpu 1.5", lambda d: _container(d)["resources"]["limits"].update({"nvidia.com/gpu": "1.5"}), "extended resources take whole numbers"),
    ("container name", lambda d: _container(d).update(name="Task"), "containers[0].name: 'Task' is not a valid DNS-1123 label"),
    ("label value", lambda d: d["metadata"]["labels"].update({"app.kubernetes.io/name": "-bad-"}), "is not a valid label value"),
    ("label key", lambda d: d["metadata"]["labels"].update({"bad key": "x"}), "'bad key' is not a valid qualified name"),
    ("mount of no volume", lambda d: _container(d)["volumeMounts"][0].update(name="nothing"), "no volume named 'nothing'"),
    ("relative mount", lambda d: _container(d)["volumeMounts"][0].update(mountPath="mnt/x"), "must be an absolute path"),
    ("claim name", lambda d: _pod(d)["volumes"][0]["persistentVolumeClaim"].update(claimName="Bad Claim"), "is not a valid DNS-1123 subdomain"),
    ("negative backoff", lambda d: d["spec"].update(backoffLimit=-1), "spec.backoffLimit: must be an integer of at least 0"),
    ("env name", lambda d: _container(d).update(env=[{"name": "1 A", "value": "x"}]), "'1 A' is not a valid environment variable name"),
    ("non-root as root", lambda d: _pod(d)["securityContext"].update(runAsUser=0), "runAsNonRoot with runAsUser 0 never starts"),
    ("capability name", lambda d: _container(d)["securityContext"]["capabilities"].update(drop=["all things"]), "is not a capability name"),
    ("privileged", lambda d: _container(d)["securityContext"].update(privileged=True), "cannot be set with privileged true"),
]


@pytest.mark.parametrize("what, mutate, message", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_check_manifest_catches(what: str, mutate: Callable[[dict[str, Any]], None], message: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(_valid_job(tmp_path))
    mutate(doc)
    problems = check_manifest(doc)
    assert any(message in p for p in problems), problems


def test_kubernetes_validate_misses_what_check_manifest_catches(tmp_path: Path) -> None:
    """Why our own checks exist: the schemas accept these (test-backends.md section 5)."""
    kv = pytest.importorskip("kubernetes_validate")
    doc = copy.deepcopy(_valid_job(tmp_path))
    doc["metadata"]["name"] = "Train_42"
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    kv.validate(doc, "1.37.0", strict=True)  # no error
    assert len(check_manifest(doc)) == 3


def test_pvc_checks() -> None:
    doc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ws"},
           "spec": {"accessModes": ["RWO"], "resources": {"requests": {"storage": "0"}}}}
    problems = check_manifest(doc)
    assert any("'RWO' is not one of ReadWriteOnce" in p for p in problems)
    assert any("storage: '0' is not a positive quantity" in p for p in problems)


# -- names and quantities -------------------------------------------------------------------------------
def test_names() -> None:
    assert dns_label("Hello World_v2!") == "hello-world-v2"
    assert dns_label("___") == "x"
    long = job_name("a" * 80, "train", "abcde")
    assert len(long) == 63 and long.endswith("-abcde") and NAME.match(long)
    assert job_name("mnist", "train", "x1y2z") == "cuberun-mnist-train-x1y2z"
    assert label_value("_task.name_") == "task.name"
    assert len(label_value("t" * 100)) == 63


@pytest.mark.parametrize("value, expected", [
    ("4g", "4Gi"), ("4G", "4Gi"), ("512m", "512Mi"), ("1gb", "1Gi"), ("100k", "100Ki"), ("1024b", "1024"), ("4Gi", "4Gi"),
    ("1.5Gi", "1.5Gi"), ("500M", "500Mi"), (1073741824, "1073741824"),
])
def test_memory_quantity(value: Any, expected: str) -> None:
    assert memory_quantity(value, "--memory") == expected


@pytest.mark.parametrize("value", ["lots", "-1Gi", "", "4 Gi"])
def test_memory_quantity_rejects(value: str) -> None:
    with pytest.raises(UsageError):
        memory_quantity(value, "--memory")


def test_gib_quantity() -> None:
    assert gib_quantity(2) == "2Gi"
    assert gib_quantity(0.5) == "512Mi"
    assert gib_quantity(1.25) == "1280Mi"


def test_fingerprint_is_stable_although_job_names_are_random() -> None:
    a, b = runner_for(EXAMPLES / "mnist"), runner_for(EXAMPLES / "mnist")
    rt = resolve_task(a.cube, "train", check_inputs=False)
    assert job_for(a, "train")["metadata"]["name"] != job_for(b, "train")["metadata"]["name"]
    assert a.fingerprint(rt) == b.fingerprint(rt)
    assert a.fingerprint(rt)["command"] == [["train", "--data_dir=/mnt/mlcube/mnist/data", "--train_config=/mnt/mlcube/mnist/train.yaml",
                                             "--log_dir=/mnt/mlcube/mnist/logs", "--model_dir=/mnt/mlcube/mnist/model"]]


def test_reference_settings_keys_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A k8s platform from the reference's ~/mlcube.yaml: pvc ${name}, image ${docker.image}, namespace."""
    ref = tmp_path / "mlcube.yaml"
    ref.write_text("platforms:\n  k8s:\n    runner: k8s\n    pvc: ${name}\n    image: ${docker.image}\n    namespace: default\n")
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(ref))
    doc = job_for(runner_for(EXAMPLES / "mnist"), "download")
    assert doc["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mnist"
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "cuberun/mnist:0.1"
