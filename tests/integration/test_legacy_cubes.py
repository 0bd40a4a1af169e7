"""Legacy MLBox cubes through the real CLI (`python -m cuberun`): the seed's BOX:TASK/PARAMSET
syntax, both legacy layouts on the local platform, `migrate` giving byte-identical outputs, and
(with a Docker engine) the legacy docker implementations on the docker platform."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import legacy_cubes as lc
from tests.conftest import CLI

Builder = Callable[[Path], Path]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# -- the acceptance criterion and the seed's syntax -------------------------------------------------
def test_run_box_task_paramset_on_local(cli: CLI, tmp_path: Path) -> None:
    """`cuberun run ./legacy/hello_world:hello/alice` works on the local platform (the default)."""
    box = lc.poc_hello_world(tmp_path / "legacy" / "hello_world")
    got = ok(cli("run", "./legacy/hello_world:hello/alice", cwd=tmp_path))
    assert read(box / "workspace" / "greetings" / "alice.txt") == "Hello, alice!\n"
    # the program checked its contract: --mlbox_task (argparse rejects a positional task) in <box>/implementation
    assert "hello done in implementation" in got.stdout  # task output (stdout and stderr merged)
    assert "legacy MLBox proof of concept cube (format mlbox-poc)" in got.stderr
    assert not (box / "mlcube.yaml").exists()  # converted in memory only


def test_paramset_then_overrides(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_hello_world(tmp_path / "box")
    ok(cli("run", "./box:hello/alice", "--name=names/bob.txt", cwd=tmp_path))  # an override beats the set
    assert read(box / "workspace" / "greetings" / "alice.txt") == "Hello, bob!\n"
    ok(cli("run", "--mlcube=./box:hello/alice", "name=names/alice.txt", cwd=tmp_path))  # as --mlcube too
    assert read(box / "workspace" / "greetings" / "alice.txt") == "Hello, alice!\n"


def test_default_paramset(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_hello_world(tmp_path / "box")
    ok(cli("run", "--mlcube=./box", "--task=hello", cwd=tmp_path))  # tasks/hello/default.yaml
    assert read(box / "workspace" / "greetings" / "world.txt") == "Hello, world!\n"
    ok(cli("run", "./box:goodbye", cwd=tmp_path))  # `:TASK` alone is TASK/default
    assert read(box / "workspace" / "farewells" / "world.txt") == "Goodbye, world! Earlier I said: Hello, world!\n"


def test_paramset_chain_runs_the_producer_with_the_same_bindings(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_hello_world(tmp_path / "box")
    got = ok(cli("run", "box:goodbye/alice", cwd=tmp_path))
    assert "running task 'hello'" in got.stderr  # greetings/alice.txt comes from hello
    assert read(box / "workspace" / "farewells" / "alice.txt") == "Goodbye, alice! Earlier I said: Hello, alice!\n"


def test_poc_mnist_chain_and_paramset(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_mnist(tmp_path / "mnist")
    ok(cli("run", f"--mlcube={box}", "--task=downloaddata,train"))
    ws = box / "workspace"
    assert read(ws / "log" / "downloaddata.log") == "mnist-box: downloaded 50 rows\n"
    assert read(ws / "log" / "train.log") == "mnist-box: trained on 50 rows\n"
    assert read(ws / "model" / "model.txt").endswith(" epochs=2\n")
    ok(cli("run", f"{box}:train/long"))
    assert read(ws / "model_long" / "model.txt").endswith(" epochs=5\n")


# -- config 1.0 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("root_file", ["mlcube.yaml", "mlbox.yaml"])
def test_v1_hello_world(cli: CLI, tmp_path: Path, root_file: str) -> None:
    box = lc.v1_hello_world(tmp_path / "hello", root_file=root_file)
    chats = box / "workspace" / "chats"
    got = ok(cli("run", "--mlcube=hello", "--task=hello", cwd=tmp_path))
    assert "legacy config 1.0 (MLCommons Box) cube (format 1.0)" in got.stderr
    assert read(chats / "chat_with_bob.txt") == "Hi, bob! Nice to meet you.\n"
    ok(cli("run", "hello:hello/alice", cwd=tmp_path))  # run/alice/hello.yaml
    ok(cli("run", "hello:bye/alice", cwd=tmp_path))
    assert read(chats / "chat_with_alice.txt") == "Hi, alice! Nice to meet you.\nBye, alice! It was great talking to you.\n"


def test_v1_mnist_chain(cli: CLI, tmp_path: Path) -> None:
    box = lc.v1_mnist(tmp_path / "mnist")
    ok(cli("run", f"--mlcube={box}", "--task=download,train"))
    ws = box / "workspace"
    assert read(ws / "logs" / "download.log") == "downloaded 40 rows\n"
    assert read(ws / "model" / "model.txt").endswith(" epochs=3\n")


# -- describe, migrate ------------------------------------------------------------------------------
def test_describe_says_the_format(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_mnist(tmp_path / "mnist")
    got = ok(cli("describe", f"--mlcube={box}"))
    assert "legacy MLBox 0.1 cube (format mlbox-0.1), converted to config 2.0 in memory" in got.stderr
    assert f"file:      {box / 'mlbox.yaml'}" in got.stdout
    data = json.loads(ok(cli("describe", f"--mlcube={box}", "--json")).stdout)
    assert data["format"] == "mlbox-0.1"
    assert data["tasks"]["train"]["entrypoint"] == "python mnist.py --mlbox_task=train"
    v1 = lc.v1_hello_world(tmp_path / "v1")
    assert json.loads(ok(cli("describe", f"--mlcube={v1}", "--json")).stdout)["format"] == "1.0"


CASES: list[tuple[str, Builder, list[list[str]]]] = [
    ("poc-hello", lc.poc_hello_world, [["{box}:hello/alice"], ["{box}:goodbye/alice"], ["--mlcube={box}", "--task=hello"]]),
    ("poc-mnist", lc.poc_mnist, [["--mlcube={box}", "--task=downloaddata,train"], ["{box}:train/long"]]),
    ("v1-hello", lc.v1_hello_world, [["--mlcube={box}", "--task=hello"], ["{box}:hello/alice"], ["{box}:bye/alice"]]),
    ("v1-mnist", lc.v1_mnist, [["--mlcube={box}", "--task=download,train"]]),
]


@pytest.mark.parametrize(("build", "runs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_migrated_cube_gives_the_same_outputs(cli: CLI, tmp_path: Path, build: Builder, runs: list[list[str]]) -> None:
    before = build(tmp_path / "before" / "box")
    after = build(tmp_path / "after" / "box")
    got = ok(cli("migrate", str(after)))
    v1 = (after / "mlcube.v2.yaml").exists()
    migrated = after / ("mlcube.v2.yaml" if v1 else "mlcube.yaml")
    assert got.stdout.startswith(f"wrote {migrated} (config 2.0) from the ")
    assert json.loads(ok(cli("describe", f"--mlcube={migrated}", "--json")).stdout)["format"] == "2.0"
    for argv in runs:
        ok(cli("run", *[a.format(box=before) for a in argv]))
        target = str(migrated) if v1 else str(after)  # a config-1.0 root stays mlcube.yaml; the v2 file is named explicitly
        ok(cli("run", *[a.format(box=target) for a in argv]))
    legacy_out, migrated_out = lc.outputs(before / "workspace"), lc.outputs(after / "workspace")
    assert legacy_out == migrated_out
    assert set(legacy_out) > set(lc.outputs(build(tmp_path / "fresh") / "workspace"))  # the runs did produce files


def test_migrate_rules_and_report(cli: CLI, tmp_path: Path) -> None:
    v1 = lc.v1_hello_world(tmp_path / "v1")
    original = read(v1 / "mlcube.yaml")
    got = ok(cli("migrate", str(v1)))
    assert read(v1 / "mlcube.yaml") == original  # the legacy root file is never replaced by default
    text = read(v1 / "mlcube.v2.yaml")
    assert text.startswith("# Config 2.0, converted by `cuberun migrate` from the config 1.0")
    assert "not carried over (2):" in got.stdout
    assert "platforms/ssh.yaml: ssh platforms live in the cuberun settings" in got.stdout
    assert "${HOME}/mlcube/hello.simg is not carried over" in got.stdout
    assert one_error(cli("migrate", str(v1))) == (
        f"cuberun: error: {v1}/mlcube.v2.yaml already exists. Hint: pass --force to replace it, or --output NAME for another file")
    ok(cli("migrate", str(v1), "--force"))
    assert "outside the cube's directory" in one_error(cli("migrate", str(v1), "--output", str(tmp_path / "x.yaml")))
    ok(cli("migrate", str(v1), "--output", "mlcube.yaml", "--force"))  # an explicit in-place conversion
    assert read(v1 / "mlcube.yaml") == text
    assert json.loads(ok(cli("describe", f"--mlcube={v1}", "--json")).stdout)["format"] == "2.0"
    assert "nothing to migrate" in one_error(cli("migrate", str(tmp_path / "v1" / "mlcube.yaml")))

    poc = lc.poc_hello_world(tmp_path / "poc", docker=True)
    dry = ok(cli("migrate", str(poc), "--dry-run"))
    assert not (poc / "mlcube.yaml").exists()
    assert "entrypoint: python3 /mlbox/hello_world.py --mlbox_task=hello" in dry.stdout
    assert "assumed, check these (2):" in dry.stderr
    ok(cli("migrate", str(poc)))
    assert "already exists" in one_error(cli("migrate", str(poc)))
    ok(cli("run", f"{poc}:hello/alice", "--dry-run", "--platform=docker"))  # the migrated file still takes param sets


def test_errors_in_legacy_files_are_one_line_each(cli: CLI, tmp_path: Path) -> None:
    box = lc.poc_hello_world(tmp_path / "box")
    (box / "tasks" / "hello" / "broken.yaml").write_text("name: [names/a.txt\n")
    line = one_error(cli("run", "box:hello/broken", cwd=tmp_path))
    assert line.startswith(f"cuberun: error: {box}/tasks/hello/broken.yaml:2:1: invalid YAML: ")
    line = one_error(cli("run", "box:hello/nobody", cwd=tmp_path))
    assert line == (f"cuberun: error: no parameter set 'nobody' for task 'hello' in {box} "
                    "(looked for tasks/hello/nobody.yaml or run/nobody/hello.yaml). Hint: expected one of 'alice', 'broken', 'default'")
    (box / "tasks" / "hello" / "typo.yaml").write_text("name: names/alice.txt\ngreetng: x.txt\n")
    assert one_error(cli("run", "box:hello/typo", cwd=tmp_path)) == (
        f"cuberun: error: {box}/tasks/hello/typo.yaml:2:1: greetng: task 'hello' has no parameter 'greetng'. Hint: did you mean 'greeting'?")
    assert one_error(cli("run", "box:helo", cwd=tmp_path)).startswith("cuberun: error: unknown task 'helo' in ")
    assert "the task is given twice" in one_error(cli("run", "box:hello", "--task=goodbye", cwd=tmp_path))


# -- docker --------------------------------------------------------------------------------------------
SESSION = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    try:
        from tests.backends import client_env, require_backend
    except ModuleNotFoundError:  # pragma: no cover
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from backends import client_env, require_backend  # type: ignore[no-redef]
    details = require_backend("docker")
    tmp = tmp_path_factory.mktemp("legacy-docker")
    env = client_env("docker")
    env.update(CUBERUN_SETTINGS=str(tmp / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp / "mlcube.yaml"))
    images: list[str] = []
    yield {"env": env, "base": str(details["base_image"]), "images": images}
    for image in images:
        subprocess.run(["docker", "rmi", "-f", image], env=env, capture_output=True, check=False, timeout=120)


def cuberun(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cuberun", *args], env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.docker
def test_legacy_docker_implementations_on_docker(docker_env: dict[str, Any], tmp_path: Path) -> None:
    """The PoC docker implementation (image ENTRYPOINT + --mlbox_task) and a config-1.0 cube
    (build/Dockerfile, positional task) run in containers, without network."""
    env, base = docker_env["env"], docker_env["base"]
    poc_image = f"localhost/cuberun-it-{SESSION}/legacy-poc:0.1"
    v1_image = f"localhost/cuberun-it-{SESSION}/legacy-v1:0.1"
    docker_env["images"] += [poc_image, v1_image]
    poc = lc.poc_hello_world(tmp_path / "poc", docker=True, image=poc_image, base_image=base)
    ok(cuberun(env, "run", f"{poc}:goodbye/alice", "--platform=docker", "--network", "none"))  # builds, runs hello, then goodbye
    assert read(poc / "workspace" / "farewells" / "alice.txt") == "Goodbye, alice! Earlier I said: Hello, alice!\n"
    record = json.loads(sorted((poc / "workspace" / ".cuberun" / "runs").glob("*goodbye*/record.json"))[-1].read_text())
    argv = record["command"]
    assert "--entrypoint=python3" in argv and poc_image in argv
    assert argv[argv.index(poc_image) + 1 :][:2] == ["/mlbox/hello_world.py", "--mlbox_task=goodbye"]  # no positional task

    v1 = lc.v1_hello_world(tmp_path / "v1", image=v1_image, base_image=base)
    ok(cuberun(env, "run", f"{v1}:hello/alice", "--platform=docker", "--network", "none"))
    ok(cuberun(env, "run", f"--mlcube={v1}", "--task=bye", "--platform=docker", "--network", "none"))
    chats = v1 / "workspace" / "chats"
    assert read(chats / "chat_with_alice.txt") == "Hi, alice! Nice to meet you.\n"
    assert read(chats / "chat_with_bob.txt") == "Bye, bob! It was great talking to you.\n"
