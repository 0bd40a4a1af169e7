"""The charliecloud runner for real: `ch-run` (Debian's charliecloud-runtime 0.31) on the
debootstrap rootfs that scripts/backends/up.sh prepares, and Docker images converted into
directory images (the Docker engine from up.sh; those tests skip without it).

Two ways in, as users would do it:
- `image_dir:` a directory image (here a copy of the rootfs with the example programs copied
  to where their Dockerfiles put them; ENTRYPOINT and WORKDIR then come from the Dockerfile);
- conversion of the cube's Docker image (built from the example's Dockerfile on the local base
  image), with its Entrypoint/WorkingDir/Env taken from the image.

Everything goes through the CLI in a subprocess. ch-run 0.31 has no network isolation of its own:
cuberun runs it in a network namespace of its own, with the inputs bound read-only (its sandbox
script, runners/charliecloud/sandbox.py; tested below against a socket on the host's loopback); builds that would need PyPI are avoided. Docker images carry a
per-session `localhost/cuberun-it-ch-<hex>/` prefix and are removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_records
from tests.faults.helpers import processes_mentioning, wait_until
from tests.integration import retries

try:
    from tests.backends import backend_env, require_backend, unavailable_reason
except ModuleNotFoundError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from backends import backend_env, require_backend, unavailable_reason  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT = 600
SESSION = uuid.uuid4().hex[:8]
NOBODY = 65534
SANDBOX = [sys.executable, "-I", "-S", str(REPO / "src" / "cuberun" / "runners" / "charliecloud" / "sandbox.py")]

pytestmark = pytest.mark.charliecloud


class Charlie:
    """The backend: the environment for cuberun, a shared directory image, Docker (optional)."""

    def __init__(self, env: dict[str, str], shared: Path, image_dir: Path, docker_env: dict[str, str] | None, base: str | None) -> None:
        self.env = env
        self.shared = shared  # world-readable (the unprivileged test reads it)
        self.image_dir = image_dir
        self.docker_env = docker_env
        self.base = base
        self.images: list[str] = []

    def cuberun(self, *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def need_docker(self) -> dict[str, str]:
        if self.docker_env is None:
            reason = unavailable_reason("docker") or "no Docker engine"
            require_backend("docker")  # skips (or fails under CUBERUN_REQUIRE_BACKENDS=1)
            pytest.skip(reason)
        return self.docker_env

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.need_docker()
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert proc.returncode == 0, f"docker {args}: {proc.stderr}"
        return proc

    def tag(self, name: str) -> str:
        tag = f"localhost/cuberun-it-ch-{SESSION}/{name}:0.1"
        self.images.append(tag)
        return tag

    def build_params(self, name: str) -> list[str]:
        self.need_docker()
        return [f"-Pdocker.image={self.tag(name)}", "-Pdocker.build_strategy=auto", f"-Pdocker.build_args.BASE_IMAGE={self.base}"]


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Charlie]:
    details = require_backend("charliecloud")
    tmp = tmp_path_factory.mktemp("charliecloud")
    env = {**os.environ, **backend_env("charliecloud")}
    env.update(
        CUBERUN_SETTINGS=str(tmp / "settings.yaml"),
        MLCUBE_SYSTEM_SETTINGS=str(tmp / "mlcube-settings.yaml"),
        CUBERUN_CACHE_DIR=str(tmp / "cache"),  # converted images of this module
        PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("DOCKER_HOST", None)
    docker_env = base = None
    if unavailable_reason("docker") is None:
        docker_env = {**env, **backend_env("docker")}
        base = str(require_backend("docker")["base_image"])
    # one directory image for the image_dir tests: the rootfs plus the examples' programs
    shared = Path(tempfile.mkdtemp(prefix="cuberun-ch-it-", dir="/tmp"))
    shared.chmod(0o755)
    image_dir = shared / "rootfs"
    # hard links: fast, and nothing here writes into the image's files (ch-run mounts it read-only)
    subprocess.run(["cp", "-al", str(details["rootfs"]), str(image_dir)], check=True, timeout=300)
    (image_dir / "workspace").mkdir(exist_ok=True)
    for name in ("hello_world", "matmul"):
        shutil.copy2(EXAMPLES / name / f"{name}.py", image_dir / "workspace" / f"{name}.py")
    charlie = Charlie(env, shared, image_dir, docker_env, base)
    try:
        yield charlie
    finally:
        for tag in charlie.images:
            if docker_env is not None:
                subprocess.run(["docker", "rmi", "-f", tag], env=docker_env, capture_output=True, timeout=120, check=False)
        for path in (shared, tmp / "cache"):  # the converted images are large: do not leave them to pytest's tmp retention
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=300)


# -- helpers -----------------------------------------------------------------------------------------------
def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(".cuberun", "__pycache__"))
    return target


def records(workspace: Path) -> list[dict[str, Any]]:
    return run_records(workspace)


def single_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def on_image_dir(ch: Charlie) -> list[str]:
    return ["--platform", "charliecloud", f"-Pcharliecloud.image_dir={ch.image_dir}"]


PROBE = """
name: probe
charliecloud: {{image_dir: "{image_dir}"}}
tasks:
  report:
    entrypoint: python3 -c "import json, os, sys; p = sys.argv[1].split('=', 1)[1]; json.dump(dict(uid=os.getuid(), cwd=os.getcwd(), env=dict(os.environ), argv=sys.argv[1:]), open(p, 'w'))"
    parameters:
      outputs: {{out: {{type: file, default: out/report.json}}}}
  fail3:
    entrypoint: python3 -c "import sys; print('failing', flush=True); sys.exit(3)"
  missing:
    entrypoint: no-such-program --flag
  sleep:
    entrypoint: python3 /probe/sleep.py
    parameters:
      outputs: {{pids: {{type: file, default: pids.txt}}}}
  connect:
    entrypoint: python3 -c "import os, socket; s = socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), timeout=10); print('connected:', s.recv(5).decode(), flush=True)"
  scribble:
    entrypoint: python3 -c "import sys; p = sys.argv[1].split('=', 1)[1]; open(p, 'a').write('changed'); print('wrote to the input', flush=True)"
    parameters:
      inputs: {{data: {{type: file, default: data.txt}}}}
  flaky:
    entrypoint: {flaky}
    retries: 2
    parameters:
      outputs: {{out: flaky/}}
  remount:
    entrypoint: python3 -c "import ctypes, os, sys; d = os.path.dirname(sys.argv[1].split('=', 1)[1]).encode(); r = ctypes.CDLL(None, use_errno=True).mount(None, d, None, 32 | 4096, None); print('remount:', r, os.strerror(ctypes.get_errno()), flush=True)"
    parameters:
      inputs: {{data: {{type: file, default: data.txt}}}}
"""

# the task starts a grandchild that ignores SIGINT and SIGTERM: only SIGKILL to the group stops it
SLEEP = textwrap.dedent(
    """
    import os, subprocess, sys, time
    GRANDCHILD = ("import signal, time\\n"
                  "signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                  "deadline = time.monotonic() + 120\\n"
                  "while time.monotonic() < deadline:\\n"
                  "    time.sleep(0.05)\\n")
    path = sys.argv[1].split("=", 1)[1]
    child = subprocess.Popen([sys.executable, "-c", GRANDCHILD])
    with open(path, "a") as out:  # one line per attempt
        out.write(f"{os.getpid()} {child.pid}\\n")
    print("started", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(9)
    """
)


def probe_cube(ch: Charlie, dest: Path) -> Path:
    root = dest / "probe"
    root.mkdir(parents=True)
    (root / "mlcube.yaml").write_text(PROBE.format(image_dir=ch.image_dir, flaky=json.dumps(retries.FLAKY_ENTRY)))
    (ch.image_dir / "probe").mkdir(exist_ok=True)
    (ch.image_dir / "probe" / "sleep.py").write_text(SLEEP)
    return root


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the examples on a directory image ------------------------------------------------------------------------
def test_hello_world_on_an_image_dir(ch: Charlie, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    proc = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "hello,bye", *on_image_dir(ch)))
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    assert chat.read_text() == "Hi, Alice! Nice to meet you.\nBye, Alice! Talk to you soon.\n"
    st = chat.stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    runs = records(cube / "workspace")
    assert sorted((r["task"], r["status"]) for r in runs) == [("bye", "succeeded"), ("hello", "succeeded")]
    command = next(r["command"] for r in runs if r["task"] == "hello")
    # the network off (a network namespace of its own), the input folder read-only
    assert command[:9] == [*SANDBOX, "--net", "--ro", str(cube / "workspace" / "names"), "--", "ch-run"]
    assert command[len(command) - command[::-1].index("--") :][:3] == ["python3", "/workspace/hello_world.py", "hello"]
    assert "--cd=/workspace" in command
    assert "converting" not in proc.stderr


def test_matmul_on_an_image_dir(ch: Charlie, tmp_path: Path) -> None:
    cube = copy_example("matmul", tmp_path)
    (cube / "workspace" / "matmul.txt").unlink(missing_ok=True)
    ok(ch.cuberun("run", "--mlcube", str(cube), *on_image_dir(ch)))
    report = (cube / "workspace" / "matmul.txt").read_text()
    assert report.startswith("shape: 256x128\nchecksum: ")


def test_dry_run_prints_the_command_and_creates_nothing(ch: Charlie, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    proc = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--dry-run", *on_image_dir(ch)))
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{' '.join(SANDBOX)} --net --ro {cube / 'workspace' / 'names'} -- ch-run '--unset-env=*' --env-no-expand ")
    assert lines[1].startswith("# hello: policy: strict")
    assert lines[0].endswith(" -- python3 /workspace/hello_world.py hello --name=/mlcube_io0/alice.txt --chat=/mlcube_io1/chat_with_alice.txt")
    assert not (cube / "workspace" / "chats").exists()


# -- conversion of Docker images ----------------------------------------------------------------------------------
def test_hello_world_converted_from_its_docker_image(ch: Charlie, tmp_path: Path) -> None:
    cube = copy_example("hello_world", tmp_path)
    params = ch.build_params("hello_world")
    env = ch.need_docker()
    first = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--platform", "charliecloud", *params, env=env))
    assert "converting" in first.stderr and "no converted image yet" in first.stderr
    # the conversion's progress: a line at each phase (the export's and extraction's bytes between)
    phases = [m.group(1).strip() for m in re.finditer(r"^cuberun: converting \S+ for Charliecloud: ([a-z ]+)", first.stderr, re.M)]
    assert list(dict.fromkeys(phases)) == ["creating a container", "exporting", "extracting"], first.stderr
    assert re.search(r"^cuberun: converting \S+ for Charliecloud: extracting, \d+ B of \d+\.\d [KMG]iB \(\d+ s\)$", first.stderr, re.M), first.stderr
    assert (cube / "workspace" / "chats" / "chat_with_alice.txt").read_text() == "Hi, Alice! Nice to meet you.\n"
    stores = list((Path(ch.env["CUBERUN_CACHE_DIR"]) / "charliecloud").glob("localhost_cuberun-it-ch-*hello_world*"))
    assert len(stores) == 1
    meta = json.loads((stores[0] / "image.json").read_text())
    assert meta["config"]["Entrypoint"] == ["python3", "/workspace/hello_world.py"] and meta["config"]["WorkingDir"] == "/workspace"
    assert meta["id"] == ch.docker("image", "inspect", "--format", "{{.Id}}", params[0].split("=", 1)[1]).stdout.strip()
    assert not [p.name for p in stores[0].iterdir() if p.name.startswith(".") and p.name != ".lock"], "conversion left temporary files"

    # unchanged: configure is a quick no-op, and the task is up to date
    timings = []
    for _ in range(2):
        start = time.monotonic()
        again = ok(ch.cuberun("configure", "--mlcube", str(cube), "--platform", "charliecloud", *params, env=env))
        timings.append(time.monotonic() - start)
        assert "converting" not in again.stderr and "building" not in again.stderr
    print(f"charliecloud configure no-op: {min(timings):.3f} s")
    assert min(timings) < 5
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    skipped = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--platform", "charliecloud", *params, env=env))
    assert "skipping task 'hello'" in skipped.stderr and chat.read_text() == "Hi, Alice! Nice to meet you.\n"

    # a source change rebuilds the Docker image (strategy auto): the directory image is converted
    # again, and the task is out of date because the image ID changed
    script = cube / "hello_world.py"
    script.write_text(script.read_text().replace("Nice to meet you.", "Nice to meet you again."))
    rerun = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "hello", "--platform", "charliecloud", *params, env=env))
    assert "the image changed in docker" in rerun.stderr and "skipping" not in rerun.stderr
    assert chat.read_text() == "Hi, Alice! Nice to meet you.\nHi, Alice! Nice to meet you again.\n"

    # without any Docker engine (an HPC node), the converted image still runs
    bin_dir = tmp_path / "bin-without-docker"
    bin_dir.mkdir()
    (bin_dir / "ch-run").symlink_to(shutil.which("ch-run") or "/usr/bin/ch-run")
    no_docker = dict(ch.env, PATH=str(bin_dir))
    quiet = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "bye", "--platform", "charliecloud",
                          f"-Pdocker.image={params[0].split('=', 1)[1]}", env=no_docker))
    assert "converting" not in quiet.stderr and "note" not in quiet.stderr
    assert chat.read_text().endswith("Nice to meet you again.\nBye, Alice! Talk to you soon.\n")


THIRD_PARTY_YAML = """
name: third_party
description: a cube written for mlcube's docker runner only (no cuberun sections)
platform:
  accelerator_count: 0
docker:
  image: {image}
  build_context: "."
  build_file: "Dockerfile"
tasks:
  prepare:
    parameters:
      inputs:
        data_path: input_data/
        parameters_file: parameters.yaml
      outputs:
        output_path: prepared/
  report:
    entrypoint: python3 report.py --verbose
    parameters:
      inputs:
        data: prepared/
      outputs:
        report_file: {{type: file, default: reports/report.json}}
  check:
    entrypoint: ./check.sh
    parameters:
      inputs:
        data: prepared/
      outputs:
        out: {{type: file, default: reports/check.txt}}
"""

THIRD_PARTY_DOCKERFILE = """\
ARG BASE_IMAGE=python:3.9-slim
FROM ${BASE_IMAGE}
ENV CUBE_STAGE=production
COPY . /mlcube_project
WORKDIR /mlcube_project
ENTRYPOINT ["python3", "mlcube.py"]
"""

THIRD_PARTY_APP = """\
import argparse, os, sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("task", choices=["prepare"])
parser.add_argument("--data_path", required=True)
parser.add_argument("--parameters_file", required=True)
parser.add_argument("--output_path", required=True)
args = parser.parse_args()
factor = int(Path(args.parameters_file).read_text().split(":")[1])
total = sum(int(p.read_text()) for p in sorted(Path(args.data_path).glob("*.txt")))
Path(args.output_path, "total.txt").write_text(str(total * factor))
print("prepared", total * factor, "in", os.getcwd(), "stage", os.environ.get("CUBE_STAGE"))
"""

THIRD_PARTY_REPORT = """\
import json, os, sys
from pathlib import Path

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
report = {
    "argv": sys.argv[1:],
    "total": Path(args["data"], "total.txt").read_text(),
    "cwd": os.getcwd(),
    "stage": os.environ.get("CUBE_STAGE"),
    "leaked": os.environ.get("CUBERUN_IT_HOST_SECRET"),
    "home": os.environ.get("HOME"),
    "user": os.environ.get("USER"),
}
Path(args["report_file"]).write_text(json.dumps(report))
"""

THIRD_PARTY_CHECK = """\
#!/bin/sh
for arg in "$@"; do case "$arg" in --out=*) out="${arg#--out=}" ;; esac; done
printf '%s\\n' "$@" > "$out"
"""


def test_third_party_cube_converted_from_docker(ch: Charlie, tmp_path: Path) -> None:
    """Dockerfile ENTRYPOINT relative to WORKDIR, ENV in the image, task entrypoints (several
    tokens and one), untyped parameters, no cuberun section."""
    env = dict(ch.need_docker())
    env["CUBERUN_IT_HOST_SECRET"] = "must-not-leak"
    cube = tmp_path / "third_party"
    cube.mkdir()
    tag = ch.tag("third_party")
    files = {
        "mlcube.yaml": THIRD_PARTY_YAML.format(image=tag), "Dockerfile": THIRD_PARTY_DOCKERFILE, "mlcube.py": THIRD_PARTY_APP,
        "report.py": THIRD_PARTY_REPORT, "check.sh": THIRD_PARTY_CHECK, ".dockerignore": "workspace\n",
        "workspace/parameters.yaml": "factor: 3\n", "workspace/input_data/a.txt": "4\n", "workspace/input_data/b.txt": "10\n",
    }
    for rel, text in files.items():
        (cube / rel).parent.mkdir(parents=True, exist_ok=True)
        (cube / rel).write_text(text)
    (cube / "check.sh").chmod(0o755)
    params = ["-Pdocker.build_strategy=auto", f"-Pdocker.build_args.BASE_IMAGE={ch.base}"]
    proc = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "prepare,report,check", "--platform", "charliecloud", *params, env=env))
    ws = cube / "workspace"
    assert (ws / "prepared" / "total.txt").read_text() == "42"
    assert "prepared 42 in /mlcube_project stage production" in proc.stdout
    report = json.loads((ws / "reports" / "report.json").read_text())
    assert report["argv"] == ["--verbose", "--data=/mlcube_io0", "--report_file=/mlcube_io1/report.json"]  # no task name
    assert report["total"] == "42" and report["cwd"] == "/mlcube_project" and report["stage"] == "production"
    assert report["leaked"] is None and report["home"] == "/tmp" and report["user"]
    assert (ws / "reports" / "check.txt").read_text().splitlines() == ["--data=/mlcube_io0", "--out=/mlcube_io1/check.txt"]


# -- failures, signals, ownership -----------------------------------------------------------------------------
def test_exit_code_passes_through(ch: Charlie, tmp_path: Path) -> None:
    cube = probe_cube(ch, tmp_path)
    proc = ch.cuberun("run", "--mlcube", str(cube), "--task", "fail3", "--platform", "charliecloud")
    assert proc.returncode == 3, proc.stderr
    assert "failing" in proc.stdout
    assert "task 'fail3' failed with exit code 3" in single_error_line(proc.stderr)
    assert records(cube / "workspace")[-1]["status"] == "failed"


def test_a_missing_command_is_one_clear_error(ch: Charlie, tmp_path: Path) -> None:
    cube = probe_cube(ch, tmp_path)
    proc = ch.cuberun("run", "--mlcube", str(cube), "--task", "missing", "--platform", "charliecloud")
    assert proc.returncode == 127, proc.stderr
    line = single_error_line(proc.stderr)
    assert "could not run its command: can't execve(2): no-such-program: No such file or directory" in line


def test_environment_and_identity(ch: Charlie, tmp_path: Path) -> None:
    cube = probe_cube(ch, tmp_path)
    env = dict(ch.env, CUBERUN_IT_HOST_SECRET="must-not-leak")
    env.pop("USER", None)  # ch-run needs it: cuberun sets it
    ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "report", "--platform", "charliecloud", env=env))
    report = json.loads((cube / "workspace" / "out" / "report.json").read_text())
    assert report["uid"] == os.getuid() and report["cwd"] == "/"
    assert "CUBERUN_IT_HOST_SECRET" not in report["env"] and report["env"]["HOME"] == "/tmp" and report["env"]["USER"]
    assert report["argv"] == ["--out=/mlcube_io0/report.json"]



def test_a_secret_variable_reaches_the_task_but_not_argv_or_records(ch: Charlie, tmp_path: Path) -> None:
    cube = probe_cube(ch, tmp_path)
    secret = "s3 cr'et $HOME"
    ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "report", "--platform", "charliecloud",
                  f"-Pcharliecloud.env_vars.API_TOKEN={secret}", "-Pcharliecloud.env_vars.PLAIN=p"))
    report = json.loads((cube / "workspace" / "out" / "report.json").read_text())
    assert report["env"]["API_TOKEN"] == secret and report["env"]["PLAIN"] == "p"
    (run,) = records(cube / "workspace")
    assert "--set-env=/dev/stdin" in run["command"] and "--set-env=PLAIN=p" in run["command"]
    ours = [p for p in (cube / "workspace").rglob("*") if p.is_file() and "out" not in p.relative_to(cube / "workspace").parts]
    assert ours and not [p for p in ours if "s3 cr" in p.read_text(errors="replace")]  # records and logs: the task's own report aside

def test_ctrl_c_stops_ch_run_and_the_task(ch: Charlie, tmp_path: Path) -> None:
    cube = probe_cube(ch, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuberun", "run", "--mlcube", str(cube), "--task", "sleep", "--platform", "charliecloud"],
        env=ch.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while "started" not in line:
            assert time.monotonic() < deadline, "the task did not start"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        pids = [int(p) for p in (cube / "workspace" / "pids.txt").read_text().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        while any(alive(p) for p in pids):
            assert time.monotonic() - sent < 120, f"hang: still running 120 s after Ctrl-C: {[p for p in pids if alive(p)]}"
            time.sleep(0.1)
        print(f"charliecloud: task and grandchild gone {time.monotonic() - sent:.2f} s after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    record = records(cube / "workspace")[-1]
    assert record["status"] == "interrupted" and record["exit_code"] == 130


def _python_for_nobody(dest: Path) -> tuple[str, str] | None:
    """The system python plus a world-readable copy of click (cuberun's other dependency,
    PyYAML, is in Debian's python3-yaml): cuberun's interpreter may live under /root."""
    python = "/usr/bin/python3"
    if not os.path.exists(python) or shutil.which("setpriv") is None:
        return None
    check = subprocess.run([python, "-c", "import yaml, sys; sys.exit(sys.version_info < (3, 10))"], capture_output=True, timeout=60, check=False)
    if check.returncode != 0:
        return None
    import click

    lib = dest / "pylib"
    shutil.copytree(Path(click.__file__).parent, lib / "click", ignore=shutil.ignore_patterns("__pycache__"))
    return python, str(lib)


def test_outputs_are_owned_by_an_unprivileged_user(ch: Charlie) -> None:
    """ch-run runs the task as the invoking user: cuberun started by uid 65534 writes 65534's files."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start cuberun as another user")
    home = Path(tempfile.mkdtemp(prefix="cuberun-ch-nobody-", dir="/tmp"))
    try:
        found = _python_for_nobody(home)
        if found is None:
            pytest.skip("no system python3 with PyYAML, or no setpriv")
        python, lib = found
        cube = copy_example("hello_world", home)
        for i in range(2):  # the shared image is root's: its mount points must exist already
            (ch.image_dir / f"mlcube_io{i}").mkdir(exist_ok=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(home)], check=True, timeout=60)
        home.chmod(0o755)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PYTHONPATH": f"{lib}:{REPO / 'src'}", "PYTHONDONTWRITEBYTECODE": "1",
            "CUBERUN_SETTINGS": str(home / "settings.yaml"), "MLCUBE_SYSTEM_SETTINGS": str(home / "mlcube.yaml"),
            "CUBERUN_CACHE_DIR": str(home / "cache"),
        }  # no USER: cuberun finds the name for ch-run
        proc = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-m", "cuberun", "run", "--mlcube", str(cube),
             "--task", "hello", *on_image_dir(ch)],
            env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=str(home), check=False,
        )
        ok(proc)
        chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
        assert chat.read_text() == "Hi, Alice! Nice to meet you.\n"
        for path in (chat, chat.parent):
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), path
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(home)], check=False, timeout=120)


# -- the run policy ---------------------------------------------------------------------------------------
def test_the_network_is_off_unless_asked_for(ch: Charlie, tmp_path: Path) -> None:
    """A server on the host's loopback: the task cannot reach it by default (a network namespace
    of its own around ch-run), and reaches it with --network=host (recorded)."""
    import socket
    import threading

    cube = probe_cube(ch, tmp_path)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(60)

    def serve() -> None:  # one connection at most: the one --network=host lets through
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        off = ch.cuberun("run", "--mlcube", str(cube), "--task", "connect", "--platform", "charliecloud", f"-Pcharliecloud.env_vars.PORT={port}")
        assert off.returncode == 1, off.stdout + off.stderr
        assert "connected" not in off.stdout and "Network is unreachable" in off.stdout + off.stderr
        on = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "connect", "--platform", "charliecloud", f"-Pcharliecloud.env_vars.PORT={port}",
                           "--network=host"))
        assert "connected: hello" in on.stdout
    finally:
        server.close()
        thread.join(10)
    first, second = records(cube / "workspace")
    assert first["policy"]["network"] == "none" and first["command"][:5] == [*SANDBOX, "--net"]
    assert second["policy"]["network"] == "host" and "--net" not in second["command"][:second["command"].index("ch-run")]
    assert {"name": "network", "detail": "--network=host", "source": "cli"} in second["policy"]["relaxations"]
    named = ch.cuberun("run", "--mlcube", str(cube), "--task", "connect", "--platform", "charliecloud", "--network=bridge")
    assert "--network=bridge: ch-run joins no named networks" in single_error_line(named.stderr)


def test_inputs_are_read_only_and_cannot_be_remounted(ch: Charlie, tmp_path: Path) -> None:
    """ch-run 0.31 binds read-write only: cuberun's sandbox binds each input onto itself read-only
    first, so the write fails, a remount read-write from inside is refused, and the file is as it was.
    `--mount=rw` makes them writable, recorded."""
    cube = probe_cube(ch, tmp_path)
    data = cube / "workspace" / "data.txt"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("original\n")
    denied = ch.cuberun("run", "--mlcube", str(cube), "--task", "scribble", "--platform", "charliecloud")
    assert denied.returncode == 1 and "Read-only file system" in denied.stderr + denied.stdout, denied.stderr
    assert data.read_text() == "original\n"
    remount = ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "remount", "--platform", "charliecloud"))
    assert "remount: -1 Operation not permitted" in remount.stdout, remount.stdout
    assert data.read_text() == "original\n"
    first, second = records(cube / "workspace")
    for record in (first, second):
        assert record["policy"]["inputs_read_only"] is True and record["policy"]["relaxations"] == []
        assert record["command"][4:6] == ["--net", "--ro"] and record["command"][6] == str(cube / "workspace")
    ok(ch.cuberun("run", "--mlcube", str(cube), "--task", "scribble", "--platform", "charliecloud", "--mount=rw"))
    assert data.read_text() == "original\nchanged"
    record = records(cube / "workspace")[-1]
    assert record["policy"]["inputs_read_only"] is False and {"name": "writable-inputs", "detail": "inputs mounted read-write", "source": "cli"} in \
        record["policy"]["relaxations"]


def test_a_task_over_its_time_limit_is_stopped(ch: Charlie, tmp_path: Path) -> None:
    """--timeout: the task and its grandchild (which ignores SIGINT and SIGTERM) are gone, exit 124."""
    cube = probe_cube(ch, tmp_path)
    proc = ch.cuberun("run", "--mlcube", str(cube), "--task", "sleep", "--platform", "charliecloud", "--timeout", "3")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert "started" in proc.stdout
    assert "timed out after 3 s (--timeout)" in single_error_line(proc.stderr)
    record = records(cube / "workspace")[-1]
    assert record["exit_code"] == 124 and record["status"] == "failed" and "timed out" in json.dumps(record)
    pids = [int(p) for p in (cube / "workspace" / "pids.txt").read_text().split()]
    deadline = time.monotonic() + 60
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running after the timeout: {[p for p in pids if alive(p)]}"
        time.sleep(0.1)


# -- time limits and retries (retry.py; the other runners: tests/integration/test_retry_real.py) --------------
def test_a_flaky_task_succeeds_on_its_second_attempt(ch: Charlie, tmp_path: Path) -> None:
    """`retries: 2` in the cube: the first attempt fails (exit 3), the second ch-run succeeds."""
    cube = probe_cube(ch, tmp_path)
    proc = ch.cuberun("run", "--mlcube", str(cube), "--task", "flaky", "--platform", "charliecloud", "--retry-delay=0.1")
    ws = cube / "workspace"
    record = retries.check_second_attempt(ws, proc, ws / "flaky" / "marker")
    assert record["limits"]["retries_source"] == "cube" and record["command"][: len(SANDBOX)] == SANDBOX


def test_each_attempt_over_its_time_limit_is_stopped(ch: Charlie, tmp_path: Path) -> None:
    """`--timeout 3 --retries 1`: both attempts time out, exit 124; the task and its grandchild (which
    ignores SIGINT and SIGTERM) of each attempt are gone, and no ch-run of the run is left."""
    cube = probe_cube(ch, tmp_path)
    proc = ch.cuberun("run", "--mlcube", str(cube), "--task", "sleep", "--platform", "charliecloud", "--timeout=3", "--retries=1",
                      "--retry-delay=0")
    retries.check_timed_out_twice(cube / "workspace", proc, 3)
    assert proc.stdout.count("started") == 2
    pids = [int(p) for p in (cube / "workspace" / "pids.txt").read_text().split()]
    assert len(pids) == 4 and len(set(pids)) == 4, pids  # task and grandchild of each attempt
    assert wait_until(lambda: not any(alive(p) for p in pids), 60), f"still running after the timeout: {[p for p in pids if alive(p)]}"
    assert not processes_mentioning(str(cube))
