"""The singularity runner against a REAL Apptainer (Debian sid's apptainer, in the sid rootfs of
scripts/backends/apptainer.sh, reached through its wrapper executable).

The runner knows nothing of the wrapper: a settings file names it as the platform's
`singularity` executable, exactly as a user names a real install. Everything goes through the CLI
in a subprocess (`cuberun configure/run --platform=apptainer-test`).

The image is a tiny Docker image (Debian's busybox-static plus a probe script) made in the Docker
engine of scripts/backends/docker.sh; the SIF is built from it with `docker-daemon:` (the
runner's own fallback when the engine has the image) and from a `docker save` archive.
Checked: binds, read-only inputs, outputs owned back in the workspace, `--containall`, no
network (`--network=none`), exit codes, Ctrl-C (nothing of the task survives, nothing recorded
complete), and the apptainer process killed under a running task (the "backend died" fault).
Time limits and retries (retry.py): a flaky task succeeds on attempt 2, and both attempts over
their time limit leave nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, require_backend
from tests.conftest import run_records
from tests.faults.helpers import Background, alive, cmdline, processes_mentioning, wait_until
from tests.integration import retries

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
TIMEOUT = 600
IMAGE = f"localhost/cuberun-it-apptainer-{SESSION}/probe:0.1"

pytestmark = pytest.mark.apptainer

PROBE_SH = """\
#!/bin/sh
# probe MODE --key=value...: what the tests ask the container to do
mode=$1; shift
for a in "$@"; do
  case "$a" in
    --data=*) data=${a#--data=} ;;
    --out=*) out=${a#--out=} ;;
  esac
done
case "$mode" in
  copy) mkdir -p "$out" && cp -r "$data"/. "$out"/ && echo "copied $(ls "$data" | wc -l) files" ;;
  scribble) echo scribble > "$data/scribbled" ;;
  report) mkdir -p "$(dirname "$out")"
          { echo "uid=$(id -u)"; echo "nets=$(grep -c : /proc/net/dev)"; echo "home=$HOME";
            echo "mark=${CUBERUN_IT_MARK:-unset}"; echo "cuda=${CUDA_VISIBLE_DEVICES:-unset}"; echo "pwd=$(pwd)"; } > "$out" ;;
  fail) echo "failing on purpose"; exit 3 ;;
  sleep) echo "$$" > "$out"; echo started; exec sleep 300 ;;
  flaky) mkdir -p "$out" && printf x >> "$out/marker"; n=$(wc -c < "$out/marker"); echo "attempt $n"; [ "$n" -gt 1 ] || exit 3 ;;
  nap) mkdir -p "$out" && {whoami} >> "$out/whoami"; echo started; exec sleep 300 ;;
  *) echo "unknown mode $mode"; exit 64 ;;
esac
"""

CUBE = """\
name: probe
docker:
  image: {image}
tasks:
  copy:
    parameters:
      inputs: {{data: data/}}
      outputs: {{out: copied/}}
  scribble:
    parameters:
      inputs: {{data: data/}}
  report:
    parameters:
      outputs: {{out: {{type: file, default: report/report.txt}}}}
  fail:
    parameters: {{}}
  sleep:
    parameters:
      outputs: {{out: {{type: file, default: pid.txt}}}}
  flaky:
    retries: 2
    parameters:
      outputs: {{out: flaky/}}
  nap:
    parameters:
      outputs: {{out: nap/}}
"""


class Apptainer:
    def __init__(self, env: dict[str, str], docker_env: dict[str, str], root: Path, details: dict[str, Any]) -> None:
        self.env = env
        self.docker_env = docker_env
        self.root = root
        self.details = details

    def cuberun(self, *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def cube(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "mlcube.yaml").write_text(CUBE.format(image=IMAGE))
        data = dest / "workspace" / "data"
        data.mkdir(parents=True)
        (data / "a.txt").write_text("alpha\n")
        (data / "b with space.txt").write_text("beta\n")
        return dest


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apptainer]:
    details = require_backend("apptainer")
    require_backend("docker")
    root = tmp_path_factory.mktemp("apptainer")
    docker_env = {**os.environ, **backend_env("docker")}
    # the probe image: Debian's busybox-static and the probe script, imported into the engine
    tree = root / "image"
    (tree / "bin").mkdir(parents=True)
    (tree / "tmp").mkdir()
    busybox = Path("/bin/busybox")
    assert busybox.is_file(), "busybox-static is installed by scripts/backends/apptainer.sh"
    (tree / "bin" / "busybox").write_bytes(busybox.read_bytes())
    (tree / "bin" / "busybox").chmod(0o755)
    applets = subprocess.run([str(tree / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (tree / "bin" / applet).symlink_to("busybox")
    (tree / "probe.sh").write_text(PROBE_SH.replace("{whoami}", retries.WHOAMI_SH))
    (tree / "probe.sh").chmod(0o755)
    tar = subprocess.run(["tar", "-C", str(tree), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run(["docker", "import", "-c", "ENV PATH=/bin", "-c", 'ENTRYPOINT ["/bin/sh", "/probe.sh"]', "-", IMAGE],
                   input=tar, env=docker_env, capture_output=True, check=True, timeout=120)
    settings = root / "settings.yaml"
    settings.write_text(json.dumps({"platforms": {
        "apptainer-test": {"runner": "singularity", "singularity": details["executable"], "build_args": "",
                           "image_dir": str(root / "sif")},
    }}))
    env = {**docker_env, "CUBERUN_SETTINGS": str(settings), "MLCUBE_SYSTEM_SETTINGS": str(root / "none.yaml"),
           "CUBERUN_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(REPO / "src"), "CUBERUN_IT_MARK": "host-value"}
    try:
        yield Apptainer(env, docker_env, root, details)
    finally:
        subprocess.run(["docker", "rmi", "-f", IMAGE], env=docker_env, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def built(app: Apptainer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configure builds the SIF once from the Docker engine (docker-daemon:); later cubes reuse it."""
    cube = app.cube(tmp_path_factory.mktemp("configure") / "probe")
    proc = ok(app.cuberun("configure", "--mlcube", str(cube), "--platform", "apptainer-test"))
    assert f"docker-daemon:{IMAGE}" in proc.stderr
    sif = app.root / "sif" / (IMAGE.replace("/", "").replace(":", "").replace("-", "").replace(".", "") + ".sif")
    assert sif.is_file(), sorted(p.name for p in (app.root / "sif").iterdir())
    again = ok(app.cuberun("configure", "--mlcube", str(cube), "--platform", "apptainer-test"))
    assert "building" not in again.stderr  # the SIF is current
    return sif


def run(app: Apptainer, cube: Path, task: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return app.cuberun("run", "--mlcube", str(cube), "--task", task, "--platform", "apptainer-test", *extra, env=env)


def test_directory_in_directory_out_with_binds(app: Apptainer, built: Path, tmp_path: Path) -> None:
    cube = app.cube(tmp_path / "probe")
    proc = ok(run(app, cube, "copy"))
    out = cube / "workspace" / "copied"
    assert (out / "a.txt").read_text() == "alpha\n" and (out / "b with space.txt").read_text() == "beta\n"
    assert "copied 2 files" in proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    command = record["command"]
    assert command[0] == app.details["executable"] and command[1] == "run"
    assert f"{cube / 'workspace' / 'data'}:/mlcube_io0:ro" in command  # inputs bound read-only
    again = ok(run(app, cube, "copy"))
    assert "skipping task 'copy'" in again.stderr


def test_inputs_are_read_only(app: Apptainer, built: Path, tmp_path: Path) -> None:
    cube = app.cube(tmp_path / "probe")
    before = sorted(p.name for p in (cube / "workspace" / "data").iterdir())
    proc = run(app, cube, "scribble")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Read-only file system" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (cube / "workspace" / "data").iterdir()) == before
    [record] = records(cube / "workspace")
    assert record["status"] == "failed"


def test_exit_code_is_propagated(app: Apptainer, built: Path, tmp_path: Path) -> None:
    cube = app.cube(tmp_path / "probe")
    proc = run(app, cube, "fail")
    assert proc.returncode == 3, proc.stderr
    assert "failing on purpose" in proc.stdout
    [record] = records(cube / "workspace")
    assert record["status"] == "failed" and record["exit_code"] == 3


def test_containall_and_no_network(app: Apptainer, built: Path, tmp_path: Path) -> None:
    """The run policy: contained, clean environment and no network by default; --network=host
    shares the host's network (a relaxation, recorded)."""
    cube = app.cube(tmp_path / "probe")
    report = cube / "workspace" / "report" / "report.txt"
    ok(run(app, cube, "report", "--gpus=device=1,3"))
    isolated = dict(line.split("=", 1) for line in report.read_text().splitlines())
    assert isolated["mark"] == "unset"  # --cleanenv: the host's environment stays out
    assert isolated["nets"] == "1"  # only lo
    assert isolated["home"] == "/root" and isolated["uid"] == "0"
    assert isolated["cuda"] == "1,3"  # --gpus=device=... -> CUDA_VISIBLE_DEVICES (and --nv)
    record = records(cube / "workspace")[-1]
    assert "--containall" in record["command"] and "--network=none" in record["command"] and "--nv" in record["command"]
    assert record["policy"]["strict"] is True
    ok(run(app, cube, "report", "--network=host"))
    shared = dict(line.split("=", 1) for line in report.read_text().splitlines())
    assert int(shared["nets"]) > 1 and shared["mark"] == "unset"
    record = records(cube / "workspace")[-1]
    assert "--net" not in record["command"]
    assert record["policy"]["relaxations"] == [{"name": "network", "detail": "--network=host", "source": "cli"}]


def test_sif_from_a_docker_archive(app: Apptainer, tmp_path: Path) -> None:
    archive = tmp_path / "probe.tar"
    subprocess.run(["docker", "save", "-o", str(archive), IMAGE], env=app.docker_env, check=True, timeout=120, capture_output=True)
    cube = app.cube(tmp_path / "probe")
    sif_dir = tmp_path / "sif"
    params = [f"-Prunner.build_file=docker-archive:{archive}", f"-Prunner.image_dir={sif_dir}"]
    proc = ok(run(app, cube, "copy", *params))
    assert f"docker-archive:{archive}" in proc.stderr
    assert (cube / "workspace" / "copied" / "a.txt").is_file()
    assert len(list(sif_dir.glob("*.sif"))) == 1


def _interrupt(app: Apptainer, cube: Path, sig: int, kill_backend: bool = False) -> tuple[int, str]:
    mark = cube / "workspace" / "pid.txt"
    bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "apptainer-test"], app.env, cube)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        # the task's shell, seen from the host (its pid in the container's namespace differs)
        task_pids = [pid for pid, cmd in processes_mentioning("sleep 300")]
        assert task_pids, "the task's process is not visible"
        if kill_backend:
            # only this run's namespace (the HTCondor pool lives in the same rootfs, behind another unshare)
            wrappers = [pid for pid, cmd in processes_mentioning(str(cube)) if cmd.startswith("unshare") and app.details["sid_root"] in cmdline(pid)]
            assert wrappers
            for pid in wrappers:
                os.kill(pid, signal.SIGKILL)
        else:
            bg.signal(sig)
        code = bg.wait(120)
        assert wait_until(lambda: not any(alive(p) for p in task_pids), 30), "the task survived"
        assert mark.exists()
        return code, bg.stderr
    finally:
        bg.stop()


def test_ctrl_c_stops_the_task_and_records_it_interrupted(app: Apptainer, built: Path, tmp_path: Path) -> None:
    cube = app.cube(tmp_path / "probe")
    code, stderr = _interrupt(app, cube, signal.SIGINT)
    assert code == 130, stderr
    [record] = records(cube / "workspace")
    assert record["status"] == "interrupted"
    assert "Traceback" not in stderr


def test_apptainer_killed_under_a_running_task_is_a_failure(app: Apptainer, built: Path, tmp_path: Path) -> None:
    cube = app.cube(tmp_path / "probe")
    code, stderr = _interrupt(app, cube, signal.SIGKILL, kill_backend=True)
    assert code != 0, stderr
    [record] = records(cube / "workspace")
    assert record["status"] == "failed"
    assert "Traceback" not in stderr
    # nothing recorded complete: the next run runs the task again
    assert not (cube / "workspace" / ".cuberun" / "state" / "sleep.json").exists()


def test_a_task_over_its_time_limit_is_stopped(app: Apptainer, built: Path, tmp_path: Path) -> None:
    """--timeout: the task is stopped (nothing of it survives), exit 124, the record says it timed out."""
    cube = app.cube(tmp_path / "probe")
    bg = Background(["run", "--mlcube", str(cube), "--task", "sleep", "--platform", "apptainer-test", "--timeout", "5"], app.env, cube)
    try:
        assert wait_until(lambda: "started" in bg.stdout, 120), bg.stdout + bg.stderr
        task_pids = [pid for pid, cmd in processes_mentioning("sleep 300")]
        assert task_pids, "the task's process is not visible"
        code = bg.wait(120)
        assert wait_until(lambda: not any(alive(p) for p in task_pids), 30), "the task survived its time limit"
        assert not [pid for pid, cmd in processes_mentioning(str(cube)) if alive(pid)], "apptainer survived the time limit"
    finally:
        bg.stop()
    assert code == 124, bg.stderr
    errors = [line for line in bg.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and "timed out after 5 s (--timeout)" in errors[0], bg.stderr
    [record] = records(cube / "workspace")
    assert record["exit_code"] == 124 and record["status"] == "failed" and "timed out" in json.dumps(record)
    assert not (cube / "workspace" / ".cuberun" / "state" / "sleep.json").exists()


# -- time limits and retries (retry.py; the other runners: tests/integration/test_retry_real.py) --------------
def test_a_flaky_task_succeeds_on_its_second_attempt(app: Apptainer, built: Path, tmp_path: Path) -> None:
    """`retries: 2` in the cube: the first attempt fails (exit 3), the second, in a new container, succeeds."""
    cube = app.cube(tmp_path / "probe")
    proc = run(app, cube, "flaky", "--retry-delay=0.1")
    ws = cube / "workspace"
    record = retries.check_second_attempt(ws, proc, ws / "flaky" / "marker")
    assert record["limits"]["retries_source"] == "cube"
    assert not processes_mentioning(str(cube))  # no apptainer of this run left


def test_each_attempt_over_its_time_limit_is_stopped(app: Apptainer, built: Path, tmp_path: Path) -> None:
    """`--timeout 3 --retries 1`: both attempts time out, exit 124; nothing of either container is left
    (each attempt's task wrote its PID namespace and start time: neither runs, nor any apptainer of the run)."""
    cube = app.cube(tmp_path / "probe")
    proc = run(app, cube, "nap", "--timeout=3", "--retries=1", "--retry-delay=0")
    retries.check_timed_out_twice(cube / "workspace", proc, 3)
    assert proc.stdout.count("started") == 2
    tasks = [line.split() for line in (cube / "workspace" / "nap" / "whoami").read_text().splitlines()]
    assert len(tasks) == 2 and all(ns.startswith("pid:[") and start.isdigit() for ns, start in tasks), tasks
    assert wait_until(lambda: not any(retries.still_running(ns, start) for ns, start in tasks), 60), "a task outlived its time limit"
    assert not processes_mentioning(str(cube))
