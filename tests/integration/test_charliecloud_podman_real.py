"""Podman as the charliecloud runner's conversion engine (`charliecloud.docker: podman`), for
real: images made here with `podman import` (busybox, told apart by an ENV; no Docker engine
has them, and DOCKER_HOST is unset) are converted by `podman create` + `podman export` into
directory images that the real ch-run 0.31 runs; a changed image is converted again; the
converted image then runs on a machine without podman; `cuberun lock` locks the podman image,
and a moved tag is refused with podman and without it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import require_backend
from tests.conftest import run_records
from tests.integration.test_image_files_real import Setup, busybox_tree, make_setup, ok, show_cube, without_engine
from tests.integration.test_image_pinning import ran, refused

pytestmark = pytest.mark.charliecloud
SESSION = uuid.uuid4().hex[:8]


class Podman:
    def __init__(self, setup: Setup, tmp: Path) -> None:
        self.setup = setup
        self.tmp = tmp
        self.ids: list[str] = []

    def cli(self, *args: str) -> str:
        return self.setup.cli(*args).stdout.decode().strip()

    def make(self, which: str, tag: str) -> str:
        """Import busybox as image `which` (ENV CUBERUN_PIN_WHICH, WORKDIR /bin) under `tag`; its id (sha256:...)."""
        tar = subprocess.run(["tar", "-C", str(busybox_tree(self.tmp / f"{which}-{uuid.uuid4().hex[:6]}")), "-c", "."],
                             capture_output=True, check=True).stdout
        self.setup.cli("import", "-c", "ENV PATH=/bin", "-c", f"ENV CUBERUN_PIN_WHICH={which}", "-c", "WORKDIR /bin", "-", tag, input=tar)
        image_id = self.cli("image", "inspect", "--format", "{{.Id}}", tag)
        self.ids.append(image_id)
        return f"sha256:{image_id}"

    def repo_digests(self, tag: str) -> list[str]:
        return list(json.loads(self.cli("image", "inspect", "--format", "{{json .RepoDigests}}", tag)))


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    require_backend("charliecloud")
    require_backend("podman")
    made = Podman(make_setup("podman", tmp_path / "podman"), tmp_path / "trees")
    try:
        yield made
    finally:
        for image_id in made.ids:
            made.setup.cli("rmi", "-f", image_id, check=False)


def charliecloud(tmp: Path, engine: str) -> Setup:
    """cuberun on charliecloud converting with `engine` (podman, or a path that does not exist: no engine)."""
    setup = make_setup("charliecloud", tmp)
    setup.env.pop("DOCKER_HOST", None)
    (tmp / "settings.yaml").write_text(json.dumps({"platforms": {"charliecloud": {"runner": "charliecloud", "docker": engine}}}))
    return setup


def cube(root: Path, image: str) -> Path:
    return show_cube(root, "chpodman", image, "/bin/busybox sh -c 'env; pwd'")


def test_a_podman_image_is_converted_run_and_converted_again_when_it_changes(podman: Podman, tmp_path: Path) -> None:
    tag = f"localhost/cuberun-it-chpodman-{SESSION}/conv:1"
    id_a = podman.make("A", tag)
    setup = charliecloud(tmp_path / "setup", "podman")
    root = cube(tmp_path / "cube", tag)
    proc = setup.cuberun("run", f"--mlcube={root}")
    assert ran(proc) == "A" and f"converting {tag} into a Charliecloud directory image (no converted image yet)" in proc.stderr
    assert proc.stdout.splitlines()[-1] == "/bin"  # the image's WORKDIR; its ENV is above
    image = run_records(root / "workspace")[-1]["image"]
    assert image["id"] == id_a and image["repo_digests"] == podman.repo_digests(tag)  # as the docker runner on podman records it
    again = setup.cuberun("run", f"--mlcube={root}", "--force")
    assert ran(again) == "A" and "converting" not in again.stderr

    id_b = podman.make("B", tag)  # the tag now names another image
    changed = setup.cuberun("run", f"--mlcube={root}", "--force")
    assert ran(changed) == "B" and f"converting {tag} into a Charliecloud directory image (the image changed in podman)" in changed.stderr
    assert run_records(root / "workspace")[-1]["image"]["id"] == id_b

    bare = without_engine(setup, "no-podman")  # an HPC node: the converted image as it is
    proc = bare.cuberun("run", f"--mlcube={root}", "--force")
    assert ran(proc) == "B" and "converting" not in proc.stderr
    assert run_records(root / "workspace")[-1]["image"]["id"] == id_b


def test_a_podman_image_is_locked_and_checked_with_and_without_podman(podman: Podman, tmp_path: Path) -> None:
    tag = f"localhost/cuberun-it-chpodman-{SESSION}/lock:1"
    podman.make("A", tag)
    setup = charliecloud(tmp_path / "setup", "podman")
    root = cube(tmp_path / "cube", tag)
    ok(setup.cuberun("lock", f"--mlcube={root}"))
    locked = json.loads((root / "cuberun.lock").read_text())["images"][tag]
    assert ran(setup.cuberun("run", f"--mlcube={root}")) == "A"
    assert run_records(root / "workspace")[-1]["image"]["locked"] == {"file": str(root / "cuberun.lock"), **locked}

    podman.make("B", tag)  # the tag moves: refused in podman, before any conversion
    before = len(run_records(root / "workspace"))
    refused(setup.cuberun("run", f"--mlcube={root}", "--force"), tag, "moved", "cuberun lock")
    assert len(run_records(root / "workspace")) == before
    assert ran(setup.cuberun("run", f"--mlcube={root}", "--force", "--no-lock")) == "B"  # converted: B

    bare = without_engine(setup, "no-podman")  # the converted image (B) against the lock (A), with no podman to ask
    refused(bare.cuberun("run", f"--mlcube={root}", "--force"), tag, "moved", "converted image")
    ok(setup.cuberun("lock", f"--mlcube={root}"))  # locked again where podman is: B
    assert ran(bare.cuberun("run", f"--mlcube={root}", "--force")) == "B"
