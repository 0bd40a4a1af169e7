"""What `cuberun run` imports on the docker path (issue 13: its start-up is overhead on every task).

A real run of the hello_world example on the docker platform, in a subprocess, with the engine
executable set to `true` (`docker.docker: "true"`): every `true image inspect` / `true run ...`
succeeds at once, so the whole run path (load, plan, up-to-date check, the run, records, summary)
executes without an engine. What the run really does on docker is tested in
tests/integration/test_docker_runner.py (test_docker_run_cost); here only which modules the
process loaded, counted after the second run (the first one fills the parse cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
EXAMPLES = SRC.parent / "examples"

# never on the plain docker run path: each costs more than its use there would justify
HEAVY = {
    "typing",  # annotations only (a local TYPE_CHECKING = False block in each module of the path)
    "hashlib", "_hashlib",  # OpenSSL: small digests use the built-in sha256 (cuberun.digests)
    "copy", "weakref",  # plain data is copied by yamlio.copy_data
    "dataclasses", "inspect", "ast", "dis", "tokenize",  # cuberun.valueclass stands in for dataclasses
    "click", "yaml", "ruamel", "rich",  # the plain `run` parser; the parse cache holds the cube file
    "email", "http", "http.client", "urllib.request", "socket", "ssl", "shutil", "tempfile", "logging", "asyncio",
    "uuid", "datetime", "base64", "platform", "importlib.metadata", "struct",
    "cuberun.codeid", "cuberun.spec.container_config", "cuberun.imagefetch", "cuberun.runners.imagefile",
    "cuberun.ignorefiles", "cuberun.cli.commands", "cuberun.describe", "cuberun.spec.legacy",
}
CUBERUN_MODULES = 50  # cuberun's own modules on this path (49 when this test was written, 53 before)

DUMP = """
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w", encoding="utf-8").write("\\n".join(sorted(sys.modules))))
from cuberun.cli.main import main
main(sys.argv[1:])
"""


def _run(cube: Path, dump: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [f"--mlcube={cube}", "--task=hello", "--platform=docker", "--network=none", *extra]
    return subprocess.run([sys.executable, "-c", DUMP, str(dump), "run", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_docker_run_path_imports_no_heavy_module(tmp_path: Path) -> None:
    cube = tmp_path / "hello_world"
    shutil.copytree(EXAMPLES / "hello_world", cube, ignore=shutil.ignore_patterns(".cuberun", "__pycache__"))
    text = (cube / "mlcube.yaml").read_text()
    assert "\ndocker:\n" in text
    (cube / "mlcube.yaml").write_text(text.replace("\ndocker:\n", '\ndocker:\n  docker: "true"\n', 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUBERUN_", "DOCKER_"))}
    env.update(CUBERUN_SETTINGS=str(tmp_path / "settings.yaml"), CUBERUN_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]))
    first = _run(cube, tmp_path / "first.txt", env)
    assert first.returncode == 0, first.stderr
    second = _run(cube, tmp_path / "second.txt", env, "--force")
    assert second.returncode == 0, second.stderr
    assert "running task 'hello' on docker" in second.stderr
    modules = set((tmp_path / "second.txt").read_text(encoding="utf-8").split())
    assert "cuberun.runners.docker.runner" in modules and "subprocess" in modules  # it did run through the docker runner
    assert sorted(modules & HEAVY) == []
    own = sorted(m for m in modules if m == "cuberun" or m.startswith("cuberun."))
    assert len(own) <= CUBERUN_MODULES, own
