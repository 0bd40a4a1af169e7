"""container_config.yaml image archives on the real ch-run 0.31 of scripts/backends/up.sh,
through the CLI in a subprocess: a `docker save` archive of an image built by the real Docker
engine (three layers, the last one deleting a file and replacing a directory: whiteouts)
unpacked into a directory image with no Docker engine at hand (the settings point the
runner's `docker` at a path that does not exist), from a path and from a loopback HTTP server
(good and bad sha256, cached by the archive's sha256), and an EncryptedDockerArchive (right and
wrong passphrase, a failing task, Ctrl-C). After each encrypted run nothing decrypted is left:
no decryption folder, no file in $TMPDIR or the cache with the plain archive's sha256 or with
the content of a marker file of the image, and no unpacked image in the cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import client_env, require_backend
from tests.conftest import gpg_encrypt, run_records
from tests.integration.test_image_files_real import (
    PASSPHRASE,
    Setup,
    busybox_tree,
    error_line,
    interrupt_when,
    leftovers,
    make_setup,
    ok,
    sha256_of,
    write_cube,
)

pytestmark = pytest.mark.charliecloud

LIST = "ls /d > /out/ls.txt; ls / >> /out/ls.txt; pwd >> /out/ls.txt; echo $PATH >> /out/ls.txt; cat /marker >> /out/ls.txt"
DOCKERFILE = """\
FROM {base}
RUN ["/bin/busybox", "sh", "-c", "mkdir -p /d && echo a > /d/a && echo b > /d/b && echo gone > /gone"]
RUN ["/bin/busybox", "sh", "-c", "rm /gone && rm -r /d && mkdir /d && echo c > /d/c && echo {marker} > /marker"]
WORKDIR /bin
"""


class Archive:
    def __init__(self, path: Path, image_id: str, marker: str) -> None:
        self.path = path
        self.image_id = image_id
        self.marker = marker  # the content of /marker in the image: found only where the image is unpacked
        self.sha = sha256_of(path)
        self.marker_sha = hashlib.sha256(f"{marker}\n".encode()).hexdigest()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A `docker save` archive of a three-layer busybox image built here by the real Docker."""
    require_backend("docker")
    tmp = tmp_path_factory.mktemp("charchive")
    docker = make_setup("docker", tmp / "docker")
    session = uuid.uuid4().hex[:8]
    base, tag = f"localhost/cuberun-it-charc-{session}/base:1", f"localhost/cuberun-it-charc-{session}/layered:1"
    marker = f"marker-{uuid.uuid4().hex}"
    try:
        tar = subprocess.run(["tar", "-C", str(busybox_tree(tmp)), "-c", "."], capture_output=True, check=True).stdout
        docker.cli("import", "-c", "ENV PATH=/bin", "-", base, input=tar)
        (tmp / "ctx").mkdir()
        (tmp / "ctx" / "Dockerfile").write_text(DOCKERFILE.format(base=base, marker=marker))
        docker.cli("build", "-q", "-t", tag, str(tmp / "ctx"))
        image_id = docker.cli("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()
        docker.cli("save", "-o", str(tmp / "image.tar"), tag)
        yield Archive(tmp / "image.tar", image_id, marker)
    finally:
        docker.cli("rmi", "-f", tag, base, check=False)


@pytest.fixture
def ch(tmp_path: Path) -> Setup:
    require_backend("charliecloud")
    setup = make_setup("charliecloud", tmp_path / "setup")
    setup.env.pop("DOCKER_HOST", None)
    # no Docker engine: a conversion through it would fail with "docker is not installed"
    (tmp_path / "setup" / "settings.yaml").write_text(
        json.dumps({"platforms": {"charliecloud": {"runner": "charliecloud", "docker": str(tmp_path / "no-docker" / "docker")}}}))
    assert client_env("charliecloud")["USER"]
    return setup


def listing(cube: Path, archive: Archive) -> str:
    """What the task saw: /d of the last layer only, no /gone, WORKDIR and ENV of the image."""
    text = (cube / "workspace" / "out" / "ls.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "c" and "gone" not in lines and "d" in lines and "marker" in lines, text
    assert lines[-3:] == ["/bin", "/bin", archive.marker], text
    return text


def unpacked(setup: Setup) -> list[str]:
    root = Path(setup.env["CUBERUN_CACHE_DIR"]) / "charliecloud"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def nothing_decrypted(setup: Setup, archive: Archive) -> None:
    assert leftovers(setup.dirs, archive.sha) == []
    assert leftovers(setup.dirs, archive.marker_sha) == []  # no unpacked image either
    assert unpacked(setup) == []


def test_archive_from_a_path_unpacked_once_without_docker(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    cube = write_cube(tmp_path / "cube", "DockerArchive", "image.tar", LIST)
    shutil.copy(archive.path, cube / "image.tar")
    proc = ok(ch.cuberun("run", f"--mlcube={cube}"))
    assert "unpacking" in proc.stderr and "Docker engine" not in proc.stderr
    listing(cube, archive)
    assert unpacked(ch) == [f"archive-{archive.sha}"]
    record = run_records(cube / "workspace")[-1]
    assert record["image"]["id"] == archive.image_id and record["image"]["archive_sha256"] == archive.sha
    again = ok(ch.cuberun("run", f"--mlcube={cube}", "--force"))
    assert "unpacking" not in again.stderr  # the cached directory image
    assert len(run_records(cube / "workspace")) == 2


def test_archive_from_a_url_good_and_bad_sha256(ch: Setup, archive: Archive, tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, served, requests = server
    shutil.copy(archive.path, served / "image.tar")
    url, bad = f"{base}/image.tar", "0" * 64
    cube = write_cube(tmp_path / "bad", "DockerArchive", f"{url}#sha256={bad}", LIST)
    line = error_line(ch.cuberun("run", f"--mlcube={cube}"))
    assert line == (f"cuberun: error: sha256 mismatch for {url}: expected {bad}, got {archive.sha}. "
                    "Hint: the server sent another file than the digest names; nothing was cached")
    cache = Path(ch.env["CUBERUN_CACHE_DIR"])
    assert [p for p in (cache / "images").rglob("*") if p.is_file()] == [] and unpacked(ch) == []
    assert not (cube / "workspace" / "out" / "ls.txt").exists()

    cube = write_cube(tmp_path / "good", "DockerArchive", url, LIST, f"image_sha256: sha256:{archive.sha}\n")
    proc = ok(ch.cuberun("run", f"--mlcube={cube}"))
    assert f"downloading {url}" in proc.stderr and "unpacking" in proc.stderr
    listing(cube, archive)
    assert [p.name for p in (cache / "images").rglob("*") if p.is_file()] == [archive.sha]
    assert unpacked(ch) == [f"archive-{archive.sha}"]
    assert run_records(cube / "workspace")[-1]["image"]["ref"] == url
    again = ok(ch.cuberun("run", f"--mlcube={cube}", "--force"))
    assert "downloading" not in again.stderr and "unpacking" not in again.stderr
    # the digest from the command line instead of the cube: the same cached image
    cube = write_cube(tmp_path / "cli", "DockerArchive", url, LIST)
    third = ok(ch.cuberun("run", f"--mlcube={cube}", f"--image-sha256={archive.sha}"))
    assert "downloading" not in third.stderr and "unpacking" not in third.stderr
    listing(cube, archive)
    assert requests == ["/image.tar", "/image.tar"]  # the bad digest's download, then the good one only


def test_encrypted_archive_right_and_wrong_passphrase(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    (tmp_path / "wrong").write_text("not it\n")
    root = tmp_path / "enc"
    root.mkdir()
    gpg_encrypt(archive.path, root / "image.tar.gpg", tmp_path / "key")
    cube = write_cube(root, "EncryptedDockerArchive", "image.tar.gpg", LIST)
    line = error_line(ch.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'wrong'}"))
    assert line == (f"cuberun: error: cannot decrypt {root / 'image.tar.gpg'} with the passphrase in {tmp_path / 'wrong'}: "
                    "gpg: decryption failed: Bad session key. Hint: check that the passphrase file holds the passphrase the image was encrypted with")
    nothing_decrypted(ch, archive)

    proc = ok(ch.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"))
    assert "unpacking the decrypted" in proc.stderr
    listing(cube, archive)
    record = run_records(cube / "workspace")[-1]
    assert record["image"]["id"] == archive.image_id and record["image"]["private"] is True
    assert PASSPHRASE not in proc.stdout + proc.stderr and PASSPHRASE not in json.dumps(run_records(cube / "workspace"))
    nothing_decrypted(ch, archive)

    failing = write_cube(tmp_path / "fails", "EncryptedDockerArchive", str(root / "image.tar.gpg"), "cat /marker; exit 3")
    proc = ch.cuberun("run", f"--mlcube={failing}", f"--decryption-key={tmp_path / 'key'}")
    assert proc.returncode == 3, proc.stderr
    assert archive.marker in proc.stdout  # it ran in the image
    nothing_decrypted(ch, archive)


def test_ctrl_c_deletes_the_decrypted_image(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    gpg_encrypt(archive.path, tmp_path / "image.tar.gpg", tmp_path / "key")
    cube = write_cube(tmp_path / "slow", "EncryptedDockerArchive", str(tmp_path / "image.tar.gpg"), "echo task-is-running; sleep 300")
    during: list[str] = []
    code, output = interrupt_when(ch, ch.argv("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"), "task-is-running", during)
    assert code == 130, output
    assert [Path(p).name for p in during] == ["image"]  # the unpacked image existed while the task ran; the decrypted tar was gone
    nothing_decrypted(ch, archive)
    assert not Path(during[0]).parent.exists()
    assert run_records(cube / "workspace")[-1]["status"] == "interrupted"
