"""The k8s runner's client flow, through the real CLI (`python -m cuberun run --platform=...`),
against the in-test fake API server of tests/k8s_fake_api.py on 127.0.0.1.

No Kubernetes API server can run on these machines, so this is what is simulated: the
server's answers (Job, pod states, chunked log streaming, deletion). What is real: the CLI,
the official `kubernetes` client with a kubeconfig file (bearer token), the HTTP traffic,
signal handling in the cuberun process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.k8s_fake_api import TOKEN, Behaviour, FakeKubeAPI

pytest.importorskip("kubernetes", reason="the k8s runner's client flow needs the 'kubernetes' package (pip install 'cuberun[k8s]')")

NAMESPACE = "cuberun-test"
PVC = "demo-ws"
IMAGE = "registry.example/cuberun/demo:1.0"
NO_PROXY = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"), "")
NO_PROXY.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

CUBE = """
name: K8s Demo
platform: {host_memory_gb: 1}
docker: {image: IMAGE}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat.txt}}
  fail:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/fail.txt}}
  hang:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/hang.txt}}
  flaky:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/flaky.txt}}
  badimage:
    entrypoint: /bin/true
""".replace("IMAGE", IMAGE)

FLAKY = ["Hi, alice!", "line two", "line three", "done"]


def behaviour(job: dict[str, Any]) -> Behaviour:
    container = job["spec"]["template"]["spec"]["containers"][0]
    first = (container.get("command") or container.get("args") or [""])[0]
    if first == "fail":
        return Behaviour(lines=["working", "something went wrong"], exit_code=3)
    if first == "hang":
        return Behaviour(lines=["started, waiting forever"], hang=True)
    if first == "flaky":
        return Behaviour(lines=FLAKY, line_delay=0.3, stream_breaks=True, log_failures=2)
    if first == "/bin/true":
        return Behaviour(waiting_reason="ErrImageNeverPull")
    return Behaviour(lines=["Hi, alice!", "line two", "done"], exit_code=0)


@pytest.fixture
def api() -> Any:
    with FakeKubeAPI(behaviour) as server:
        yield server


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    root = tmp_path / "cube"
    (root / "workspace" / "names").mkdir(parents=True)
    (root / "workspace" / "names" / "alice.txt").write_text("alice\n")
    (root / "mlcube.yaml").write_text(textwrap.dedent(CUBE))
    return root


@pytest.fixture
def platform(api: FakeKubeAPI, cli_env: dict[str, str], tmp_path: Path) -> str:
    """A `kube` platform in the test's settings file, pointing at the fake server."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig.json")
    settings = Path(cli_env["CUBERUN_SETTINGS"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(textwrap.dedent(f"""
        platforms:
          kube:
            runner: k8s
            kubeconfig: {kubeconfig}
            namespace: {NAMESPACE}
            pvc: {PVC}
            create_pvc: true
            storage: 2Gi
            poll_interval: 0.1
            start_timeout: 30
    """))
    return "kube"


def run(cli: CLI, cube: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("run", f"--mlcube={cube}", "--platform=kube", *args, env=dict(NO_PROXY), timeout=120)


def test_success_creates_job_streams_log_and_deletes_it(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = run(cli, cube, "--task=hello")
    assert res.returncode == 0, res.stderr
    assert "Hi, alice!\nline two\ndone\n" in res.stdout  # the pod's log, streamed to our stdout

    # the PVC did not exist: configure created it
    (pvc,) = [r.body for r in api.calls("POST", "/persistentvolumeclaims")]
    assert pvc["metadata"]["name"] == PVC and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"

    # one Job with the expected spec
    (job,) = api.created_jobs()
    name = job["metadata"]["name"]
    assert name.startswith("cuberun-k8s-demo-hello-") and len(name) <= 63
    assert job["metadata"]["namespace"] == NAMESPACE
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert "command" not in container
    assert container["args"] == ["hello", f"--name=/mnt/mlcube/{PVC}/names/alice.txt", f"--chat=/mnt/mlcube/{PVC}/chats/chat.txt"]
    assert container["resources"] == {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert container["volumeMounts"] == [{"name": "workspace", "mountPath": f"/mnt/mlcube/{PVC}"},
                                         {"name": "workspace", "mountPath": f"/mnt/mlcube/{PVC}/names/alice.txt", "subPath": "names/alice.txt",
                                          "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "workspace", "persistentVolumeClaim": {"claimName": PVC}}, {"name": "tmp", "emptyDir": {}}]
    assert spec["template"]["metadata"]["labels"]["cuberun.io/job"] == name
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}

    # the deny-all NetworkPolicy: created before the Job, selecting its pod, deleted after it
    (netpol,) = [r.body for r in api.calls("POST", "/networkpolicies")]
    assert netpol["metadata"]["name"] == name and netpol["spec"]["podSelector"] == {"matchLabels": {"cuberun.io/job": name}}
    order = [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.requests if r.method in ("POST", "DELETE") and "persistentvolumeclaims" not in r.path]
    assert order == [("POST", "networkpolicies"), ("POST", "jobs"), ("DELETE", name), ("DELETE", name)]
    assert [r.path for r in api.calls("DELETE")][-1].endswith(f"/networkpolicies/{name}") and not api.network_policies

    # the kubeconfig's bearer token reached the server; pods were found by the Job's label
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api.requests)
    assert any(r.query.get("labelSelector") == [f"cuberun.io/job={name}"] for r in api.calls("GET", "/pods"))
    assert any(r.query.get("follow", [""])[0].lower() == "true" for r in api.calls("GET", "/log")), [r.query for r in api.calls("GET", "/log")]

    # deleted after the run, in the background (the pods go with it)
    assert api.deleted_jobs == [(NAMESPACE, name, "Background")]
    assert not api.jobs

    # the run record names the Job
    records = list((cube / "workspace" / ".cuberun" / "runs").glob("*/record.json"))
    (record,) = [json.loads(p.read_text()) for p in records]
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    assert [s["manifest"]["kind"] for s in record["steps"]] == ["NetworkPolicy", "Job"]
    assert record["steps"][1]["manifest"]["metadata"]["name"] == name
    assert record["policy"]["network"] == "none" and record["policy"]["inputs_read_only"] is True
    assert "Hi, alice!" in (records[0].parent / "output.log").read_text()


def test_created_job_validates_strictly(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    res = run(cli, cube, "--task=hello", "--gpus=2", "--memory=512m")
    assert res.returncode == 0, res.stderr
    (job,) = api.created_jobs()
    kv.validate(job, "1.37.0", strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi", "nvidia.com/gpu": "2"}}


def test_failed_pod_gives_its_exit_code(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = run(cli, cube, "--task=fail")
    assert res.returncode == 3, res.stderr
    assert "something went wrong" in res.stdout
    assert "exited with code 3" in res.stderr
    assert "task 'fail' failed with exit code 3" in res.stderr
    (job,) = api.created_jobs()
    assert api.deleted_jobs == [(NAMESPACE, job["metadata"]["name"], "Background")]
    assert len(api.calls("POST", "/networkpolicies")) == 1 and not api.network_policies  # removed after a failure too


def test_a_broken_log_stream_is_caught_up_through_server_errors(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    """The follow stream drops after its first chunk; once the pod ended, the log request answers
    500 twice (the kubelet unreachable), then the whole log: every line is shown, each once."""
    res = run(cli, cube, "--task=flaky")
    assert res.returncode == 0, res.stderr
    assert "".join(f"{line}\n" for line in FLAKY) in res.stdout
    assert all(res.stdout.count(line) == 1 for line in FLAKY) and "warning" not in res.stderr
    requests = api.calls("GET", "/log")
    assert len([r for r in requests if "follow" in r.query]) == 1  # not followed again
    assert len([r for r in requests if "follow" not in r.query]) == 3  # 500, 500, the log


def test_network_policy_forbidden_refuses_to_run(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    """No NetworkPolicy, no Job: the pod never runs with a network the policy has off."""
    api.forbid_network_policies = True
    res = run(cli, cube, "--task=hello")
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and "cannot create the NetworkPolicy that keeps task 'hello' off the network" in errors[0], res.stderr
    assert "--network=pod" in res.stderr and "Traceback" not in res.stderr
    assert api.created_jobs() == []
    res = run(cli, cube, "--task=hello", "--network=pod")  # the named relaxation: the pod network, recorded
    assert res.returncode == 0, res.stderr
    assert len(api.created_jobs()) == 1


def test_keep_jobs_keeps_the_job(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = run(cli, cube, "--task=hello", "-Prunner.keep_jobs=true")
    assert res.returncode == 0, res.stderr
    assert api.deleted_jobs == [] and len(api.jobs) == 1
    assert "keeping Job" in res.stderr


def test_pod_that_cannot_start_fails_fast_and_is_deleted(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = run(cli, cube, "--task=badimage")
    assert res.returncode == 125, res.stderr
    assert "cannot start: ErrImageNeverPull" in res.stderr
    (job,) = api.created_jobs()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["/bin/true"]
    assert [d[1] for d in api.deleted_jobs] == [job["metadata"]["name"]]


def test_existing_pvc_is_not_created_again(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    api.pvcs[(NAMESPACE, PVC)] = {"metadata": {"name": PVC}}
    res = run(cli, cube, "--task=hello")
    assert res.returncode == 0, res.stderr
    assert api.calls("POST", "/persistentvolumeclaims") == []


def test_missing_pvc_without_create_pvc_is_an_error(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = run(cli, cube, "--task=hello", "-Prunner.create_pvc=false")
    assert res.returncode == 125
    assert f"PersistentVolumeClaim '{PVC}' does not exist in namespace '{NAMESPACE}'" in res.stderr
    assert "create_pvc=true" in res.stderr
    assert api.created_jobs() == []


def test_unreachable_server_is_one_line(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI, tmp_path: Path) -> None:
    dead = tmp_path / "dead-kubeconfig.json"
    dead.write_text((tmp_path / "kubeconfig.json").read_text().replace(api.url, "http://127.0.0.1:9"))
    res = run(cli, cube, "--task=hello", f"-Prunner.kubeconfig={dead}")
    assert res.returncode == 125
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in res.stderr
    assert "Traceback" not in res.stderr


def test_inspect_reports_context_namespace_and_server(cli: CLI, cube: Path, platform: str, api: FakeKubeAPI) -> None:
    res = cli("inspect", f"--mlcube={cube}", "--platform=kube", env=dict(NO_PROXY))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["context"] == "fake-context"
    assert info["namespace"] == NAMESPACE
    assert info["server"] == api.url
    assert info["pvc"] == PVC and info["mount_path"] == f"/mnt/mlcube/{PVC}"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_deletes_the_job(cli_env: dict[str, str], cube: Path, platform: str, api: FakeKubeAPI, tmp_path: Path, sig: int,
                                   code: int) -> None:
    returncode, out, err = interrupt_hang(cli_env, cube, api, tmp_path, sig)
    assert returncode == code, err
    assert "started, waiting forever" in out
    assert "interrupted: deleting Job" in err
    (job,) = api.created_jobs()
    assert api.deleted_jobs == [(NAMESPACE, job["metadata"]["name"], "Background")]
    assert not api.jobs
    records = [json.loads(p.read_text()) for p in (cube / "workspace" / ".cuberun" / "runs").glob("*/record.json")]
    assert [r["status"] for r in records] == ["interrupted"]


def test_interrupt_deletes_the_job_once_the_server_answers_again(cli_env: dict[str, str], cube: Path, platform: str, api: FakeKubeAPI,
                                                                 tmp_path: Path) -> None:
    api.refuse_deletes = 5  # the server is gone for the first DELETE requests (the client's own retries included)
    returncode, _out, err = interrupt_hang(cli_env, cube, api, tmp_path, signal.SIGINT)
    assert returncode == 130, err
    (job,) = api.created_jobs()
    assert not api.jobs and api.refuse_deletes == 0
    assert api.deleted_jobs == [(NAMESPACE, job["metadata"]["name"], "Background")]  # the answered one
    assert "could not delete" not in err


def test_interrupt_names_the_job_to_delete_when_the_server_stays_away(cli_env: dict[str, str], cube: Path, platform: str,
                                                                      api: FakeKubeAPI, tmp_path: Path) -> None:
    api.refuse_deletes = 10**6
    returncode, _out, err = interrupt_hang(cli_env, cube, api, tmp_path, signal.SIGINT, "-Prunner.delete_retry=1")
    assert returncode == 130, err
    (job,) = api.created_jobs()
    name = job["metadata"]["name"]
    assert (NAMESPACE, name) in api.jobs  # still there: nothing claims otherwise
    lines = [ln for ln in err.splitlines() if "could not delete Job" in ln]
    assert len(lines) == 1 and f"kubectl delete job {name} -n {NAMESPACE}" in lines[0]
    records = [json.loads(p.read_text()) for p in (cube / "workspace" / ".cuberun" / "runs").glob("*/record.json")]
    assert [r["status"] for r in records] == ["interrupted"]
    assert f"kubectl delete job {name} -n {NAMESPACE}" in json.dumps(records[0])


def interrupt_hang(cli_env: dict[str, str], cube: Path, api: FakeKubeAPI, tmp_path: Path, sig: int, *extra: str) -> tuple[int, str, str]:
    """Run the task that never ends, signal cuberun once the pod's log is followed; the exit code, stdout and stderr."""
    env = {**cli_env, **NO_PROXY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuberun", "run", f"--mlcube={cube}", "--platform=kube", "--task=hang", *extra],
        cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out_lines: list[str] = []
    err_chunks: list[str] = []
    seen = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
            if "started, waiting forever" in line:
                seen.set()

    def read_err() -> None:
        assert proc.stderr is not None
        err_chunks.append(proc.stderr.read())

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        # signal only once the pod's log line has reached cuberun's stdout: the log is being followed
        assert seen.wait(timeout=120), "the runner never printed the pod's log"
        assert api.jobs, "no Job was created"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return proc.returncode, "".join(out_lines), "".join(err_chunks)
