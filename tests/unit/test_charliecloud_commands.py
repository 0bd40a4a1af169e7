"""Golden tests of the charliecloud runner's command lines, its safe tar extraction, and its
configure/run logic against fake `docker` and `ch-run` executables (no real backend needed;
tests/integration/test_charliecloud_runner.py runs the real thing)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import BackendError, RunnerUnavailable, UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.charliecloud import CharliecloudRunner, sandbox
from cuberun.runners.container import PROXY_VARS
from cuberun.runners.rootfs import UnsafeArchive, rmtree, safe_extract
from cuberun.spec.load import load_cube

HELLO = """
name: hello_world
docker:
  image: cuberun/hello_world:0.1
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
"""

HELLO_DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY hello_world.py /workspace/hello_world.py
WORKDIR /workspace
ENTRYPOINT ["python3", "/workspace/hello_world.py"]
"""

IMAGE_CONFIG = {
    "Entrypoint": ["python3", "/app/main.py"],
    "Cmd": ["--help"],
    "WorkingDir": "/app",
    "Env": ["PATH=/opt/venv/bin:/usr/bin:/bin", "LANG=C.UTF-8", "MODE=prod"],
    "User": "",
}

# `image inspect [--format F] IMAGE`: the image exists when its name is in $FAKE_IMAGES; the
# full JSON is $FAKE_JSON (Id 1111..., the config above). Every call is logged.
FAKE_DOCKER = r"""#!/bin/sh
{ for a in "$@"; do printf '%s\n' "$a"; done; echo; } >> "$FAKE_LOG"
for last; do :; done
if [ "$1" = image ] && [ "$2" = inspect ]; then
  for img in $FAKE_IMAGES; do
    if [ "$img" = "$last" ]; then
      if [ "$3" = "--format" ]; then echo '{}'; else printf '%s\n' "$FAKE_JSON"; fi
      exit 0
    fi
  done
  echo "Error: No such image: $last" >&2; exit 1
fi
exit 0
"""

# plays ch-run: prints $FAKE_CH_ERROR as ch-run's own error line, or exits with $FAKE_EXIT
FAKE_CH_RUN = r"""#!/bin/sh
{ for a in "$@"; do printf '%s\n' "$a"; done; echo "USER=$USER"; echo; } >> "$FAKE_LOG"
if [ -n "$FAKE_CH_ERROR" ]; then echo "ch-run[4242]: error: $FAKE_CH_ERROR" >&2; exit 1; fi
echo "task says hi"
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    monkeypatch.setenv("USER", "alice")
    for var in ("FAKE_IMAGES", "FAKE_CH_ERROR", "FAKE_EXIT", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    yield bin_dir


def install(bin_dir: Path, name: str, script: str) -> Path:
    path = bin_dir / name
    path.write_text(script)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_docker(_isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = [{"Id": "sha256:" + "1" * 64, "Created": "2026-01-01T00:00:00Z", "Config": IMAGE_CONFIG}]
    monkeypatch.setenv("FAKE_JSON", json.dumps(data))
    return install(_isolated, "docker", FAKE_DOCKER)


@pytest.fixture
def fake_ch_run(_isolated: Path) -> Path:
    return install(_isolated, "ch-run", FAKE_CH_RUN)


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "fake.log"
    return [b.split("\n") for b in log.read_text().split("\n\n") if b.strip()] if log.exists() else []


def make_cube(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text))
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def runner_for(cube_dir: Path, *params: str, options: RunOptions | None = None, workspace: Path | None = None) -> CharliecloudRunner:
    cube = load_cube(cube_dir, workspace=workspace, overrides=params)
    runner = make_runner(cube, "charliecloud", options or RunOptions(), params)
    assert isinstance(runner, CharliecloudRunner)
    return runner


def run_argv(runner: CharliecloudRunner, task: str) -> list[str]:
    steps = runner.run_steps(resolve_task(runner.cube, task))
    assert len(steps) == 1 and steps[0].purpose == "run"
    return list(steps[0].argv)


SANDBOX = [sys.executable, "-I", "-S", str(Path(sandbox.__file__))]  # ch-run 0.31 has no isolation of its own


def box(*read_only: str, net: bool = True, writable: tuple[str, ...] = ()) -> list[str]:
    """The sandbox prefix: the network off (`--net`), each read-only input bound read-only, and an
    output inside one bound writable again."""
    argv = [*SANDBOX, *(["--net"] if net else [])]
    for path in read_only:
        argv += ["--ro", path]
    for path in writable:
        argv += ["--rw", path]
    return [*argv, "--"]
BASE_ENV = ["--set-env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--set-env=HOME=/tmp", "--set-env=USER=alice"]


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    return make_cube(tmp_path / "hello_world", HELLO, {"workspace/names/alice.txt": "Alice\n", "Dockerfile": HELLO_DOCKERFILE,
                                                       "hello_world.py": "print('hi')\n"})


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images" / "hello"
    (root / "workspace").mkdir(parents=True)
    return root


def stored_image(runner: CharliecloudRunner, image_id: str = "sha256:" + "1" * 64, config: dict[str, Any] | None = None) -> Path:
    """Pretend a conversion happened: rootfs/ plus image.json in the runner's store."""
    store = runner.store
    (store / "rootfs").mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "image": runner.image_ref, "id": image_id, "config": config or IMAGE_CONFIG}
    (store / "image.json").write_text(json.dumps(meta))
    return store / "rootfs"


# -- run command lines -------------------------------------------------------------------------------
def test_hello_world_with_an_image_dir(hello: Path, image_dir: Path) -> None:
    """A directory image without metadata: ENTRYPOINT and WORKDIR come from the Dockerfile."""
    ws = hello / "workspace"
    runner = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    assert run_argv(runner, "hello") == [
        *box(f"{ws}/names"), "ch-run", "--unset-env=*", "--env-no-expand", *BASE_ENV, "--private-tmp", "--cd=/workspace",
        "-b", f"{ws}/names:/mlcube_io0", "-b", f"{ws}/chats:/mlcube_io1",
        str(image_dir), "--", "python3", "/workspace/hello_world.py",
        "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]
    assert runner.configure_steps() == []


def test_converted_image_uses_the_stored_config(hello: Path) -> None:
    runner = runner_for(hello)
    rootfs = stored_image(runner)
    assert rootfs == runner.rootfs and rootfs.parent.parent == Path(os.environ["CUBERUN_CACHE_DIR"]) / "charliecloud"
    ws = hello / "workspace"
    assert run_argv(runner, "hello") == [
        *box(f"{ws}/names"), "ch-run", "--unset-env=*", "--env-no-expand",
        "--set-env=PATH=/opt/venv/bin:/usr/bin:/bin", "--set-env=LANG=C.UTF-8", "--set-env=MODE=prod",
        "--set-env=HOME=/tmp", "--set-env=USER=alice", "--private-tmp", "--cd=/app",
        "-b", f"{ws}/names:/mlcube_io0", "-b", f"{ws}/chats:/mlcube_io1",
        str(rootfs), "--", "python3", "/app/main.py",  # the arguments replace CMD, as with docker run
        "hello", "--name=/mlcube_io0/alice.txt", "--chat=/mlcube_io1/chat_with_alice.txt",
    ]


ENTRY_CUBE = """
name: gs
docker: {image: example/gs:1}
charliecloud: {image_dir: /images/gs}
tasks:
  download:
    entrypoint: python 01_download.py --fast
    parameters:
      inputs: {parameters_file: parameters.yaml}
      outputs: {data_dir: data/}
  check:
    entrypoint: ./check.sh
    parameters:
      outputs: {report: {type: file, default: out/report.txt}}
  bare:
    parameters:
      outputs: {out: out/}
"""


def test_task_entrypoints_replace_entrypoint_and_drop_the_task_name(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "gs", ENTRY_CUBE, {"workspace/parameters.yaml": "{}"})
    ws = cube / "workspace"
    runner = runner_for(cube)
    head = ["ch-run", "--unset-env=*", "--env-no-expand", *BASE_ENV, "--private-tmp", "--cd=/"]
    assert run_argv(runner, "download") == [
        *box(str(ws), writable=(f"{ws}/data",)), *head, "-b", f"{ws}:/mlcube_io0", "-b", f"{ws}/data:/mlcube_io1", "/images/gs", "--",
        "python", "01_download.py", "--fast", "--parameters_file=/mlcube_io0/parameters.yaml", "--data_dir=/mlcube_io1",
    ]
    # a single-token entrypoint keeps its parameters (the reference's docker runner drops them)
    assert run_argv(runner, "check") == [*box(), *head, "-b", f"{ws}/out:/mlcube_io0", "/images/gs", "--", "./check.sh", "--report=/mlcube_io0/report.txt"]
    # no ENTRYPOINT anywhere: like `docker run IMAGE bare ...`, the task name is the command
    assert run_argv(runner, "bare") == [*box(), *head, "-b", f"{ws}/out:/mlcube_io0", "/images/gs", "--", "bare", "--out=/mlcube_io0"]
    # the config can name the image's entrypoint and working directory
    configured = runner_for(cube, "charliecloud.entrypoint=python3 /srv/app.py", "charliecloud.workdir=/srv")
    argv = run_argv(configured, "bare")
    assert "--cd=/srv" in argv and argv[len(argv) - argv[::-1].index("--") :] == ["python3", "/srv/app.py", "bare", "--out=/mlcube_io0"]


@pytest.mark.parametrize(
    ("gpus", "count", "expected"),
    [
        (None, 0, None),
        ("0", 0, ""),  # hide the host's GPUs (ch-run shares /dev)
        ("all", 0, None),
        ("2", 0, "0,1"),
        ("device=0,3", 0, "0,3"),
        (None, 1, "0"),
        ("0", 2, ""),
    ],
)
def test_gpus(tmp_path: Path, gpus: str | None, count: int, expected: str | None) -> None:
    cube = make_cube(tmp_path / "g", f"""
        name: g
        platform: {{accelerator_count: {count}}}
        charliecloud: {{image_dir: /images/g, entrypoint: run}}
        tasks: {{t: {{parameters: {{outputs: {{out: out/}}}}}}}}
    """)
    argv = run_argv(runner_for(cube, options=RunOptions(gpus=gpus)), "t")
    found = [a for a in argv if a.startswith("--set-env=CUDA_VISIBLE_DEVICES=")]
    assert found == ([] if expected is None else [f"--set-env=CUDA_VISIBLE_DEVICES={expected}"])


def test_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    cube = make_cube(tmp_path / "o", """
        name: o
        charliecloud:
          image_dir: /images/o
          entrypoint: [run, me]
          env_vars: {A: "x y", B: $literal}
          run_args: --join -v
        tasks: {t: {parameters: {outputs: {out: out/}}}}
    """)
    argv = run_argv(runner_for(cube, options=RunOptions(extra_env={"C": "3"})), "t")
    assert argv[:17] == [
        *box(), "ch-run", "--unset-env=*", "--env-no-expand", *BASE_ENV, "--set-env=https_proxy=http://proxy:3128",
        "--set-env=A=x y", "--set-env=B=$literal", "--set-env=C=3", "--private-tmp",
    ]
    assert argv[17:] == ["--cd=/", "-b", f"{cube}/workspace/out:/mlcube_io0", "--join", "-v", "/images/o", "--", "run", "me", "t", "--out=/mlcube_io0"]
    loose = run_argv(runner_for(cube, "charliecloud.clean_env=false", "charliecloud.private_tmp=false", "charliecloud.write=true"), "t")
    assert loose[:10] == [*box(), "ch-run", "--env-no-expand", "--set-env=HOME=/tmp", "--set-env=USER=alice"]
    assert "--write" in loose and "--private-tmp" not in loose and "--unset-env=*" not in loose



def test_secret_values_are_read_from_stdin(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "s", """
        name: s
        charliecloud:
          image_dir: /images/s
          entrypoint: [run]
          env_vars: {A: "1", API_TOKEN: "s3 cr'et"}
        tasks: {t: {parameters: {outputs: {out: out/}}}}
    """)
    runner = runner_for(cube)
    step = runner.run_steps(resolve_task(runner.cube, "t"))[0]
    assert "s3 cr" not in " ".join(step.argv) and "s3 cr" not in step.display()
    assert "--set-env=A=1" in step.argv and "--set-env=/dev/stdin" in step.argv
    assert step.env == {"API_TOKEN": "s3 cr'et"}
    assert runner.client_stdin(step.env) == b"API_TOKEN='s3 cr'et'\n"
    with pytest.raises(UsageError, match="line break"):
        runner.client_stdin({"API_TOKEN": "a\nb"})

def test_user_comes_from_the_password_database_when_unset(hello: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    monkeypatch.delenv("USER")
    monkeypatch.delenv("LOGNAME", raising=False)
    argv = run_argv(runner_for(hello, f"charliecloud.image_dir={image_dir}"), "hello")
    assert f"--set-env=USER={pwd.getpwuid(os.getuid()).pw_name}" in argv


def test_paths_with_spaces_and_colons(tmp_path: Path, image_dir: Path) -> None:
    cube = make_cube(tmp_path / "my cube", HELLO, {"Dockerfile": HELLO_DOCKERFILE})
    ws = tmp_path / "my ws"
    (ws / "names").mkdir(parents=True)
    (ws / "names" / "alice.txt").write_text("A\n")
    argv = run_argv(runner_for(cube, f"charliecloud.image_dir={image_dir}", workspace=ws), "hello")
    assert argv[argv.index("-b") : argv.index("-b") + 4] == ["-b", f"{ws}/names:/mlcube_io0", "-b", f"{ws}/chats:/mlcube_io1"]
    bad = tmp_path / "a:b"
    (bad / "names").mkdir(parents=True)
    (bad / "names" / "alice.txt").write_text("A\n")
    runner = runner_for(cube, f"charliecloud.image_dir={image_dir}", workspace=bad)
    with pytest.raises(UsageError, match="ch-run cannot bind .*contains ':'"):
        runner.run_steps(resolve_task(runner.cube, "hello"))


# -- configure -----------------------------------------------------------------------------------------
def test_configure_steps_convert_a_present_image(hello: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_IMAGES", "cuberun/hello_world:0.1")
    runner = runner_for(hello)
    store = runner.store
    token = runner._token
    assert [list(s.argv) for s in runner.configure_steps()] == [
        ["docker", "create", f"--name=cuberun-chconv-{token}", "cuberun/hello_world:0.1", "true"],
        ["docker", "export", "-o", f"{store}/.export-{token}.tar", f"cuberun-chconv-{token}"],
        ["docker", "rm", "-f", f"cuberun-chconv-{token}"],
    ]
    # before conversion, --dry-run shows the image's config from the engine
    argv = run_argv(runner, "hello")
    assert "--set-env=MODE=prod" in argv and "--cd=/app" in argv
    # converted from the same image ID: nothing to do; another ID: convert again
    stored_image(runner)
    assert runner_for(hello).configure_steps() == []
    stored_image(runner, image_id="sha256:old")
    assert len(runner_for(hello).configure_steps()) == 3


def test_configure_steps_make_the_image_present_first(hello: Path, fake_docker: Path) -> None:
    steps = runner_for(hello, "docker.build_strategy=auto").configure_steps()
    assert steps[0].purpose == "build" and list(steps[0].argv[:2]) == ["docker", "build"] and "cuberun/hello_world:0.1" in steps[0].argv
    assert [s.argv[1] for s in steps[1:]] == ["create", "export", "rm"]
    assert list(runner_for(hello).configure_steps()[0].argv) == ["docker", "pull", "cuberun/hello_world:0.1"]


def test_ch_convert_converter(hello: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_IMAGES", "cuberun/hello_world:0.1")
    runner = runner_for(hello, "charliecloud.converter=ch-convert")
    assert [list(s.argv) for s in runner.configure_steps()] == [
        ["ch-convert", "-i", "docker", "-o", "dir", "cuberun/hello_world:0.1", f"{runner.store}/.rootfs.new-{runner._token}"],
    ]
    podman = runner_for(hello, "charliecloud.converter=ch-convert", "charliecloud.docker=podman")
    install(Path(os.environ["PATH"]), "podman", FAKE_DOCKER)
    assert podman.configure_steps()[-1].argv[:3] == ("ch-convert", "-i", "podman")


def test_no_engine_uses_the_converted_image(hello: Path, tmp_path: Path) -> None:
    """An HPC node without Docker: the converted image is used as is, silently."""
    runner = runner_for(hello)
    stored_image(runner)
    assert runner.configure_steps() == []
    runner.configure()
    assert calls(tmp_path) == []


def test_no_engine_and_nothing_converted(hello: Path) -> None:
    with pytest.raises(RunnerUnavailable, match="cannot convert cuberun/hello_world:0.1 for Charliecloud: docker is not installed.*image_dir"):
        runner_for(hello).configure()


def test_image_dir_must_be_a_directory(hello: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        runner_for(hello, f"charliecloud.image_dir={tmp_path / 'nope'}").configure()


def test_unavailable_reason(hello: Path, fake_ch_run: Path) -> None:
    assert runner_for(hello).unavailable_reason() is None
    reason = runner_for(hello, "charliecloud.ch_run=/opt/ch/bin/ch-run").unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert reason.startswith("Charliecloud is not installed (no '/opt/ch/bin/ch-run' on the PATH). Hint: install it")


# -- run against a fake ch-run ---------------------------------------------------------------------------
def _run(runner: CharliecloudRunner, tmp_path: Path, task: str = "hello") -> int:
    rt = resolve_task(runner.cube, task)
    rt.prepare_outputs()
    return runner.run(runner.plan(rt), str(tmp_path / "task.log")).exit_code


def test_run_creates_mount_points_and_sets_user(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER")
    runner = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    assert _run(runner, tmp_path) == 0
    assert (image_dir / "mlcube_io0").is_dir() and (image_dir / "mlcube_io1").is_dir()
    assert calls(tmp_path)[-1][-1].startswith("USER=") and calls(tmp_path)[-1][-1] != "USER="
    assert "task says hi" in (tmp_path / "task.log").read_text()
    monkeypatch.setenv("FAKE_EXIT", "3")
    assert _run(runner, tmp_path) == 3


def test_run_maps_ch_run_errors(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    monkeypatch.setenv("FAKE_CH_ERROR", "can't execve(2): python3: No such file or directory (ch_core.c:410 2)")
    with pytest.raises(BackendError, match=r"could not run its command: can't execve\(2\): python3: No such file or directory$") as info:
        _run(runner, tmp_path)
    assert info.value.exit_code == 127
    monkeypatch.setenv("FAKE_CH_ERROR", "can't cd to /nonexist: No such file or directory (ch_core.c:404 2)")
    with pytest.raises(BackendError, match="ch-run could not start task 'hello': can't cd to /nonexist") as info:
        _run(runner, tmp_path)
    assert info.value.exit_code == 125


def test_mount_point_that_cannot_be_created(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path) -> None:
    (image_dir / "mlcube_io0").write_text("a file in the way")
    runner = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    with pytest.raises(BackendError, match="cannot create the mount point /mlcube_io0 in the image"):
        _run(runner, tmp_path)


# -- safe extraction -----------------------------------------------------------------------------------------
def _tar(path: Path, members: list[tuple[str, str, str | bytes]]) -> Path:
    """members: (kind, name, data-or-link-target); kind in file, dir, sym, hard, chr."""
    with tarfile.open(path, "w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = int(str(data) or "755", 8)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def test_extracts_a_root_filesystem(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "ok.tar", [
        ("dir", "usr/", ""), ("dir", "usr/bin/", ""), ("file", "usr/bin/python3", "#!elf"),
        ("sym", "bin", "usr/bin"), ("sym", "etc/alternatives/py", "/usr/bin/python3"),
        ("hard", "usr/bin/python3.11", "usr/bin/python3"), ("chr", "dev/null", ""),
        ("dir", "ro/", "555"), ("file", "ro/inside.txt", "x"), ("file", "/abs/file.txt", "stripped"),
    ])
    dest = tmp_path / "rootfs"
    read: list[int] = []
    assert safe_extract(tar, dest, done=read.append) == ["dev/null"]
    assert read == sorted(read) and len(read) == 10 and 0 < read[-1] < tar.stat().st_size  # the progress: archive bytes read, member by member
    assert (dest / "usr/bin/python3").read_text() == "#!elf"
    assert os.readlink(dest / "etc/alternatives/py") == "/usr/bin/python3"  # absolute targets are kept (resolved in the container)
    assert os.readlink(dest / "bin") == "usr/bin"
    assert (dest / "usr/bin/python3.11").stat().st_ino == (dest / "usr/bin/python3").stat().st_ino
    assert (dest / "ro/inside.txt").read_text() == "x" and stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert (dest / "abs/file.txt").read_text() == "stripped"
    assert not (dest / "dev/null").exists()
    rmtree(dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("file", "../evil.txt", "x")], "outside the image"),
        ([("file", "a/../../evil.txt", "x")], "outside the image"),
        ([("sym", "link", "/"), ("file", "link/evil.txt", "x")], "through a link"),
        ([("sym", "up", ".."), ("file", "up/evil.txt", "x")], "through a link"),
        ([("hard", "h", "../../evil.txt")], "hard link to outside"),
    ],
)
def test_refuses_members_that_leave_the_image(tmp_path: Path, members: list[tuple[str, str, str]], message: str) -> None:
    tar = _tar(tmp_path / "bad.tar", members)
    (tmp_path / "box").mkdir()
    with pytest.raises(UnsafeArchive, match=message):
        safe_extract(tar, tmp_path / "box" / "rootfs")
    assert not (tmp_path / "box" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_never_writes_through_an_earlier_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    tar = _tar(tmp_path / "t.tar", [("sym", "x", str(victim)), ("file", "x", "overwritten?")])
    dest = tmp_path / "rootfs"
    safe_extract(tar, dest)
    assert victim.read_text() == "precious"
    assert (dest / "x").read_text() == "overwritten?" and not (dest / "x").is_symlink()



def test_fingerprint_follows_the_image(hello: Path, image_dir: Path) -> None:
    runner = runner_for(hello)
    stored_image(runner, image_id="sha256:one")
    rt = resolve_task(runner.cube, "hello")
    one = runner.fingerprint(rt)
    assert one["image_id"] == "sha256:one" and one["command"] == [run_argv(runner, "hello")]
    stored_image(runner, image_id="sha256:two")
    assert runner_for(hello).fingerprint(rt)["image_id"] == "sha256:two"
    user = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    assert user.fingerprint(rt)["image_metadata"] is None
    (image_dir / "ch").mkdir()
    (image_dir / "ch" / "metadata.json").write_text('{"cwd": "/workspace", "env": {"A": "1"}}')
    fp = runner_for(hello, f"charliecloud.image_dir={image_dir}").fingerprint(rt)
    assert fp["image_metadata"] and "--set-env=A=1" in fp["command"][0]


def test_read_only_requests_are_honoured_without_a_warning(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--mount=ro` is what the sandbox does anyway: no warning (ch-run 0.31 once could not)."""
    for options in (RunOptions(), RunOptions(mount="ro")):
        assert _run(runner_for(hello, f"charliecloud.image_dir={image_dir}", options=options), tmp_path) == 0
        assert "warning" not in capsys.readouterr().err


def test_newer_ch_run_error_format(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Later Charliecloud versions exit 31 for their own failures."""
    install(Path(os.environ["PATH"]), "ch-run", FAKE_CH_RUN.replace("exit 1; fi", "exit 31; fi"))
    monkeypatch.setenv("FAKE_CH_ERROR", "can't bind: destination not found: /x (ch_core.c:166 2)")
    with pytest.raises(BackendError, match="ch-run could not start task 'hello': can't bind: destination not found: /x$"):
        _run(runner_for(hello, f"charliecloud.image_dir={image_dir}"), tmp_path)


def test_conversions_of_one_image_are_serialised(hello: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import fcntl

    from cuberun.errors import BusyError
    from cuberun.runners.charliecloud import convert as charliecloud

    runner = runner_for(hello)
    runner.store.mkdir(parents=True)
    monkeypatch.setattr(charliecloud, "LOCK_TIMEOUT", 1.0)
    with open(runner.store / ".lock", "a+") as other:  # another cuberun converting the same image
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BusyError, match="another cuberun has been converting cuberun/hello_world:0.1 for 1 s"):
            with runner._store_lock():
                pass
    assert "waiting for another cuberun converting" in capsys.readouterr().err
    with runner._store_lock():  # released: taken at once
        pass


# -- the run policy ------------------------------------------------------------------------------------
def relaxations(runner: CharliecloudRunner, task: str) -> list[tuple[str, str]]:
    return [(r.name, r.source) for r in runner.policy(resolve_task(runner.cube, task, check_inputs=False)).relaxations]


def test_policy_mapping(hello: Path, image_dir: Path) -> None:
    params = [f"charliecloud.image_dir={image_dir}"]
    strictest = runner_for(hello, *params)
    assert relaxations(strictest, "hello") == []  # the inputs read-only and the network off through cuberun's sandbox
    ws = hello / "workspace"
    assert run_argv(strictest, "hello")[:9] == [*box(f"{ws}/names"), "ch-run"]
    # --network=host or need_internet_access: the host's network, no namespace of its own
    host = runner_for(hello, *params, options=RunOptions(network="host"))
    assert run_argv(host, "hello")[:8] == [*box(f"{ws}/names", net=False), "ch-run"] and ("network", "cli") in relaxations(host, "hello")
    # --mount=rw and the host's network: nothing to isolate, ch-run alone
    bare = runner_for(hello, *params, options=RunOptions(network="host", mount="rw"))
    assert run_argv(bare, "hello")[0] == "ch-run" and ("writable-inputs", "cli") in relaxations(bare, "hello")
    with pytest.raises(UsageError, match="--network=bridge: ch-run joins no named networks"):
        run_argv(runner_for(hello, *params, options=RunOptions(network="bridge")), "hello")
    loose = runner_for(hello, *params, "charliecloud.clean_env=false", "charliecloud.private_tmp=false", "charliecloud.write=true")
    assert relaxations(loose, "hello") == [("host-env", "cube"), ("shared-tmp", "cube"),
                                           ("writable-image", "cube")]


def test_cube_run_args_need_allow_run_args(tmp_path: Path) -> None:
    cube = make_cube(tmp_path / "r", """
        name: r
        charliecloud:
          image_dir: /images/r
          entrypoint: [run]
          run_args: -b /:/host --join
        tasks: {t: {parameters: {outputs: {out: out/}}}}
    """)
    with pytest.raises(UsageError, match="the cube's charliecloud.run_args has '-b /:/host', which the default policy does not allow"):
        run_argv(runner_for(cube), "t")
    allowed = runner_for(cube, options=RunOptions(allow_run_args=True))
    assert ("run-args", "cube") in relaxations(allowed, "t") and "/:/host" in run_argv(allowed, "t")


def test_a_sandbox_failure_is_one_line_and_ch_run_never_starts(hello: Path, image_dir: Path, tmp_path: Path, fake_ch_run: Path) -> None:
    """Never the host's network or writable inputs instead: what failed, in one line, and the hint.
    (A read-only input that vanished after resolution: the bind fails before ch-run starts.)"""
    runner = runner_for(hello, f"charliecloud.image_dir={image_dir}")
    names = hello / "workspace" / "names"
    original = runner.plan

    def vanishing(task: Any) -> Any:
        plan = original(task)
        if names.exists():
            names.rename(names.with_name("gone"))
        return plan

    runner.plan = vanishing  # type: ignore[method-assign]
    with pytest.raises(BackendError, match=f"cannot isolate ch-run for task 'hello': cannot bind {names}: No such file or directory") as info:
        _run(runner, tmp_path)
    assert "unprivileged user namespaces" in str(info.value.hint)
    assert not calls(tmp_path)  # ch-run never started


def test_sandbox_script_errors(tmp_path: Path) -> None:
    """The script alone: bad arguments and a missing command are one line and exit 125."""
    import subprocess

    for args in (["--bogus", "--", "true"], ["--net"], ["--", "/no/such/program"]):
        res = subprocess.run([*SANDBOX, *args], capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == sandbox.FAILED and res.stderr.count("\n") == 1 and res.stderr.startswith(sandbox.PREFIX), (args, res.stderr)


