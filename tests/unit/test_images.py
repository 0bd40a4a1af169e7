"""Image references with digests, the lock file, and the pure commands of pinned and locked
images (runners/images.py; the real-engine tests are tests/integration/test_image_pinning.py)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from cuberun.errors import CuberunError, SpecError, UsageError
from cuberun.execute import make_runner
from cuberun.runners import images
from cuberun.runners.base import RunOptions
from cuberun.runners.docker import DockerRunner
from cuberun.spec.load import load_cube

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
REG = "127.0.0.1:15100/team/model"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))


@pytest.mark.parametrize(("text", "name", "tag", "digest"), [
    ("ubuntu", "ubuntu", None, None),
    ("ubuntu:22.04", "ubuntu", "22.04", None),
    (f"ubuntu@{D1}", "ubuntu", None, D1),
    (f"{REG}:1@{D1}", REG, "1", D1),
    (f"{REG}@{D1}", REG, None, D1),
    ("localhost:5000/a/b", "localhost:5000/a/b", None, None),  # a port is not a tag
    (f"  {REG}:v2  ", REG, "v2", None),
])
def test_parse_ref(text: str, name: str, tag: str | None, digest: str | None) -> None:
    ref = images.parse_ref(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)


@pytest.mark.parametrize("text", [f"{REG}@sha256:abc", f"{REG}@md5:{'a' * 32}", f"{REG}@{D1.upper()}", f"@{D1}", f"{REG}:@{D1}"])
def test_parse_ref_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        images.parse_ref(text)


def test_registry_and_loopback() -> None:
    assert images.parse_ref(f"{REG}:1").registry == "127.0.0.1:15100"
    assert images.parse_ref("localhost/x:1").registry == "localhost"
    assert images.parse_ref("team/model:1").registry is None
    assert [images.is_loopback(h) for h in ("127.0.0.1:15100", "localhost", "[::1]:5000", "registry.example.org", None)] == [
        True, True, True, False, False]


def test_digests_for_normalises_names() -> None:
    listed = [f"docker.io/library/ubuntu@{D1}", f"{REG}@{D2}", f"localhost/own@{D2}"]
    assert images.digests_for(listed, "ubuntu") == [D1]
    assert images.digests_for(listed, REG) == [D2]
    assert images.digests_for(listed, "own") == [D2]
    assert images.digests_for(listed, "127.0.0.1:15100/team/other") == []
    assert images.registry_digest(f"{REG}:1", listed) == D2
    assert images.registry_digest(f"{REG}@{D1}", listed) is None  # the pinned digest is not listed: not what ran


def test_pull_argv_maps_plain_http_loopback_on_podman() -> None:
    assert images.pull_argv(["podman"], True, f"{REG}@{D1}") == ["podman", "pull", "--tls-verify=false", f"{REG}@{D1}"]
    assert images.pull_argv(["podman"], True, "quay.io/x/y:1") == ["podman", "pull", "quay.io/x/y:1"]
    assert images.pull_argv(["docker"], False, f"{REG}@{D1}") == ["docker", "pull", f"{REG}@{D1}"]


# -- the lock file ----------------------------------------------------------------------------
def test_lock_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / images.LOCK_NAME
    assert images.read_lock(path) is None
    images.write_lock(path, {"b:1": images.LockEntry(None, D2), "a:1": images.LockEntry(D1, None)})
    data = json.loads(path.read_text())
    assert data == {"cuberun_lock": 1, "images": {"a:1": {"digest": D1}, "b:1": {"id": D2}}}
    assert list(data["images"]) == ["a:1", "b:1"]  # sorted: stable diffs
    assert images.read_lock(path) == {"a:1": images.LockEntry(D1, None), "b:1": images.LockEntry(None, D2)}


@pytest.mark.parametrize("text", ["{", "[]", '{"cuberun_lock": 2, "images": {}}', '{"cuberun_lock": 1, "images": {"a": {"digest": "x"}}}'])
def test_bad_lock_file_is_one_line_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / images.LOCK_NAME
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        images.read_lock(path)
    assert str(path) in err.value.lines()[0] and "cuberun lock" in err.value.lines()[0]


def test_lock_file_never_written_over_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / images.LOCK_NAME
    os.mkfifo(path)
    with pytest.raises(CuberunError) as err:
        images.write_lock(path, {"a:1": images.LockEntry(D1, None)})
    assert "FIFO" in err.value.lines()[0] or "fifo" in err.value.lines()[0].lower()
    with pytest.raises(CuberunError):
        images.read_lock(path)


# -- pure commands of pinned and locked images (what --dry-run shows) -------------------------
def runner(root: Path, image: str, platform: str = "docker", *, ignore_lock: bool = False, lock: dict[str, images.LockEntry] | None = None) -> DockerRunner:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(f"""
        name: pin
        platform: {{accelerator_count: 0}}
        docker: {{image: "{image}"}}
        tasks:
          show: {{entrypoint: env, parameters: {{}}}}
        """))
    if lock is not None:
        images.write_lock(root / images.LOCK_NAME, lock)
    cube = load_cube(root)
    made = make_runner(cube, platform, RunOptions(ignore_lock=ignore_lock))
    assert isinstance(made, DockerRunner)
    return made


def test_pinned_image_steps(tmp_path: Path) -> None:
    pinned = f"{REG}@{D1}"
    assert [list(s.argv) for s in runner(tmp_path / "d", pinned).configure_steps()] == [["docker", "pull", pinned]]
    podman = runner(tmp_path / "p", pinned, "podman")
    assert [list(s.argv) for s in podman.configure_steps()] == [["podman", "pull", "--tls-verify=false", pinned]]
    from cuberun.resolve import resolve_task

    run = podman.run_steps(resolve_task(podman.cube, "show", {}))[0].argv
    assert pinned in run and "--pull=never" in run


def test_locked_image_steps(tmp_path: Path) -> None:
    lock = {f"{REG}:1": images.LockEntry(D1, None)}
    steps = runner(tmp_path / "d", f"{REG}:1", lock=lock).configure_steps()
    assert [(s.purpose, list(s.argv)) for s in steps] == [("pull", ["docker", "pull", f"{REG}@{D1}"]),
                                                         ("tag", ["docker", "tag", f"{REG}@{D1}", f"{REG}:1"])]
    podman = runner(tmp_path / "p", f"{REG}:1", "podman", lock=lock).configure_steps()
    assert list(podman[0].argv) == ["podman", "pull", "--tls-verify=false", f"{REG}@{D1}"]
    # --no-lock: the plain pull of the tag; an id-only entry (a local image) cannot be pulled: the plain steps
    assert [list(s.argv) for s in runner(tmp_path / "n", f"{REG}:1", ignore_lock=True, lock=lock).configure_steps()] == [
        ["docker", "pull", f"{REG}:1"]]
    assert [list(s.argv) for s in runner(tmp_path / "i", "own:1", lock={"own:1": images.LockEntry(None, D2)}).configure_steps()] == [
        ["docker", "pull", "own:1"]]


def test_image_missing_from_the_lock_is_refused(tmp_path: Path) -> None:
    made = runner(tmp_path / "d", f"{REG}:2", lock={f"{REG}:1": images.LockEntry(D1, None)})
    with pytest.raises(images.ImageMoved) as err:
        made.configure_steps()
    line = err.value.lines()[0]
    assert f"{REG}:2 is not locked" in line and "cuberun lock" in line and err.value.exit_code == 2
    assert images.locked_value(made) is None


def test_bad_digest_in_the_cube_is_a_positioned_error(tmp_path: Path) -> None:
    made = runner(tmp_path / "d", f"{REG}@sha256:1234")
    with pytest.raises(SpecError) as err:
        made.configure_steps()
    line = err.value.lines()[0]
    assert "mlcube.yaml:4" in line and "docker.image" in line and "64 lowercase hex" in line


def test_container_config_image_pinned(tmp_path: Path) -> None:
    root = tmp_path / "cc"
    root.mkdir()
    (root / "container_config.yaml").write_text(textwrap.dedent(f"""
        container_type: DockerImage
        image: {REG}@{D1}
        tasks:
          infer:
            run_args: {{command: "true"}}
        """))
    made = make_runner(load_cube(root), "docker", RunOptions())
    assert isinstance(made, DockerRunner)
    assert [list(s.argv) for s in made.configure_steps()] == [["docker", "pull", f"{REG}@{D1}"]]


def test_api_surfaces_the_lock_errors(tmp_path: Path) -> None:
    from cuberun import api

    root = tmp_path / "d"
    runner(root, f"{REG}:2", lock={f"{REG}:1": images.LockEntry(D1, None)})
    with pytest.raises(api.Error) as err:
        api.plan(root, platform="docker")
    assert err.value.exit_code == 2 and "is not locked" in str(err.value)
    with pytest.raises(api.UsageError) as usage:
        api.lock(root, platform="local")
    assert "docker and podman" in str(usage.value)
    assert api._options(None, None, False, no_lock=True).ignore_lock
