"""`docker save` archives whose layers are zstd-compressed (as OCI images pushed with zstd compression have
them), made here from the real Docker's archive of a three-layer image (whiteouts; the layers
re-compressed by the real zstd program, names unchanged), on the real backends of
scripts/backends/up.sh through the CLI in a subprocess:
- charliecloud unpacks them with no Docker engine (runners/zstdlayer.py) and runs the task on the
  real ch-run; a corrupt layer is one error line naming it, and nothing is cached; an encrypted
  one leaves nothing decrypted (not even the private copy of a compressed layer);
- podman loads them itself and runs the task; Debian's Docker 20.10 cannot load them: its error
  line says why (the archive's zstd layers) and what to use instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import gpg_encrypt, run_records
from tests.integration.test_charliecloud_archive_real import LIST, Archive, archive, ch, listing, nothing_decrypted, unpacked
from tests.integration.test_image_files_real import (
    PASSPHRASE,
    Setup,
    engine_setup,
    error_line,
    leftovers,
    ok,
    sha256_of,
    write_cube,
)

__all__ = ["archive", "ch"]  # the fixtures, shared with test_charliecloud_archive_real.py

ZSTD = shutil.which("zstd")


def zstd_copy(source: Path, dest: Path, corrupt: bool = False) -> list[str]:
    """`source` (a `docker save` archive) with every layer compressed by the zstd program (the
    last one damaged in the middle when `corrupt`); returns the layer names of its manifest."""
    if ZSTD is None:
        pytest.skip("no zstd program (apt-get install zstd)")
    with tarfile.open(source) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layers = list(manifest[0]["Layers"])
        members = {m.name: m for m in tar.getmembers()}
        files = {}  # the regular member holding each layer (Docker 25 links <id>/layer.tar to a blob)
        for name in layers:
            member = members[name]
            while member.issym():
                member = members[posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))]
            files[member.name] = name
        with tarfile.open(dest, "w") as out:
            for member in tar.getmembers():
                data = tar.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
                if data is not None and member.name in files:
                    data = subprocess.run([ZSTD, "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout
                    if corrupt and files[member.name] == layers[-1]:
                        middle = len(data) // 2
                        data = data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:]
                    member.size = len(data)
                out.addfile(member, io.BytesIO(data) if data is not None else None)
    with tarfile.open(dest) as tar:  # really zstd, under the names `docker save` gave
        assert all(tar.extractfile(name).read(4) == b"\x28\xb5\x2f\xfd" for name in layers)  # type: ignore[union-attr]
    return layers


def test_zstd_layers_unpacked_and_run_on_charliecloud(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    cube = write_cube(tmp_path / "cube", "DockerArchive", "image.tar", LIST)
    zstd_copy(archive.path, cube / "image.tar")
    sha = sha256_of(cube / "image.tar")
    proc = ok(ch.cuberun("run", f"--mlcube={cube}"))
    assert "unpacking" in proc.stderr and "Docker engine" not in proc.stderr
    listing(cube, archive)  # the three layers with their whiteouts, WORKDIR and ENV: as from the gzip/plain archive
    assert unpacked(ch) == [f"archive-{sha}"]
    store = Path(ch.env["CUBERUN_CACHE_DIR"]) / "charliecloud" / f"archive-{sha}"
    assert sorted(p.name for p in store.iterdir()) == [".lock", "image.json", "rootfs"]  # no temporary layer copy left
    record = run_records(cube / "workspace")[-1]
    assert record["image"]["id"] == archive.image_id and record["image"]["archive_sha256"] == sha


def test_a_corrupt_zstd_layer_is_one_line_and_nothing_is_cached(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    cube = write_cube(tmp_path / "cube", "DockerArchive", "image.tar", LIST)
    layers = zstd_copy(archive.path, cube / "image.tar", corrupt=True)
    line = error_line(ch.cuberun("run", f"--mlcube={cube}"))
    assert line.startswith(f"cuberun: error: cannot decompress layer {layers[-1]} of the image archive {cube / 'image.tar'}: zstd: "), line
    assert line.endswith(". Hint: the layer is corrupt or truncated: save or download the archive again"), line
    store = Path(ch.env["CUBERUN_CACHE_DIR"]) / "charliecloud" / f"archive-{sha256_of(cube / 'image.tar')}"
    assert sorted(p.name for p in store.iterdir()) == [".lock"]  # no image, no half-unpacked rootfs, no layer copy
    assert not (cube / "workspace" / "out" / "ls.txt").exists() and run_records(cube / "workspace") == []


def test_an_encrypted_archive_with_zstd_layers_leaves_nothing_decrypted(ch: Setup, archive: Archive, tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    layers = zstd_copy(archive.path, plain)
    with tarfile.open(plain) as tar:  # the compressed layers: copied into the private folder while unpacked
        layer_shas = [hashlib.sha256(tar.extractfile(name).read()).hexdigest() for name in layers]  # type: ignore[union-attr]
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    root = tmp_path / "enc"
    root.mkdir()
    gpg_encrypt(plain, root / "image.tar.gpg", tmp_path / "key")
    cube = write_cube(root, "EncryptedDockerArchive", "image.tar.gpg", LIST)
    proc = ok(ch.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"))
    assert "unpacking the decrypted" in proc.stderr
    listing(cube, archive)
    nothing_decrypted(ch, archive)  # no decryption folder, no unpacked image
    assert leftovers(ch.dirs, sha256_of(plain)) == []
    for sha in layer_shas:
        assert leftovers(ch.dirs, sha) == []


@pytest.fixture(params=["podman", "docker"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    yield from engine_setup(str(request.param), tmp_path / "setup")


def test_zstd_layers_on_podman_and_docker(engine: Setup, archive: Archive, tmp_path: Path) -> None:
    cube = write_cube(tmp_path / "cube", "DockerArchive", "image.tar", LIST)
    zstd_copy(archive.path, cube / "image.tar")
    engine.cli("rmi", "-f", archive.image_id, check=False)  # the Docker that built it has it: it must be loaded
    assert not engine.has_image(archive.image_id)
    engine.images.append(archive.image_id)  # loaded by the run: removed at the end
    proc = engine.cuberun("run", f"--mlcube={cube}")
    version = engine.cli("version", "--format", "{{.Server.Version}}" if engine.kind == "docker" else "{{.Client.Version}}")
    if engine.kind == "podman":  # podman 4.3 loads zstd layers itself
        ok(proc)
        listing(cube, archive)
        assert run_records(cube / "workspace")[-1]["image"]["id"] == archive.image_id
    elif version.stdout.decode().startswith("20."):  # Debian's Docker 20.10 cannot: the error says why
        line = error_line(proc)
        assert line.startswith(f"cuberun: error: cannot load image {archive.image_id} (exit 1): "), line
        assert line.endswith(f"Hint: {cube / 'image.tar'} has zstd-compressed layers, which this docker may not load: use a newer Docker, "
                             "podman or --platform=charliecloud, or save the image again with gzip layers"), line
    else:
        pytest.fail(f"docker {version.stdout.decode().strip()}: see whether it loads zstd layers and update this test")
