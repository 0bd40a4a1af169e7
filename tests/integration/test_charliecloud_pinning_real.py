"""Verifiable images on the real ch-run 0.31: the Docker image the charliecloud runner converts,
pinned by digest or locked in cuberun.lock, checked in the real Docker engine it is converted
from (against a real registry on loopback, tests/registry.py), and, on a machine without an
engine (the settings point the runner's `docker` at a path that does not exist), checked against
what the converted image recorded. Two small busybox images (A and B, told apart by an ENV)
are made here with `docker import`; each test pushes to a repository of its own.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_records
from tests.integration.test_image_files_real import Setup, busybox_tree, make_setup, ok, show_cube, without_engine
from tests.integration.test_image_pinning import ran, refused
from tests.registry import Registry, registry_fixture  # noqa: F401 - the session fixture `registry`

pytestmark = pytest.mark.charliecloud
SESSION = uuid.uuid4().hex[:8]
LABEL = f"cuberun.test.chpin={SESSION}"  # on every image made here: the teardown removes them all, by id


class Images:
    def __init__(self, docker: Setup, tmp: Path) -> None:
        self.docker = docker
        self.tmp = tmp
        self.tags: list[str] = []

    def cli(self, *args: str) -> str:
        return self.docker.cli(*args).stdout.decode().strip()

    def make(self, which: str) -> str:
        tag = f"localhost/cuberun-it-chpin-{SESSION}/{which.lower()}:1"
        tar = subprocess.run(["tar", "-C", str(busybox_tree(self.tmp / which)), "-c", "."], capture_output=True, check=True).stdout
        self.docker.cli("import", "-c", "ENV PATH=/bin", "-c", f"ENV CUBERUN_PIN_WHICH={which}", "-c", f"LABEL {LABEL}", "-", tag, input=tar)
        self.tags.append(tag)
        return tag

    def publish(self, registry: Registry, repo: str, local: str) -> tuple[str, str]:
        """Tag `local` as REGISTRY/repo:1 and push it: (the tag reference, its registry digest)."""
        ref = f"{registry.host}/{repo}-{SESSION}:1"
        self.cli("tag", local, ref)
        self.tags.append(ref)
        line = next(x for x in self.cli("push", ref).splitlines() if "digest: sha256:" in x)
        return ref, line.split("digest: ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    from tests.backends import require_backend

    require_backend("charliecloud")
    require_backend("docker")
    tmp = tmp_path_factory.mktemp("chpin")
    made = Images(make_setup("docker", tmp / "docker"), tmp)
    made.make("A")
    made.make("B")
    try:
        yield made
    finally:
        for tag in made.tags:
            made.docker.cli("rmi", "-f", tag, check=False)
        # what is left under a digest reference only (pulled by digest, its tag moved away)
        left = made.docker.cli("images", "-q", "--no-trunc", "--filter", f"label={LABEL}", check=False).stdout.decode().split()
        for image in dict.fromkeys(left):
            made.docker.cli("rmi", "-f", image, check=False)
        assert not made.docker.cli("images", "-q", "--filter", f"label={LABEL}", check=False).stdout.strip()


def with_engine(tmp: Path, built: Images) -> Setup:
    setup = make_setup("charliecloud", tmp)
    setup.env["DOCKER_HOST"] = built.docker.env["DOCKER_HOST"]
    return setup


def cube(root: Path, image: str) -> Path:
    return show_cube(root, "chpin", image, "/bin/busybox env")


def test_pinned_digest_is_pulled_converted_and_recorded(built: Images, registry: Registry, tmp_path: Path) -> None:
    ref, digest_a = built.publish(registry, "chpin", built.tags[0])
    name = ref.rsplit(":", 1)[0]
    pinned = f"{name}@{digest_a}"
    built.cli("rmi", ref)  # only the registry has it: pulled by digest through the docker runner
    setup = with_engine(tmp_path / "setup", built)
    root = cube(tmp_path / "cube", pinned)
    assert ran(setup.cuberun("run", f"--mlcube={root}")) == "A"
    image = run_records(root / "workspace")[-1]["image"]
    assert image["ref"] == pinned and image["pinned"] == digest_a and image["digest"] == digest_a
    built.tags.append(pinned)

    # the same converted image on a machine without an engine: checked against what it recorded
    bare = without_engine(setup, "no-docker")  # the same cache (the converted images) on a machine without a Docker engine
    proc = bare.cuberun("run", f"--mlcube={root}", "--force")
    assert ran(proc) == "A" and "converting" not in proc.stderr
    assert run_records(root / "workspace")[-1]["image"]["pinned"] == digest_a


def test_lock_is_checked_with_and_without_an_engine(built: Images, registry: Registry, tmp_path: Path) -> None:
    ref, _ = built.publish(registry, "chlock", built.tags[0])
    setup = with_engine(tmp_path / "setup", built)
    root = cube(tmp_path / "cube", ref)
    workspace = root / "workspace"
    ok(setup.cuberun("lock", f"--mlcube={root}"))
    locked = json.loads((root / "cuberun.lock").read_text())["images"][ref]["digest"]
    assert ran(setup.cuberun("run", f"--mlcube={root}")) == "A"
    assert run_records(workspace)[-1]["image"]["locked"]["digest"] == locked

    # the tag moves to B: refused in the engine; --no-lock converts and runs B
    built.cli("tag", built.tags[1], ref)
    built.cli("push", ref)
    before = len(run_records(workspace))
    refused(setup.cuberun("run", f"--mlcube={root}", "--force"), ref, locked, "moved", "cuberun lock")
    assert len(run_records(workspace)) == before
    assert ran(setup.cuberun("run", f"--mlcube={root}", "--force", "--no-lock")) == "B"

    # without an engine: the converted image (now B) does not match the lock (A): refused
    bare = without_engine(setup, "no-docker")
    refused(bare.cuberun("run", f"--mlcube={root}", "--force"), ref, locked, "moved", "converted image")
    assert len(run_records(workspace)) == before + 1
    ok(setup.cuberun("lock", f"--mlcube={root}"))  # lock again (B), where the engine is: accepted without it
    assert ran(bare.cuberun("run", f"--mlcube={root}", "--force")) == "B"
    assert run_records(workspace)[-1]["image"]["locked"]["digest"] != locked
