"""The charliecloud runner's image archives (container_config.yaml DockerArchive,
EncryptedDockerArchive; runners/charliecloud/archive.py): a `docker save` archive written here
with tarfile unpacked layer over layer (whiteouts, opaque directories, a gzip layer, a layer
behind a symlink as Docker 25 writes them), unsafe archives refused in one line, the dry-run
commands and the cache by sha256, and an encrypted archive's private image deleted at release
(the real gpg). tests/integration/test_charliecloud_archive_real.py runs them on real ch-run."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cuberun.errors import BackendError, UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.charliecloud import CharliecloudRunner
from cuberun.runners.charliecloud.archive import mount_points, unpack
from cuberun.spec.load import load_cube
from tests.conftest import gpg_encrypt

CONFIG = {"Entrypoint": ["/bin/run"], "Cmd": ["--help"], "WorkingDir": "/work", "Env": ["PATH=/bin", "MODE=prod"], "User": ""}
PRIVATE = "<private temporary folder>"


@pytest.fixture(autouse=True)
def _isolated(image_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings, cache and TMPDIR of the test's own (tests/conftest.py), and a user name for ch-run."""
    monkeypatch.setenv("USER", "alice")


def layer(*entries: tuple[str, str, str | bytes]) -> bytes:
    """A layer tar of (name, kind, content) entries: kind file, dir, sym (content: target), link (hard, content: target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            data = content.encode() if isinstance(content, str) else content
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind in ("sym", "link"):
                info.type, info.linkname = (tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE), str(content)
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def save_archive(path: Path, layers: list[bytes], config: dict[str, Any] | None = None, symlinked: bool = False) -> str:
    """A `docker save` archive of `layers` (lowest first); returns its image id."""
    raw = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z", "config": config or CONFIG,
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_hex = hashlib.sha256(raw).hexdigest()
    files: list[tuple[str, bytes | str]] = []
    names = []
    for data in layers:
        digest = hashlib.sha256(data).hexdigest()
        if symlinked:  # Docker 25: <id>/layer.tar -> ../blobs/sha256/<digest>
            files += [(f"blobs/sha256/{digest}", data), (f"{digest[:12]}/layer.tar", f"../blobs/sha256/{digest}")]
            names.append(f"{digest[:12]}/layer.tar")
        else:
            files.append((f"{digest}/layer.tar", data))
            names.append(f"{digest}/layer.tar")
    files += [(f"{config_hex}.json", raw), ("manifest.json", json.dumps([{"Config": f"{config_hex}.json", "Layers": names}]).encode())]
    with tarfile.open(path, "w") as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return f"sha256:{config_hex}"


LOWER = layer(("bin", "dir", ""), ("bin/run", "file", "#!/bin/sh\n"), ("d", "dir", ""), ("d/a", "file", "a"), ("d/b", "file", "b"),
              ("gone", "file", "gone"), ("keep", "file", "keep"), ("x", "dir", ""), ("x/y", "file", "y"))
UPPER = layer(("d", "dir", ""), ("d/.wh..wh..opq", "file", ""), ("d/c", "file", "c"), (".wh.gone", "file", ""),
              ("x", "file", "now a file"), ("same", "link", "keep"))


@pytest.mark.parametrize("symlinked", [False, True])
def test_layers_are_unpacked_with_their_whiteouts(tmp_path: Path, symlinked: bool) -> None:
    archive = tmp_path / "image.tar"
    image_id = save_archive(archive, [LOWER, gzip.compress(UPPER)], symlinked=symlinked)
    rootfs = tmp_path / "rootfs"
    image, skipped = unpack(archive, rootfs)
    assert image.image_id == image_id and image.config == CONFIG and image.created == "2026-01-01T00:00:00Z" and skipped == []
    assert sorted(p.name for p in (rootfs / "d").iterdir()) == ["c"]  # the opaque directory hides a and b
    assert not (rootfs / "gone").exists() and (rootfs / "keep").read_text() == "keep"
    assert (rootfs / "x").read_text() == "now a file"  # a file in place of the lower layer's directory
    assert os.stat(rootfs / "same").st_ino == os.stat(rootfs / "keep").st_ino  # a hard link to a lower layer's file
    for name in ("dev", "proc", "sys", "tmp"):  # what ch-run binds onto
        assert (rootfs / name).is_dir()
    for name in ("passwd", "group", "hosts", "resolv.conf"):
        assert (rootfs / "etc" / name).is_file()


@pytest.mark.parametrize(("layers", "why"), [
    ([layer(("../evil", "file", "x"))], "the image archive has a member outside the image: '../evil'"),
    ([layer(("l", "sym", "/")), layer(("l/evil", "file", "x"))], "the image archive writes 'l/evil' through a link that leaves the image"),
    ([layer((".wh..", "file", ""))], "the image layer has a whiteout of no file: '.wh..'"),
])
def test_unsafe_archives_are_refused(tmp_path: Path, layers: list[bytes], why: str) -> None:
    archive = tmp_path / "image.tar"
    save_archive(archive, layers)
    with pytest.raises(BackendError) as info:
        unpack(archive, tmp_path / "box" / "rootfs")
    assert info.value.lines() == [f"cannot unpack the image archive {archive}: {why}. "
                                  "Hint: give an archive written by `docker save` or `podman save`; check the free space"]
    assert not (tmp_path / "evil").exists() and not (tmp_path / "box" / "evil").exists()


def test_an_archive_without_its_layer_or_manifest(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(tarfile.TarInfo("other"))
    with pytest.raises(BackendError) as info:
        unpack(archive, tmp_path / "rootfs")
    assert info.value.lines() == ["the archive has no manifest.json. Hint: give an archive written by `docker save` or `podman save`"]


def test_mount_points_are_never_made_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to(outside)
    mount_points(rootfs)
    assert list(outside.iterdir()) == [] and (rootfs / "dev").is_dir()


def cube(tmp_path: Path, kind: str, image: str, extra: str = "") -> Path:
    root = tmp_path / "cube"
    root.mkdir(exist_ok=True)
    (root / "container_config.yaml").write_text(f"container_type: {kind}\nimage: {json.dumps(image)}\n{extra}tasks:\n"
                                                "  infer:\n    output_volumes: {out: {mount_path: /out, type: directory}}\n")
    return root


def runner_for(root: Path, options: RunOptions | None = None) -> CharliecloudRunner:
    runner = make_runner(load_cube(root), "charliecloud", options or RunOptions())
    assert isinstance(runner, CharliecloudRunner)
    return runner


def run_argv(runner: CharliecloudRunner) -> list[str]:
    (step,) = runner.run_steps(resolve_task(runner.cube, "infer"))
    return list(step.argv)


def test_dry_run_of_a_path_archive(tmp_path: Path) -> None:
    root = cube(tmp_path, "DockerArchive", "image.tar")
    save_archive(root / "image.tar", [LOWER])
    sha = hashlib.sha256((root / "image.tar").read_bytes()).hexdigest()
    runner = runner_for(root)
    assert runner.configure_steps() == []  # unpacked in cuberun: no command, no Docker engine
    rootfs = tmp_path / "cache" / "charliecloud" / f"archive-{sha}" / "rootfs"
    argv = run_argv(runner)
    assert argv[argv.index("ch-run") + 1:] == ["--unset-env=*", "--env-no-expand", "--set-env=PATH=/bin", "--set-env=MODE=prod", "--set-env=HOME=/tmp",
                                    "--set-env=USER=alice", "--private-tmp", "--cd=/work", "-b", f"{root / 'workspace' / 'out'}:/out",
                                    str(rootfs), "--", "/bin/run", "--help"]


def test_dry_run_of_an_encrypted_archive_from_a_url(tmp_path: Path) -> None:
    hexdigest = "ab" * 32
    root = cube(tmp_path, "EncryptedDockerArchive", f"http://127.0.0.1:9/image.tar.gpg#sha256={hexdigest}")
    runner = runner_for(root, RunOptions(decryption_key="/keys/pass"))
    assert [s.argv for s in runner.configure_steps()] == [
        ("gpg", "--batch", "--quiet", "--no-tty", "--no-autostart", "--no-symkey-cache", "--pinentry-mode", "loopback", "--homedir",
         f"{PRIVATE}/gnupg", "--passphrase-file", "/keys/pass", "--decrypt", "--output", f"{PRIVATE}/image.tar",
         str(tmp_path / "cache" / "images" / "sha256" / hexdigest))]
    argv = run_argv(runner)
    assert argv[argv.index(f"{PRIVATE}/image/rootfs") + 1] == "--"
    assert runner.image_config().origin == "http://127.0.0.1:9/image.tar.gpg (encrypted: read once decrypted)"


def test_a_url_needs_a_sha256_and_a_sif_is_refused(tmp_path: Path) -> None:
    runner = runner_for(cube(tmp_path, "DockerArchive", "http://127.0.0.1:9/image.tar"))
    with pytest.raises(UsageError) as info:
        run_argv(runner)
    assert info.value.lines()[0].startswith("DockerArchive http://127.0.0.1:9/image.tar has no sha256 to check the download against")
    (tmp_path / "cube" / "image.sif").write_bytes(b"sif")
    sif = runner_for(cube(tmp_path, "SingularityFile", "image.sif", f"image_sha256: {hashlib.sha256(b'sif').hexdigest()}\n"))
    with pytest.raises(UsageError) as info:
        sif.configure()
    assert info.value.lines() == ["a SingularityFile runs on singularity or apptainer, not on charliecloud. Hint: use --platform=singularity"]


def test_configure_unpacks_once_per_archive_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = cube(tmp_path, "DockerArchive", "image.tar")
    image_id = save_archive(root / "image.tar", [LOWER, UPPER])
    sha = hashlib.sha256((root / "image.tar").read_bytes()).hexdigest()
    runner = runner_for(root)
    runner.configure()
    assert "unpacking" in capsys.readouterr().err
    assert runner.image_identity() == {"ref": str(root / "image.tar"), "id": image_id, "repo_digests": [], "archive_sha256": sha}
    fp = runner.fingerprint(resolve_task(runner.cube, "infer"))
    assert (fp["image"], fp["image_id"], fp["archive_sha256"]) == (str(root / "image.tar"), image_id, sha)
    again = runner_for(root)
    again.configure()
    assert "unpacking" not in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "cache" / "charliecloud").iterdir()] == [f"archive-{sha}"]


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_an_encrypted_archive_is_unpacked_privately_and_deleted_at_release(tmp_path: Path) -> None:
    root = cube(tmp_path, "EncryptedDockerArchive", "image.tar.gpg")
    image_id = save_archive(tmp_path / "image.tar", [LOWER])
    (tmp_path / "key").write_text("secret words\n")
    gpg_encrypt(tmp_path / "image.tar", root / "image.tar.gpg", tmp_path / "key")
    runner = runner_for(root, RunOptions(decryption_key=str(tmp_path / "key")))
    runner.configure()
    (folder,) = (tmp_path / "tmp").iterdir()
    assert folder.name.startswith("cuberun-decrypted-") and (folder.stat().st_mode & 0o777) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["image", "owner.lock"]  # the decrypted tar is gone already
    assert runner.rootfs == folder / "image" / "rootfs" and (runner.rootfs / "bin" / "run").is_file()
    (runner.rootfs / "d").chmod(0o555)  # a read-only directory of the image does not stop the deletion
    assert runner.image_identity() == {"ref": str(root / "image.tar.gpg"), "id": image_id, "repo_digests": [], "private": True}
    fp = runner.fingerprint(resolve_task(runner.cube, "infer"))
    assert f"{PRIVATE}/image/rootfs" in fp["command"][0] and str(runner.rootfs) not in fp["command"][0]
    runner.release()
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "cache" / "charliecloud").exists()
