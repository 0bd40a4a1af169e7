"""What a result depends on, through the real CLI on the local runner: every stale-result case
of issue 11 re-runs and says why, and only then; sweeps through a pipeline; special files in
inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CLI, write_tree

TASK = """import os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[2:])
out = args['out']
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, 'w') as fh:
    fh.write(sys.argv[1] + ' ' + os.environ.get('SEED', '-') + ' ' + sys.executable + '\\n')
"""

CUBE = """name: ident
local: {command: python3 prog.py, env_vars: {SEED: "1"}}
tasks:
  a:
    parameters: {outputs: {out: {type: file, default: a.txt}}}
  b:
    parameters: {inputs: {i: {type: file, default: a.txt}}, outputs: {out: {type: file, default: b.txt}}}
"""

UP = "up to date: code, environment, inputs, parameters and command unchanged, outputs intact"


def notes(stderr: str) -> list[str]:
    return [line[len("cuberun: "):] for line in stderr.splitlines() if line.startswith(("cuberun: skipping", "cuberun: task '"))]


def ran(cli: CLI, *args: str) -> list[str]:
    got = cli("run", *args)
    assert got.returncode == 0, got.stderr
    return notes(got.stderr)


def cube(tmp_path: Path, text: str = CUBE) -> Path:
    return write_tree(tmp_path, {"mlcube.yaml": text, "prog.py": TASK, "lib/helper.py": "X = 1\n"})


def skipped(*tasks: str) -> list[str]:
    return [f"skipping task '{t}': {UP}" for t in tasks]


def test_a_code_edit_reruns_every_task_and_names_the_file(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path)
    assert ran(cli) == ["task 'a' will run: no previous successful run", "task 'b' will run: no previous successful run"]
    assert ran(cli) == skipped("a", "b")
    with open(tmp_path / "prog.py", "a") as fh:
        fh.write("# edited\n")
    assert ran(cli) == ["task 'a' will run: code changed: prog.py", "task 'b' will run: code changed: prog.py"]
    assert ran(cli) == skipped("a", "b")
    (tmp_path / "lib" / "new.py").write_text("Y = 2\n")
    (tmp_path / "lib" / "helper.py").unlink()
    assert ran(cli, "--task=a") == ["task 'a' will run: code changed: lib/new.py (added), lib/helper.py (removed)"]
    # what is not code: the workspace, caches, ignored files
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "prog.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "workspace" / "notes.txt").write_text("scratch\n")
    (tmp_path / ".gitignore").write_text("scratch/\n")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "big.log").write_text("log\n")
    assert ran(cli, "--task=a") == skipped("a")
    assert ran(cli) == [*skipped("a"), "task 'b' will run: code changed: lib/new.py (added), lib/helper.py (removed)"]


def test_env_vars_in_the_cube_and_with_P_rerun(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path)
    ran(cli)
    (tmp_path / "mlcube.yaml").write_text(CUBE.replace('SEED: "1"', 'SEED: "2"'))
    assert ran(cli, "--task=a") == ["task 'a' will run: env var SEED changed"]
    assert (tmp_path / "workspace" / "a.txt").read_text().startswith("a 2 ")
    assert ran(cli, "--task=a", "-Plocal.env_vars.SEED=3") == ["task 'a' will run: env var SEED changed"]
    assert ran(cli, "--task=a", "-Plocal.env_vars.SEED=3") == skipped("a")
    assert ran(cli, "--task=a", "-Plocal.env_vars.OTHER=x", "-Plocal.env_vars.SEED=3") == ["task 'a' will run: env var OTHER is new"]
    assert ran(cli, "--task=a", "-Plocal.env_vars.API_TOKEN=one") == [
        "task 'a' will run: env var SEED changed; env var API_TOKEN is new; env var OTHER removed"]
    state = (tmp_path / "workspace" / ".cuberun" / "state" / "a.json").read_text()
    assert "one" not in json.loads(state)["identity"]["runner"]["env"].get("API_TOKEN", "")  # a keyed digest, never the value
    assert ran(cli, "--task=a", "-Plocal.env_vars.API_TOKEN=two") == ["task 'a' will run: env var API_TOKEN changed"]


def test_working_directory_and_local_python_without_requirements(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path)
    alt = tmp_path / "alt" / "bin" / "python3"
    alt.parent.mkdir(parents=True)
    alt.symlink_to(sys.executable)
    assert ran(cli, "--task=a", f"-Plocal.python={alt}")[0] == "task 'a' will run: no previous successful run"
    line = (tmp_path / "workspace" / "a.txt").read_text().split()
    assert os.path.realpath(line[2]) == os.path.realpath(alt), "local.python runs the task although the cube has no requirements"
    state = json.loads((tmp_path / "workspace" / ".cuberun" / "state" / "a.json").read_text())
    program = state["identity"]["runner"]["program"]
    assert program["real"] == os.path.realpath(alt) and program["version"] == sys.version.split()[0] and isinstance(program["packages"], dict)
    assert ran(cli, "--task=a", f"-Plocal.python={alt}") == skipped("a")
    (tmp_path / "sub").mkdir()
    assert ran(cli, "--task=a", f"-Plocal.python={alt}", "-Plocal.workdir=sub", "-Plocal.command=python3 ../prog.py") == [
        f"task 'a' will run: command changed; working directory changed: {tmp_path} -> {tmp_path / 'sub'}"]
    other = shutil.which("python3", path="/usr/bin:/bin")
    if other and os.path.realpath(other) != os.path.realpath(sys.executable):
        got = ran(cli, "--task=a", f"-Plocal.python={other}", "-Plocal.workdir=sub", "-Plocal.command=python3 ../prog.py")
        reasons = got[0].split("; ")
        assert reasons[0] == "task 'a' will run: command changed"
        version = subprocess.run([other, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True).stdout.strip()
        if version != sys.version.split()[0]:
            assert reasons[1].startswith("interpreter changed: ") and reasons[1].endswith(f"({version})"), got


def wheel(where: Path, version: str) -> Path:
    """A minimal pure-Python wheel of the project `cuberunprobe` (pip installs it offline)."""
    path = where / f"cuberunprobe-{version}-py3-none-any.whl"
    info = f"cuberunprobe-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cuberunprobe.py", f"VERSION = {version!r}\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: cuberunprobe\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: cuberun-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", f"cuberunprobe.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


def test_a_nested_requirements_file_rebuilds_the_env_also_with_force(cli: CLI, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels, "1.0")
    wheel(wheels, "2.0")
    write_tree(tmp_path, {
        "mlcube.yaml": "name: req\nlocal: {command: python3 prog.py, requirements: requirements.txt}\n"
                       "tasks:\n  t:\n    parameters: {outputs: {out: {type: file, default: v.txt}}}\n",
        "prog.py": "import sys, cuberunprobe\nopen(sys.argv[-1].split('=', 1)[1], 'w').write(cuberunprobe.VERSION)\n",
        "requirements.txt": f"--no-index\n--find-links {wheels}\n-r reqs/base.txt\n",
        "reqs/base.txt": "cuberunprobe==1.0\n",
    })
    assert ran(cli)[0] == "task 't' will run: no previous successful run"
    assert (tmp_path / "workspace" / "v.txt").read_text() == "1.0"
    assert ran(cli) == skipped("t")
    (tmp_path / "reqs" / "base.txt").write_text("cuberunprobe==2.0\n")
    forced = cli("run", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "creating Python environment" in forced.stderr
    assert (tmp_path / "workspace" / "v.txt").read_text() == "2.0"
    (tmp_path / "reqs" / "base.txt").write_text("cuberunprobe==1.0\n")  # the first env again (kept in the cache)
    assert ran(cli) == ["task 't' will run: code changed: reqs/base.txt; package set changed: cuberunprobe 2.0 -> 1.0"]
    assert (tmp_path / "workspace" / "v.txt").read_text() == "1.0"


PIPELINE = """name: pipe
local: {command: python3 t.py, env: current}
tasks:
  prep:
    parameters: {inputs: {cfg: prep.yaml}, outputs: {data: data/}}
  train:
    parameters: {inputs: {data: data/, cfg: train.yaml}, outputs: {model: model/}}
  evaluate:
    parameters: {inputs: {data: data/, model: model/}, outputs: {report: {type: file, default: report.txt}}}
"""

PIPELINE_TASK = """import os, sys
task = sys.argv[1]
args = dict(a[2:].split('=', 1) for a in sys.argv[2:])
def value(path, key):
    for line in open(path):
        k, _, v = line.partition(':')
        if k.strip() == key:
            return v.strip()
if task == 'prep':
    os.makedirs(args['data'], exist_ok=True)
    open(os.path.join(args['data'], 'n.txt'), 'w').write(value(args['cfg'], 'n'))
elif task == 'train':
    os.makedirs(args['model'], exist_ok=True)
    n = open(os.path.join(args['data'], 'n.txt')).read()
    open(os.path.join(args['model'], 'm.txt'), 'w').write(f"lr={value(args['cfg'], 'lr')} n={n}")
else:
    open(args['report'], 'w').write('evaluated ' + open(os.path.join(args['model'], 'm.txt')).read())
"""


def test_sweep_over_a_pipeline_trains_and_evaluates_each_variant(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": PIPELINE, "t.py": PIPELINE_TASK, "workspace/prep.yaml": "n: 3\n", "workspace/train.yaml": "lr: 1\n"})
    ws = tmp_path / "workspace"
    # a sweep of the upstream task first: evaluate's variants must then read these models
    assert cli("run", "--task=train", "--sweep", "lr=0.01,0.5").returncode == 0
    got = ran(cli, "--task=evaluate", "--sweep", "lr=0.01,0.5")
    assert got == [
        f"skipping task 'prep': {UP}",
        f"skipping task 'train [lr=0.01]': {UP}",
        "task 'evaluate [lr=0.01]' will run: no previous successful run",
        f"skipping task 'train [lr=0.5]': {UP}",
        "task 'evaluate [lr=0.5]' will run: no previous successful run",
    ]
    assert (ws / "sweeps" / "lr=0.01" / "report.txt").read_text() == "evaluated lr=0.01 n=3"
    assert (ws / "sweeps" / "lr=0.5" / "report.txt").read_text() == "evaluated lr=0.5 n=3"
    assert not (ws / "report.txt").exists() and not (ws / "model").exists()
    records = [json.loads(p.read_text()) for p in (ws / ".cuberun" / "runs").glob("*/record.json")]
    evaluate = {r["sweep"]["lr"]: r for r in records if r["task"] == "evaluate"}
    assert evaluate["0.5"]["parameters"]["model"]["path"] == str(ws / "sweeps" / "lr=0.5" / "model")
    # a key read by the first task: every task runs per variant, on that variant's data
    got = cli("run", "--task=evaluate", "--sweep", "n=1,2", "--jobs", "2")
    assert got.returncode == 0, got.stderr
    assert (ws / "sweeps" / "n=2" / "report.txt").read_text() == "evaluated lr=1 n=2"
    assert (ws / "sweeps" / "n=1" / "data" / "n.txt").read_text() == "1"
    # a key no task of the run reads
    bad = cli("run", "--task=evaluate", "--sweep", "epochs=1,2")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("cuberun: error: --sweep 'epochs': no task reads it: no YAML input of the tasks of this run "
                                  "(prep, train, evaluate) has the key 'epochs' (prep:cfg, train:cfg). Hint: name a key of a parameter "
                                  "file (file:key.path) or a config key such as local.env_vars.X")
    other = cli("run", "--task=evaluate", "--sweep", "docker.env_args.SEED=1,2", "--dry-run")
    assert other.returncode == 2 and "the platform's runner reads 'local', not the 'docker' section" in other.stderr


@pytest.mark.parametrize("kind", ["fifo", "socket", "devzero-link"])
def test_special_files_in_an_input_are_named_never_read(cli: CLI, tmp_path: Path, kind: str) -> None:
    import socket

    write_tree(tmp_path, {"mlcube.yaml": "name: sp\nlocal: {command: python3 t.py, env: current}\ntasks:\n  t:\n"
                                         "    parameters: {inputs: {data: data/}, outputs: {out: {type: file, default: o.txt}}}\n",
                          "t.py": "import sys\nopen(sys.argv[-1].split('=', 1)[1], 'w').write('ran')\n",
                          "workspace/data/ok.txt": "fine\n"})
    special = tmp_path / "workspace" / "data" / "special"
    held = None
    if kind == "fifo":
        os.mkfifo(special)
        what = "is a FIFO"
    elif kind == "socket":
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.bind(str(special))
        what = "is a socket"
    else:
        special.symlink_to("/dev/zero")
        what = "(a link to /dev/zero) is a character device"
    try:
        got = cli("run", timeout=60)
    finally:
        if held is not None:
            held.close()
    assert got.returncode == 2
    assert got.stderr.strip() == (f"cuberun: error: task 't', input 'data': {special} {what}, not a regular file: cuberun reads and "
                                  "fingerprints only regular files. Hint: move it out of the input (or point the parameter elsewhere)")
    assert not (tmp_path / "workspace" / "o.txt").exists()


def test_explain_says_what_would_run_and_runs_nothing(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path)
    assert cli("run", "--explain").stdout.splitlines() == ["task 'a' would run: no previous successful run",
                                                          "task 'b' would run: no previous successful run"]
    assert not (tmp_path / "workspace" / ".cuberun" / "runs").exists()
    ran(cli)
    with open(tmp_path / "prog.py", "a") as fh:
        fh.write("# edited\n")
    got = cli("run", "--explain", "--task=a")
    assert got.returncode == 0 and got.stdout.splitlines() == ["task 'a' would run: code changed: prog.py"]
    report = json.loads(cli("run", "--explain", "--json", "-Plocal.env_vars.SEED=1").stdout)
    assert [(r["task"], r["run"]) for r in report] == [("a", True), ("b", True)]
    assert report[1]["reasons"] == ["code changed: prog.py"] and report[0]["identity"]["runner"]["env"] == {"SEED": "1"}
    assert len(list((tmp_path / "workspace" / ".cuberun" / "runs").iterdir())) == 2


def test_a_large_code_folder_is_walked_ahead_and_still_names_the_change(cli: CLI, tmp_path: Path) -> None:
    """From 1,000 files on, the walk runs in a forked child during start-up: the same answers."""
    cube(tmp_path)
    for i in range(1100):
        path = tmp_path / "vendor" / f"p{i % 10}" / f"m{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"X = {i}\n")
    ran(cli)
    assert ran(cli) == skipped("a", "b")  # the second run finds the stat record of the first: walked ahead
    (tmp_path / "vendor" / "p3" / "m13.py").write_text("X = -13\n")
    assert ran(cli, "--task=a") == ["task 'a' will run: code changed: vendor/p3/m13.py"]
    (tmp_path / "vendor" / "p3" / "new.py").write_text("Y = 1\n")
    (tmp_path / "workspace" / "ignored.txt").write_text("not code\n")
    assert ran(cli, "--task=a") == ["task 'a' will run: code changed: vendor/p3/new.py (added)"]
    assert ran(cli, "--task=a") == skipped("a")
