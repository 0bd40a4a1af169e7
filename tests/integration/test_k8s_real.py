"""The k8s runner against a REAL Kubernetes v1.20.2 cluster (scripts/backends/k8s.sh: etcd,
kube-apiserver, controller-manager, scheduler and a kubelet on a private dockerd, all on
loopback). Everything goes through the CLI with a settings file naming the cluster's
kubeconfig, as a user would set it up.

Data moves the way the runner documents for a single node: the workspace is a hostPath volume
(the node is this machine, so the pod sees the workspace at its real path). On a multi-node
cluster the same settings need a shared filesystem mounted at the same path on every node, or a
ReadWriteMany PersistentVolumeClaim holding the workspace (volume: pvc), kept in step by the user.

Images are local to the cluster's dockerd (imagePullPolicy Never: no registry is reachable).
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import require_backend
from tests.conftest import run_records
from tests.faults.helpers import Background, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SESSION = uuid.uuid4().hex[:6]
HELLO_IMAGE = f"localhost/cuberun-it-k8s-{SESSION}/hello:0.1"
TIMEOUT = 600

pytestmark = pytest.mark.k8s

PROBE = """\
name: NAME
docker:
  image: local/busybox:1.0
tasks:
  copy:
    entrypoint: sh -c 'for a; do case "$a" in --data=*) d=$(echo "$a" | cut -d= -f2-);; --out=*) o=$(echo "$a" | cut -d= -f2-);; esac; done; mkdir -p "$o" && cp -r "$d"/. "$o"/ && echo "copied $(ls "$d" | wc -l) files"' copy
    parameters:
      inputs: {data: data/}
      outputs: {out: copied/}
  fail:
    entrypoint: sh -c 'echo "failing on purpose"; exit 3' fail
  ticks:
    entrypoint: sh -c 'for a; do case "$a" in --data=*) d=$(echo "$a" | cut -d= -f2-);; esac; done; i=0; while [ $i -lt 11 ]; do echo "tick $i"; i=$((i+1)); done; i=0; while [ ! -e "$d/go" ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); done; test -e "$d/go" || { echo "the gate never opened" >&2; exit 4; }; echo "tick 11"' ticks
    parameters:
      inputs: {data: data/}
  sleep:
    entrypoint: sh -c 'echo started; sleep 300' sleep
  missing:
    entrypoint: sh -c 'echo never'
  policy:
    entrypoint: sh -c 'for a; do case "$a" in --data=*) d=$(echo "$a" | cut -d= -f2-);; --out=*) o=$(echo "$a" | cut -d= -f2-);; esac; done; echo "uid=$(id -u) gid=$(id -g)"; grep -E "^(NoNewPrivs|CapEff):" /proc/self/status; (echo x > /rootfile) 2>/dev/null && echo root-writable || echo root-read-only; (echo x > /tmp/t) && echo tmp-writable; (echo x >> "$d/a.txt") 2>/dev/null && echo input-writable || echo input-read-only; mkdir -p "$o" && echo ok > "$o/written" && echo output-writable; echo "interfaces=$(tail -n +3 /proc/net/dev | cut -d":" -f1 | xargs)"' policy
    parameters:
      inputs: {data: data/}
      outputs: {out: result/}
  gate:
    entrypoint: sh -c 'for a; do case "$a" in --data=*) d=$(echo "$a" | cut -d= -f2-);; esac; done; echo started; i=0; while [ ! -e "$d/go" ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); done; test -e "$d/go"' gate
    parameters:
      inputs: {data: data/}
"""


class Cluster:
    def __init__(self, details: dict[str, Any], env: dict[str, str]) -> None:
        self.details = details
        self.env = env
        self.docker_env = {**os.environ, "DOCKER_HOST": details["docker_host"]}
        found = re.search(r"token: ([0-9a-f]+)", Path(details["kubeconfig"]).read_text())
        assert found
        self.token = found.group(1)

    def api(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.details["server"] + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10) as resp:  # loopback, self-signed
            return dict(json.load(resp))

    def cuberun_objects(self, cube: str) -> tuple[list[str], list[str]]:
        """Names of the Jobs and pods cuberun made for the cube named `cube` that still exist."""
        sel = f"?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcuberun%2Capp.kubernetes.io%2Fname%3D{cube}"
        jobs = [j["metadata"]["name"] for j in self.api(f"/apis/batch/v1/namespaces/default/jobs{sel}")["items"]]
        pods = [p["metadata"]["name"] for p in self.api(f"/api/v1/namespaces/default/pods{sel}")["items"]]
        return jobs, pods

    def network_policies(self, cube: str) -> list[dict[str, Any]]:
        sel = f"?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcuberun%2Capp.kubernetes.io%2Fname%3D{cube}"
        return list(self.api(f"/apis/networking.k8s.io/v1/namespaces/default/networkpolicies{sel}")["items"])

    def assert_nothing_left(self, cube: str, timeout: float = 90) -> None:
        # Job deletion is Background propagation: the pods go shortly after the Job
        assert wait_until(lambda: self.cuberun_objects(cube) == ([], []), timeout, 1.0), self.cuberun_objects(cube)
        assert self.network_policies(cube) == []

    def cuberun(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def cluster_in(root: Path) -> Cluster:
    """The test cluster, with a `k8s-test` platform (hostPath workspace, images from the node's own
    Docker engine) in a settings file under `root`."""
    details = require_backend("k8s")
    settings = root / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {"k8s-test": {
        "runner": "k8s", "kubeconfig": details["kubeconfig"], "namespace": "default", "volume": "hostPath",
        "image_pull_policy": "Never", "poll_interval": 0.5, "start_timeout": 120,
    }}}))
    env = {**os.environ, "CUBERUN_SETTINGS": str(settings), "MLCUBE_SYSTEM_SETTINGS": str(root / "none.yaml"),
           "CUBERUN_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(REPO / "src")}
    env.pop("KUBECONFIG", None)
    return Cluster(details, env)


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = cluster_in(tmp_path_factory.mktemp("k8s"))
    details = cluster.details
    # the hello_world example's image, built in the cluster's own Docker engine from the local base image
    build = subprocess.run(["docker", "build", "-q", "--network", "none", "--build-arg", f"BASE_IMAGE={details['base_image']}",
                            "-t", HELLO_IMAGE, str(EXAMPLES / "hello_world")], env=cluster.docker_env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert build.returncode == 0, build.stderr
    try:
        yield cluster
    finally:
        subprocess.run(["docker", "rmi", "-f", HELLO_IMAGE], env=cluster.docker_env, capture_output=True, timeout=120, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


def probe(dest: Path) -> Path:
    """A busybox cube with a name of its own (its Jobs are told apart by the name label)."""
    dest.mkdir(parents=True)
    (dest / "mlcube.yaml").write_text(PROBE.replace("NAME", name_of(dest), 1))
    data = dest / "workspace" / "data"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "b.txt").write_text("beta\n")
    return dest


def name_of(dest: Path) -> str:
    return f"probe_{zlib.crc32(str(dest).encode()):08x}"


def run(k8s: Cluster, cube: Path, task: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return k8s.cuberun("run", "--mlcube", str(cube), "--task", task, "--platform", "k8s-test", *extra)


def test_server_is_v1_20(k8s: Cluster) -> None:
    assert k8s.api("/version")["gitVersion"] == "v1.20.2"


def test_hello_world_chain(k8s: Cluster, tmp_path: Path) -> None:
    import shutil

    cube = tmp_path / "hello_world"
    shutil.copytree(EXAMPLES / "hello_world", cube, ignore=shutil.ignore_patterns(".cuberun", "__pycache__"))
    ok(run(k8s, cube, "hello,bye", f"-Pdocker.image={HELLO_IMAGE}"))
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    assert chat.read_text() == "Hi, Alice! Nice to meet you.\nBye, Alice! Talk to you soon.\n"
    runs = records(cube / "workspace")
    assert [(r["task"], r["status"]) for r in runs] == [("hello", "succeeded"), ("bye", "succeeded")]
    assert all(r["details"]["job"].startswith("cuberun-hello-world-") for r in runs)
    k8s.assert_nothing_left("hello_world")


def test_directory_in_directory_out_through_host_path(k8s: Cluster, tmp_path: Path) -> None:
    cube = probe(tmp_path / "probe")
    proc = ok(run(k8s, cube, "copy"))
    out = cube / "workspace" / "copied"
    assert (out / "a.txt").read_text() == "alpha\n" and (out / "b.txt").read_text() == "beta\n"
    assert "copied 2 files" in proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded" and set(record["outputs"]) == {"out"}
    k8s.assert_nothing_left(name_of(cube))
    again = ok(run(k8s, cube, "copy"))
    assert "skipping task 'copy'" in again.stderr


def test_failing_task_propagates_its_exit_code(k8s: Cluster, tmp_path: Path) -> None:
    cube = probe(tmp_path / "probe")
    proc = run(k8s, cube, "fail")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "failing on purpose" in proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "failed" and record["exit_code"] == 3
    k8s.assert_nothing_left(name_of(cube))


def test_missing_image_is_one_line(k8s: Cluster, tmp_path: Path) -> None:
    cube = probe(tmp_path / "probe")
    proc = run(k8s, cube, "missing", f"-Prunner.image=localhost/cuberun-no-such-image-{SESSION}:1")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and "ErrImageNeverPull" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    k8s.assert_nothing_left(name_of(cube))


def test_logs_stream_while_the_pod_runs(k8s: Cluster, tmp_path: Path) -> None:
    """The task prints ticks 0-10, then waits (bounded) at a gate (a file in its hostPath
    workspace) before its last line: the first ticks reach the terminal while the pod is still
    blocked, so they were streamed, not fetched at the end."""
    cube = probe(tmp_path / "probe")
    gate = cube / "workspace" / "data" / "go"
    bg = Background(["run", "--mlcube", str(cube), "--task", "ticks", "--platform", "k8s-test"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "tick 10" in bg.stdout, 120), bg.stdout + bg.stderr
        jobs, _ = k8s.cuberun_objects(name_of(cube))
        assert jobs, "the log arrived only after the Job was gone"
        assert "tick 11" not in bg.stdout and bg.proc.poll() is None  # blocked at the gate: still running
        gate.write_text("go\n")
        assert bg.wait(120) == 0, bg.stderr
    finally:
        bg.stop()
    assert [f"tick {i}" for i in range(12)] == [line for line in bg.stdout.splitlines() if line.startswith("tick")]
    k8s.assert_nothing_left(name_of(cube))


def test_ctrl_c_deletes_the_job_and_its_pod(k8s: Cluster, tmp_path: Path) -> None:
    cube = probe(tmp_path / "probe")
    bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "k8s-test"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        bg.signal(signal.SIGINT)
        assert bg.wait(60) == 130
    finally:
        bg.stop()
    assert "interrupted: deleting Job default/cuberun-probe-" in bg.stderr
    [record] = records(cube / "workspace")
    assert record["status"] == "interrupted"
    k8s.assert_nothing_left(name_of(cube))
    # and the container is gone from the node, too
    ps = subprocess.run(["docker", "ps", "-q", "--filter", f"name=k8s_task_cuberun-{name_of(cube).replace('_', '-')}-sleep"], env=k8s.docker_env,
                        capture_output=True, text=True, timeout=60, check=True)
    assert wait_until(lambda: subprocess.run(["docker", "ps", "-q", "--filter", f"name=k8s_task_cuberun-{name_of(cube).replace('_', '-')}-sleep"],
                                             env=k8s.docker_env, capture_output=True, text=True, timeout=60,
                                             check=True).stdout.strip() == "", 60, 1.0), ps.stdout


def test_api_server_killed_mid_run_is_a_failure_not_a_completion(k8s: Cluster, tmp_path: Path) -> None:
    """The backend daemon dies under a running task: cuberun fails with one line naming the Job,
    records nothing complete; once the API server is back (the backend's own `up`), the test
    checks the record and removes the Job (and its NetworkPolicy) that could not be deleted while
    the server was down."""
    state = Path(k8s.details["kubeconfig"]).parent.parent
    pid = int((state / "pids" / "kube-apiserver.pid").read_text().strip())
    assert "kube-apiserver" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    cube = probe(tmp_path / "probe")
    bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "k8s-test"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        os.kill(pid, signal.SIGKILL)
        code = bg.wait(180)
    finally:
        bg.stop()
        env = {**os.environ, "CUBERUN_TEST_STATE": str(state)}
        subprocess.run(["bash", str(REPO / "scripts" / "backends" / "k8s.sh"), "up"], env=env, capture_output=True, timeout=600, check=False)
    assert code != 0
    errors = [line for line in bg.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and "cannot reach the Kubernetes API server" in errors[0], bg.stderr
    assert "Traceback" not in bg.stderr
    [record] = records(cube / "workspace")
    assert record["status"] in ("failed", "error") and "outputs" not in record, record
    assert not (cube / "workspace" / ".cuberun" / "state" / "sleep.json").exists()
    jobs, _ = k8s.cuberun_objects(name_of(cube))
    for job in jobs:  # the Job outlived the dead API server (cuberun could not delete it): the test removes it
        req = urllib.request.Request(f"{k8s.details['server']}/apis/batch/v1/namespaces/default/jobs/{job}", method="DELETE",
                                     data=json.dumps({"propagationPolicy": "Background"}).encode(),
                                     headers={"Authorization": f"Bearer {k8s.token}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10).close()
    for policy in k8s.network_policies(name_of(cube)):  # nor its deny-all NetworkPolicy
        name = policy["metadata"]["name"]
        assert name in bg.stderr, bg.stderr  # cuberun said what it had to leave behind
        req = urllib.request.Request(f"{k8s.details['server']}/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/{name}",
                                     method="DELETE", headers={"Authorization": f"Bearer {k8s.token}"})
        urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10).close()
    k8s.assert_nothing_left(name_of(cube))


# -- the run policy ---------------------------------------------------------------------------------------
def facts(stdout: str) -> set[str]:
    return {line.strip() for line in stdout.splitlines()}


def test_the_pod_runs_non_root_without_privileges_and_inputs_read_only(k8s: Cluster, tmp_path: Path) -> None:
    """run_as 1000:1000 (this test runs as root; as any other user the host uid:gid is the
    default): the kubelet starts the pod as that user, with no capabilities, NoNewPrivs, a
    read-only root filesystem, a writable /tmp, the input read-only and the output writable."""
    cube = probe(tmp_path / "probe")
    ws = cube / "workspace"
    (ws / "result").mkdir()
    for path in (ws, ws / "data", ws / "result"):
        os.chown(path, 1000, 1000)
    (ws / "data" / "a.txt").chmod(0o666)  # writable for uid 1000 on the host: only the read-only mount stops the write
    proc = ok(run(k8s, cube, "policy", "-Prunner.run_as=1000:1000"))
    seen = facts(proc.stdout)
    assert {"uid=1000 gid=1000", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "root-read-only", "tmp-writable", "input-read-only",
            "output-writable"} <= seen, proc.stdout
    assert (ws / "data" / "a.txt").read_text() == "alpha\n"
    assert (ws / "result" / "written").stat().st_uid == 1000
    [record] = records(ws)
    assert record["policy"]["strict"] is True and record["policy"]["network"] == "none"
    job = record["steps"][-1]["manifest"]["spec"]["template"]["spec"]
    assert job["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    k8s.assert_nothing_left(name_of(cube))


def test_as_root_the_pod_is_root_without_privileges_and_the_record_says_so(k8s: Cluster, tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("cuberun runs as root here only when the test does")
    cube = probe(tmp_path / "probe")
    proc = ok(run(k8s, cube, "policy"))
    seen = facts(proc.stdout)
    assert {"uid=0 gid=0", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "root-read-only", "input-read-only", "output-writable"} <= seen, proc.stdout
    # this cluster has no network plugin: its pods have only a loopback interface, NetworkPolicy or not (README)
    assert "interfaces=lo" in seen, proc.stdout
    [record] = records(cube / "workspace")
    assert [r["name"] for r in record["policy"]["relaxations"]] == ["user"]
    k8s.assert_nothing_left(name_of(cube))


def test_the_network_policy_lives_exactly_as_long_as_the_job(k8s: Cluster, tmp_path: Path) -> None:
    """The deny-all NetworkPolicy exists (selecting the Job's pod) while the task runs and is gone
    after it; with --network=pod there is none. (Enforcing it needs a network plugin that
    implements NetworkPolicy: this cluster has none, see README.)"""
    cube = probe(tmp_path / "probe")
    gate = cube / "workspace" / "data" / "go"
    bg = Background(["run", "--mlcube", str(cube), "--task", "gate", "--platform", "k8s-test"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        jobs, pods = k8s.cuberun_objects(name_of(cube))
        [policy] = k8s.network_policies(name_of(cube))
        assert jobs == [policy["metadata"]["name"]]
        assert policy["spec"]["podSelector"] == {"matchLabels": {"cuberun.io/job": jobs[0]}}
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("egress") and not policy["spec"].get("ingress")
        pod = k8s.api(f"/api/v1/namespaces/default/pods/{pods[0]}")
        assert pod["metadata"]["labels"]["cuberun.io/job"] == jobs[0]  # the policy selects this pod
        gate.write_text("go\n")
        assert bg.wait(120) == 0, bg.stderr
    finally:
        bg.stop()
    assert f"created NetworkPolicy default/{jobs[0]}" in bg.stderr
    k8s.assert_nothing_left(name_of(cube))
    gate.unlink()
    relaxed = Background(["run", "--mlcube", str(cube), "--task", "gate", "--platform", "k8s-test", "--network=pod", "--force"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in relaxed.stdout, 120), relaxed.stdout + relaxed.stderr
        assert k8s.network_policies(name_of(cube)) == []
        gate.write_text("go\n")
        assert relaxed.wait(120) == 0, relaxed.stderr
    finally:
        relaxed.stop()
    runs = records(cube / "workspace")
    assert [r["policy"]["network"] for r in runs] == ["none", "pod"]
    assert runs[1]["policy"]["relaxations"][0] == {"name": "network", "detail": "--network=pod", "source": "cli"}
    k8s.assert_nothing_left(name_of(cube))


def test_ctrl_c_removes_the_network_policy_too(k8s: Cluster, tmp_path: Path) -> None:
    cube = probe(tmp_path / "probe")
    bg = Background(["run", "--mlcube", str(cube), "--task", "gate", "--platform", "k8s-test"], k8s.env, tmp_path)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        assert len(k8s.network_policies(name_of(cube))) == 1
        bg.signal(signal.SIGINT)
        assert bg.wait(60) == 130
    finally:
        bg.stop()
    k8s.assert_nothing_left(name_of(cube))
