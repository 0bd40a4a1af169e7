"""zstd-compressed layers in `docker save` archives (runners/zstdlayer.py, through the charliecloud
runner's archive.unpack): known by their magic bytes whatever the layer's name, decompressed by
the real zstd program (/usr/bin/zstd) into the same safe extraction as a plain or gzip layer;
a missing zstd, a corrupt or truncated layer and a layer over the size bound are one error
naming the layer, and no temporary file is left."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cuberun.errors import BackendError
from cuberun.runners import rootfs as rootfs_module
from cuberun.runners.charliecloud.archive import unpack
from cuberun.runners.zstdlayer import Bounded, is_zstd, zstd_layers
from tests.unit.test_charliecloud_archive import LOWER, UPPER, layer, save_archive

ZSTD = shutil.which("zstd")
needs_zstd = pytest.mark.skipif(ZSTD is None, reason="no zstd program (apt-get install zstd)")


@pytest.fixture(autouse=True)
def _isolated(image_home: Path) -> None:
    """Settings, cache and TMPDIR of the test's own (tests/conftest.py)."""


def zstd(data: bytes) -> bytes:
    assert ZSTD is not None
    return subprocess.run([ZSTD, "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


def layer_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return [m.name for m in tar.getmembers() if m.name.endswith("layer.tar")]


def leftovers(box: Path) -> list[str]:
    return sorted(p.name for p in box.iterdir() if p.name != "rootfs")


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x28\xb5\x2f\xfd\x04\x00", True),  # a zstd frame
    (b"\x50\x2a\x4d\x18\x00\x00", True),  # a skippable frame first (0x184D2A50)
    (b"\x5f\x2a\x4d\x18", True),
    (b"\x60\x2a\x4d\x18", False),
    (gzip.compress(b"x")[:4], False),
    (LOWER[:4], False),  # a plain tar
    (b"\x28\xb5\x2f", False),  # too short
    (b"", False),
])
def test_zstd_is_known_by_its_magic_bytes(head: bytes, expected: bool) -> None:
    assert is_zstd(head) is expected


@needs_zstd
@pytest.mark.parametrize("symlinked", [False, True])
def test_zstd_layers_are_unpacked_like_any_other(tmp_path: Path, symlinked: bool) -> None:
    archive = tmp_path / "image.tar"
    save_archive(archive, [zstd(LOWER), zstd(UPPER)], symlinked=symlinked)
    assert all(n.endswith("/layer.tar") for n in layer_names(archive))  # nothing in the names says zstd
    box = tmp_path / "box"
    rootfs = box / "rootfs"
    _, skipped = unpack(archive, rootfs)
    assert skipped == []
    assert sorted(p.name for p in (rootfs / "d").iterdir()) == ["c"]  # the upper layer's opaque directory
    assert not (rootfs / "gone").exists() and (rootfs / "keep").read_text() == "keep"
    assert (rootfs / "x").read_text() == "now a file"
    assert os.stat(rootfs / "same").st_ino == os.stat(rootfs / "keep").st_ino
    assert leftovers(box) == []  # the compressed layer's temporary copy is gone


@needs_zstd
def test_zstd_gzip_and_plain_layers_mixed(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    save_archive(archive, [gzip.compress(LOWER), zstd(layer(("z", "file", "zstd"))), layer(("p", "file", "plain"))])
    _, skipped = unpack(archive, tmp_path / "rootfs")
    assert [(tmp_path / "rootfs" / n).read_text() for n in ("keep", "z", "p")] == ["keep", "zstd", "plain"]


def one_error(archive: Path, box: Path) -> str:
    with pytest.raises(BackendError) as info:
        unpack(archive, box / "rootfs")
    (line,) = info.value.lines()
    assert leftovers(box) == [], "a temporary copy of the layer was left"
    return line


def test_no_zstd_program_is_one_line_with_the_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "image.tar"
    save_archive(archive, [b"\x28\xb5\x2f\xfd" + b"\x00" * 64])
    (name,) = layer_names(archive)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert one_error(archive, tmp_path / "box") == (
        f"layer {name} of the image archive {archive} is compressed with zstd and there is no zstd program on the PATH. "
        "Hint: install zstd (Debian/Ubuntu: apt-get install zstd; RHEL/Fedora: dnf install zstd) and run again")


@needs_zstd
@pytest.mark.parametrize(("damage", "why"), [
    (lambda z: z[:4] + b"garbage" * 20, "Decoding error (36) : "),  # the frame header is not zstd's
    (lambda z: z[: len(z) // 2], ""),  # cut in the middle (a truncated download)
    (lambda z: z[:-8] + bytes(b ^ 0xFF for b in z[-8:]), ""),  # the end of the frame (its checksum) damaged
])
def test_a_corrupt_zstd_layer_is_one_line(tmp_path: Path, damage: object, why: str) -> None:
    payload = layer(*[(f"f{i}", "file", os.urandom(4096)) for i in range(8)])
    archive = tmp_path / "image.tar"
    save_archive(archive, [LOWER, damage(zstd(payload))])  # type: ignore[operator]
    (_, name) = layer_names(archive)
    line = one_error(archive, tmp_path / "box")
    prefix = f"cannot decompress layer {name} of the image archive {archive}: zstd: "
    assert line.startswith(prefix + why), line
    assert line.endswith(". Hint: the layer is corrupt or truncated: save or download the archive again"), line
    assert "/*stdin*" not in line and ".layer-" not in line  # zstd's message names no temporary file


@needs_zstd
@pytest.mark.parametrize("compress", [zstd, gzip.compress, bytes])
def test_a_layer_larger_than_the_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: object) -> None:
    monkeypatch.setattr(rootfs_module, "MAX_LAYER_BYTES", 64 * 1024)
    archive = tmp_path / "image.tar"
    save_archive(archive, [compress(layer(("big", "file", b"\x00" * (128 * 1024))))])  # type: ignore[operator]
    line = one_error(archive, tmp_path / "box")
    assert "is larger than 65536 bytes uncompressed" in line, line
    assert not (tmp_path / "box" / "rootfs" / "big").exists()


def test_the_bounded_reader_counts_every_byte() -> None:
    reader = Bounded(io.BytesIO(b"x" * 10), 10, "layer L")
    assert reader.read(4) == b"xxxx" and reader.read() == b"xxxxxx" and reader.read(5) == b""
    over = Bounded(io.BytesIO(b"x" * 11), 10, "layer L")
    with pytest.raises(BackendError) as info:
        over.drain()
    assert info.value.lines()[0].startswith("layer L is larger than 10 bytes uncompressed. Hint: ")


@needs_zstd
def test_the_zstd_layers_of_an_archive_are_named(tmp_path: Path) -> None:
    """For the docker runner's hint when the engine cannot load an archive."""
    archive = tmp_path / "image.tar"
    save_archive(archive, [LOWER, zstd(UPPER), gzip.compress(UPPER)], symlinked=True)
    assert zstd_layers(archive) == [layer_names(archive)[1]]
    save_archive(archive, [LOWER])
    assert zstd_layers(archive) == []
    (tmp_path / "other").write_bytes(b"not a tar")
    assert zstd_layers(tmp_path / "other") == [] and zstd_layers(tmp_path / "missing") == []
