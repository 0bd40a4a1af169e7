"""The k8s runner's Job for a MedPerf container_config.yaml task (pure: no cluster, no client):
the task's run_args (entrypoint, command, environment, gpus, shm_size), each volume at its own
mount path through `subPath` of the workspace volume (inputs read-only, outputs writable, no
workspace mount), the same run policy as mlcube.yaml cubes, and the image kinds it refuses."""

from __future__ import annotations

import copy
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.k8s import KubernetesRunner
from cuberun.runners.k8s.manifests import ManifestStep, check_manifest, shm_quantity
from cuberun.spec.load import load_cube
from tests.conftest import BATCH_TASKS, CLI, image_file_cube

CONFIG = BATCH_TASKS + """\
  at_tmp:
    output_volumes:
      scratch: {mount_path: /tmp, type: directory}
"""

STRICT_CONTAINER = {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "settings.yaml"))  # absent unless a test writes it
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    yield


def make_cube(root: Path, text: str = CONFIG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "container_config.yaml").write_text(textwrap.dedent(text))
    return root


def runner_for(cube_dir: Path, *params: str, options: RunOptions | None = None) -> KubernetesRunner:
    cube = load_cube(cube_dir, overrides=params)
    runner = make_runner(cube, "k8s", options or RunOptions(), params)
    assert isinstance(runner, KubernetesRunner)
    return runner


def job_for(runner: KubernetesRunner, task: str, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    rt = resolve_task(runner.cube, task, overrides or {}, check_inputs=False)
    *before, step = runner.run_steps(rt)
    assert isinstance(step, ManifestStep) and step.manifest["kind"] == "Job"
    assert [s.purpose for s in before] == (["network-policy"] if runner.policy(rt).network == "none" else [])
    return dict(step.manifest)


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return pod(doc)["containers"][0]  # type: ignore[no-any-return]


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(doc).replace(doc["metadata"]["name"], "NAME"))
    assert Path(out["metadata"]["annotations"]["cuberun.io/cube-file"]).name == "container_config.yaml"
    out["metadata"]["annotations"]["cuberun.io/cube-file"] = "FILE"
    return out  # type: ignore[no-any-return]


def golden_prepare(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    (tmp_path / "settings.yaml").write_text("platforms:\n  k8s:\n    runner: k8s\n    env: {LEVEL: 1, FROM_SETTINGS: yes}\n")
    r = runner_for(make_cube(tmp_path / "prep"), "runner.pvc=team-data", "runner.sub_path=medperf/prep",
                   options=RunOptions(extra_env={"LEVEL": "5"}))
    labels = {"app.kubernetes.io/name": "prep", "app.kubernetes.io/component": "prepare", "app.kubernetes.io/managed-by": "cuberun",
              "cuberun.io/job": "NAME"}
    expected = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "NAME", "namespace": "default", "labels": labels,
                     "annotations": {"cuberun.io/cube-file": "FILE", "cuberun.io/task-name": "prepare"}},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
            "containers": [{
                "name": "task",
                "image": "registry.example/medperf/prep:1.0",
                "command": ["python3", "-u"],  # run_args.entrypoint replaces the image's ENTRYPOINT
                "args": ["/project/prepare.py", "--verbose"],  # run_args.command, no --name=path arguments
                # the settings' env, then the task's environment, then --env
                "env": [{"name": "LEVEL", "value": "5"}, {"name": "FROM_SETTINGS", "value": "true"}, {"name": "PREP_SUFFIX", "value": ".clean"}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},  # run_args.gpus
                "securityContext": STRICT_CONTAINER,
                "volumeMounts": [
                    {"name": "workspace", "mountPath": "/mlcommons/volumes/raw_data", "subPath": "medperf/prep/data_path", "readOnly": True},
                    {"name": "workspace", "mountPath": "/mlcommons/volumes/parameters/parameters_file.yaml",
                     "subPath": "medperf/prep/parameters_file.yaml", "readOnly": True},
                    {"name": "workspace", "mountPath": "/mlcommons/volumes/data", "subPath": "medperf/prep/output_path"},
                    {"name": "workspace", "mountPath": "/mlcommons/volumes/report/report.yaml", "subPath": "medperf/prep/report_file.yaml"},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
            }],
            "volumes": [
                {"name": "workspace", "persistentVolumeClaim": {"claimName": "team-data"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
            ],
        }}},
    }
    return job_for(r, "prepare"), expected


def test_golden_container_config_job(tmp_path: Path) -> None:
    generated, expected = golden_prepare(tmp_path)
    assert normalized(generated) == expected
    assert check_manifest(generated) == []


def test_the_container_config_job_validates_strictly(tmp_path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the test extra)")
    generated, _ = golden_prepare(tmp_path)
    kv.validate(generated, "1.37.0", strict=True)
    kv.validate(job_for(runner_for(make_cube(tmp_path / "other")), "plain"), "1.37.0", strict=True)


def test_a_task_without_volumes_mounts_no_workspace_and_keeps_the_image_entrypoint(tmp_path: Path) -> None:
    doc = job_for(runner_for(make_cube(tmp_path / "prep"), "runner.volume=hostPath"), "plain")
    c = container(doc)
    assert "command" not in c and c["args"] == ["echo", "hi"]
    assert "env" not in c and "resources" not in c
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod(doc)["volumes"] == [{"name": "tmp", "emptyDir": {}}]  # no hostPath the task does not use
    assert check_manifest(doc) == []


def test_a_volume_at_tmp_replaces_the_private_tmp(tmp_path: Path) -> None:
    doc = job_for(runner_for(make_cube(tmp_path / "prep")), "at_tmp")
    assert container(doc)["volumeMounts"] == [{"name": "workspace", "mountPath": "/tmp", "subPath": "scratch"}]
    assert [v["name"] for v in pod(doc)["volumes"]] == ["workspace"]
    assert check_manifest(doc) == []


def test_the_run_policy_is_the_mlcube_one(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    r = runner_for(cube)
    rt = resolve_task(r.cube, "prepare", check_inputs=False)
    netpol, step = r.run_steps(rt)
    assert isinstance(netpol, ManifestStep) and netpol.purpose == "network-policy"
    name = step.manifest["metadata"]["name"]  # type: ignore[attr-defined]
    assert netpol.manifest["spec"] == {"podSelector": {"matchLabels": {"cuberun.io/job": name}}, "policyTypes": ["Ingress", "Egress"]}
    assert r.policy(rt).strict
    # --mount=rw: inputs writable (recorded), --network=pod: no NetworkPolicy
    r = runner_for(cube, options=RunOptions(mount="rw", network="pod"))
    rt = resolve_task(r.cube, "prepare", check_inputs=False)
    doc = job_for(r, "prepare")
    assert not any(m.get("readOnly") for m in container(doc)["volumeMounts"])
    assert [x.name for x in r.policy(rt).relaxations] == ["network", "writable-inputs"]


def test_gpus_from_the_command_line_win_and_forms_kubernetes_cannot_express_are_refused(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    assert container(job_for(runner_for(cube, options=RunOptions(gpus="3")), "prepare"))["resources"] == {"limits": {"nvidia.com/gpu": "3"}}
    assert "resources" not in container(job_for(runner_for(cube, options=RunOptions(gpus="0")), "prepare"))
    for task, form in (("all_gpus", "'all'"), ("some_gpus", "'device=0,2'")):
        with pytest.raises(UsageError) as err:
            job_for(runner_for(cube), task)
        [line] = err.value.lines()
        assert f"tasks.{task}.run_args.gpus: {form} cannot be expressed on k8s" in line and "Hint: pass --gpus=N" in line
        assert container(job_for(runner_for(cube, options=RunOptions(gpus="2")), task))["resources"] == {"limits": {"nvidia.com/gpu": "2"}}


def test_a_volume_outside_the_workspace_is_an_error(tmp_path: Path) -> None:
    r = runner_for(make_cube(tmp_path / "prep"))
    with pytest.raises(UsageError) as err:
        job_for(r, "prepare", {"data_path": str(tmp_path / "elsewhere")})
    [line] = err.value.lines()
    assert f"input 'data_path': {tmp_path / 'elsewhere'} is outside the workspace" in line
    assert "override data_path=RELATIVE/PATH" in line


def test_the_fingerprint_holds_the_mounts_and_is_stable(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    a, b = runner_for(cube), runner_for(cube)
    rt = resolve_task(a.cube, "prepare", check_inputs=False)
    assert a.fingerprint(rt) == b.fingerprint(rt)
    fp = a.fingerprint(rt)
    assert fp["command"] == [["python3", "-u", "/project/prepare.py", "--verbose"]]
    assert fp["env"] == {"PREP_SUFFIX": ".clean", "LEVEL": "3"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in fp["mounts"]
    moved = resolve_task(a.cube, "prepare", {"output_path": "elsewhere"}, check_inputs=False)
    assert a.fingerprint(moved)["mounts"] != fp["mounts"]


@pytest.mark.parametrize("kind, file, words", [
    ("DockerArchive", "image.tar", "cannot load an image archive onto the cluster's nodes"),
    ("SingularityFile", "image.sif", "cannot run a SIF file"),
])
def test_image_files_are_refused_in_one_line_unless_an_image_is_given(tmp_path: Path, kind: str, file: str, words: str) -> None:
    cube = image_file_cube(tmp_path / "cube", kind, file)
    with pytest.raises(UsageError) as err:
        job_for(runner_for(cube), "hello")
    [line] = err.value.lines()
    assert f"container_type {kind}: the k8s runner {words}" in line
    assert "-Prunner.image=REGISTRY/NAME:TAG" in line
    # the same image pushed to a registry: -Prunner.image
    assert container(job_for(runner_for(cube, "runner.image=registry.example/hello:1"), "hello"))["image"] == "registry.example/hello:1"


def test_dry_run_prints_the_policy_and_the_job(cli: CLI, tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "prep")
    res = cli("run", f"--mlcube={cube}", "--platform=k8s", "--task=prepare", "--dry-run", "-Prunner.run_as=1000:1000")
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert [d["kind"] for d in docs] == ["NetworkPolicy", "Job"]
    c = container(docs[1])
    assert c["command"] == ["python3", "-u"] and c["args"] == ["/project/prepare.py", "--verbose"]
    assert [m["mountPath"] for m in c["volumeMounts"] if m.get("readOnly")] == ["/mlcommons/volumes/raw_data",
                                                                                 "/mlcommons/volumes/parameters/parameters_file.yaml"]
    assert "# prepare: policy: strict" in res.stdout
    bad = cli("run", f"--mlcube={cube}", "--platform=k8s", "--task=all_gpus", "--dry-run")
    assert bad.returncode == 2
    [line] = [ln for ln in bad.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "tasks.all_gpus.run_args.gpus: 'all' cannot be expressed on k8s" in line and "Traceback" not in bad.stderr


@pytest.mark.parametrize("value, expected", [("2gb", "2Gi"), ("2GB", "2Gi"), ("1.5g", "1536Mi"), ("512m", "512Mi"), ("64k", "64Ki"),
                                             ("100", "100"), ("1000b", "1000"), ("0.5k", "512")])
def test_shm_quantity(value: str, expected: str) -> None:
    assert shm_quantity(value, "shm_size") == expected


@pytest.mark.parametrize("value", ["0", "0gb", "lots", "2 tb"])
def test_shm_quantity_rejects(value: str) -> None:
    with pytest.raises(UsageError):
        shm_quantity(value, "shm_size")


def test_mlcube_jobs_are_unchanged_by_run_args_support(tmp_path: Path) -> None:
    """The container_config path leaves mlcube.yaml Jobs alone: the workspace mount, inputs over it."""
    from tests.conftest import EXAMPLES

    cube = load_cube(EXAMPLES / "hello_world")
    r = make_runner(cube, "k8s", RunOptions(), ())
    assert isinstance(r, KubernetesRunner)
    doc = copy.deepcopy(job_for(r, "hello"))
    assert [m["mountPath"] for m in container(doc)["volumeMounts"]] == ["/mnt/mlcube/hello-world", "/mnt/mlcube/hello-world/names/alice.txt", "/tmp"]


def test_kubeflow_refuses_container_config_tasks_in_one_line(cli: CLI, tmp_path: Path) -> None:
    """Kubeflow mounts only the workspace PVC: a container_config.yaml task would not find its volumes."""
    cube = make_cube(tmp_path / "prep")
    res = cli("run", f"--mlcube={cube}", "--platform=kubeflow", "-Prunner.pvc=data", "--task=plain", "--dry-run")
    assert res.returncode == 2
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "the kubeflow runner mounts only the workspace PVC at /mnt/mlcube/data, not container_config.yaml volumes" in line
    assert "Hint: run the cube with the k8s runner" in line


@pytest.mark.parametrize("gpus, words", [
    ("all", "--gpus=all cannot be expressed on k8s: Kubernetes schedules a number of GPUs"),
    ("device=0,1", "--gpus=device=... cannot be expressed on k8s: the scheduler picks the devices"),
])
def test_gpus_given_as_all_or_devices_are_refused_with_a_count_hint(tmp_path: Path, gpus: str, words: str) -> None:
    cube = make_cube(tmp_path / "prep")
    with pytest.raises(UsageError) as err:
        job_for(runner_for(cube, options=RunOptions(gpus=gpus)), "plain")
    [line] = err.value.lines()
    assert words in line and "Hint: give a count, e.g. --gpus=2" in line
