"""Property: after a random edit to any file of a cube's folder, the next run re-runs exactly the
tasks that can depend on it, saying which file changed; after no edit (or one that leaves the
content as it was), nothing re-runs. On the local runner every task can depend on every file of
the code (not on ignored files, caches or the workspace); with docker `build_strategy: auto`
every task depends on the build context minus .dockerignore, and on nothing outside it.

Each example edits the same cube and runs it once through the real CLI, so the next example
starts from a cube that is up to date again (hence no shrinking: a failure is reported as it
happened). Examples are derandomized: the same edits every run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import CLI, write_tree

UP = "up to date: code, environment, inputs, parameters and command unchanged, outputs intact"
OPS = ("append", "same_size", "touch", "add_sibling", "none")
_counter = itertools.count()

LOCAL_TASK = """import os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[2:])
open(args['out'], 'w').write(sys.argv[1])
# padX
"""

LOCAL_CUBE = """name: prop
local: {command: python3 prog.py}
tasks:
  a:
    parameters: {outputs: {out: {type: file, default: a.txt}}}
  b:
    parameters: {inputs: {i: {type: file, default: a.txt}}, outputs: {out: {type: file, default: b.txt}}}
  c:
    parameters: {outputs: {out: {type: file, default: c.txt}}}
"""

LOCAL_FILES = ["prog.py", "lib/util.py", "lib/deep/more.py", "assets/table.csv", "README.md", "notes/todo.md", "build.log",
               "__pycache__/prog.cpython-311.pyc", ".venv/lib/site.py", "workspace/scratch.txt"]


def local_code(rel: str) -> bool:
    """Does a task on the local runner depend on this file of the cube folder?"""
    not_code = ("notes/",  # .gitignore: notes/
                "__pycache__/",  # Python's cache
                ".venv/",  # a virtualenv (it has a pyvenv.cfg)
                "workspace/")  # the workspace (no task reads these files)
    return not rel.startswith(not_code) and not rel.endswith(".log")  # .gitignore: *.log


def edit(root: Path, rel: str, op: str) -> str | None:
    """Apply `op` to root/rel; returns the changed member's description, or None if no content changed."""
    path = root / rel
    if op == "append":
        with open(path, "a") as fh:
            fh.write(f"# edit {next(_counter)}\n")
        return rel
    if op == "same_size":  # the last character before the final newline (every file ends with "# padX\n")
        data = bytearray(path.read_bytes())
        data[-2] = ord("A") if data[-2] != ord("A") else ord("B")
        path.write_bytes(bytes(data))
        return rel
    if op == "touch":
        st_ = path.stat()
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 7_000_000_000))
        return None
    if op == "add_sibling":
        new = path.parent / f"added{next(_counter)}.txt"
        new.write_text("new\n")
        return str(new.relative_to(root)) + " (added)"
    return None


def lines(stderr: str) -> list[str]:
    return [ln[len("cuberun: "):] for ln in stderr.splitlines() if ln.startswith(("cuberun: skipping", "cuberun: task '"))]


def check(run: Callable[[], subprocess.CompletedProcess[str]], tasks: list[str], relative_to: Path, root: Path, rel: str, op: str,
          is_code: Callable[[str], bool], extra: str = "") -> None:
    changed = edit(root, rel, op)
    got = run()
    assert got.returncode == 0, got.stderr
    if changed is not None and is_code(changed.split(" ")[0]):
        member = os.path.relpath(root / changed.split(" ")[0], relative_to) + changed[len(changed.split(" ")[0]):]
        for line, task in zip(lines(got.stderr), tasks, strict=True):
            assert line.startswith(f"task '{task}' will run: code changed: {member}"), (rel, op, got.stderr)
            assert extra in line, (rel, op, got.stderr)
    else:
        assert lines(got.stderr) == [f"skipping task '{t}': {UP}" for t in tasks], (rel, op, got.stderr)


@pytest.fixture
def local_cube(tmp_path: Path, cli: CLI) -> Path:
    files: dict[str, str | bytes] = {"mlcube.yaml": LOCAL_CUBE, ".gitignore": "notes/\n*.log\n", ".venv/pyvenv.cfg": "home = /usr/bin\n"}
    files.update({rel: f"content of {rel}\n# padX\n" for rel in LOCAL_FILES})
    files["prog.py"] = LOCAL_TASK
    write_tree(tmp_path, files)
    first = cli("run")
    assert first.returncode == 0, first.stderr
    return tmp_path


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.sampled_from(LOCAL_FILES), op=st.sampled_from(OPS))
def test_local_reruns_exactly_what_depends_on_an_edit(local_cube: Path, cli: CLI, rel: str, op: str) -> None:
    check(lambda: cli("run", cwd=local_cube), ["a", "b", "c"], local_cube, local_cube, rel, op, local_code)


# -- docker, build_strategy auto, against the real engine ----------------------------------------------
DOCKER_CUBE = """name: prop
docker:
  image: {image}
  build_context: app
  build_strategy: auto
tasks:
  a:
    parameters: {{outputs: {{out: {{type: file, default: a.txt}}}}}}
  b:
    parameters: {{inputs: {{i: {{type: file, default: a.txt}}}}, outputs: {{out: {{type: file, default: b.txt}}}}}}
"""

DOCKER_FILES = ["app/prog.py", "app/lib/util.py", "app/data.csv", "app/notes/todo.md", "README.md", "tools/helper.py", "workspace/scratch.txt"]


def in_image(rel: str) -> bool:
    """Is this file part of what the image is built from (the context app/, minus .dockerignore's notes)?"""
    return rel.startswith("app/") and not rel.startswith("app/notes/")


@pytest.fixture
def docker_cube(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    from tests.backends import client_env, require_backend

    details = require_backend("docker")
    env = client_env("docker")
    env.update(CUBERUN_SETTINGS=str(tmp_path / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp_path / "none.yaml"),
               CUBERUN_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    image = f"localhost/cuberun-prop-{uuid.uuid4().hex[:8]}/prop:0.1"
    root = tmp_path / "cube"
    files: dict[str, str | bytes] = {
        "mlcube.yaml": DOCKER_CUBE.format(image=image),
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /app\nENTRYPOINT [\"python3\", \"/app/prog.py\"]\n",
        "app/.dockerignore": "notes\n",
    }
    files.update({rel: f"content of {rel}\n# padX\n" for rel in DOCKER_FILES})
    files["app/prog.py"] = LOCAL_TASK
    write_tree(root, files)
    return root, env, str(details["base_image"])


@pytest.mark.docker
def test_docker_auto_reruns_exactly_what_depends_on_an_edit(docker_cube: tuple[Path, dict[str, str], str]) -> None:
    root, env, base = docker_cube

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", "run", f"--mlcube={root}", "--platform=docker", "--network=none",
                               "-Pdocker.build_network=host", f"-Pdocker.build_args.BASE_IMAGE={base}"],
                              env=env, capture_output=True, text=True, timeout=600, check=False)

    first = run()
    assert first.returncode == 0, first.stderr

    @settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.generate])  # no shrinking: examples share one cube
    @given(rel=st.sampled_from(DOCKER_FILES), op=st.sampled_from(OPS))
    def prop(rel: str, op: str) -> None:
        check(run, ["a", "b"], root / "app", root, rel, op, in_image, extra="image digest changed")

    try:
        prop()
    finally:
        tag = (root / "mlcube.yaml").read_text().split("image: ", 1)[1].split("\n", 1)[0]
        subprocess.run(["docker", "rmi", "-f", tag], env=env, capture_output=True, check=False, timeout=120)
