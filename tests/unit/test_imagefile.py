"""Archives and SIFs of container_config.yaml from URLs, with a sha256, or GnuPG-encrypted: the
loader's one-line errors, the dry-run steps, the download cache (a loopback HTTP server) and the
decryption (the real gpg)."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import pytest

from cuberun import decrypt, imagefetch
from cuberun.errors import BackendError, SpecError, UsageError
from cuberun.execute import make_runner
from cuberun.runners.base import RunOptions
from cuberun.spec.load import load_cube
from tests.conftest import gpg_encrypt

HEX = "ab" * 32


@pytest.fixture(autouse=True)
def _isolated(image_home: Path) -> None:
    """Settings, cache and TMPDIR of the test's own (tests/conftest.py)."""


def cube_dir(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "cube"
    root.mkdir(exist_ok=True)
    (root / "container_config.yaml").write_text(textwrap.dedent(text).lstrip())
    return root


def one_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_cube(cube_dir(tmp_path, text))
    (line,) = info.value.lines()
    return line.removeprefix(str(tmp_path / "cube" / "container_config.yaml") + ":")


@pytest.mark.parametrize(("text", "expected"), [
    ("container_type: DockerArchive\nimage: http://h/x.tar\nimage_sha256: nothex\ntasks: {t: {}}\n",
     "3:15: image_sha256: 'nothex' is not a sha256. Hint: write 64 hex digits, optionally prefixed with sha256:"),
    (f"container_type: DockerImage\nimage: a/b:1\nimage_sha256: {HEX}\ntasks: {{t: {{}}}}\n",
     "3:15: image_sha256: a DockerImage is pinned by its registry digest, not by image_sha256. "
     "Hint: write image: NAME@sha256:<digest>, or remove image_sha256"),
    ("container_type: DockerArchive\nimage: http://h/x.tar#sha256=12\ntasks: {t: {}}\n",
     "2:8: image: '12' after #sha256= is not a sha256. Hint: write 64 hex digits after #sha256="),
    (f"container_type: SingularityFile\nimage: https://h/x.sif#sha256={'cd' * 32}\nimage_sha256: {HEX}\ntasks: {{t: {{}}}}\n",
     f"2:8: image: #sha256={'cd' * 32} differs from image_sha256 {HEX}. Hint: give the digest once"),
    ("container_type: EncryptedDockerArchive\nimage: ftp://h/x.tar.gpg\ntasks: {t: {}}\n",
     "2:8: image: 'ftp' URLs are not supported. Hint: give an http(s) URL or a local path"),
])
def test_loader_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, text) == expected


def test_missing_encrypted_file(tmp_path: Path) -> None:
    line = one_error(tmp_path, "container_type: EncryptedSingularityFile\nimage: img.sif.gpg\ntasks: {t: {}}\n")
    assert line == (f"2:8: image: the EncryptedSingularityFile {tmp_path / 'cube' / 'img.sif.gpg'} does not exist. "
                    "Hint: give the path of the file, relative to the cube's directory")


def test_url_source_and_dry_run_steps(tmp_path: Path) -> None:
    root = cube_dir(tmp_path, f"container_type: EncryptedDockerArchive\nimage: http://127.0.0.1:9/img.tar.gpg#sha256={HEX}\n"
                              "tasks: {t: {run_args: {command: [echo]}}}\n")
    cube = load_cube(root)
    assert cube.config["image_source"] == {"kind": "EncryptedDockerArchive", "location": "http://127.0.0.1:9/img.tar.gpg",
                                           "sha256": HEX, "encrypted": True}
    runner = make_runner(cube, None, RunOptions(decryption_key="/keys/pass"))
    steps = [s.argv for s in runner.configure_steps()]
    cached = str(tmp_path / "cache" / "images" / "sha256" / HEX)
    assert steps == [
        ("gpg", "--batch", "--quiet", "--no-tty", "--no-autostart", "--no-symkey-cache", "--pinentry-mode", "loopback", "--homedir",
         "<private temporary folder>/gnupg", "--passphrase-file", "/keys/pass", "--decrypt", "--output",
         "<private temporary folder>/image.tar", cached),
        ("docker", "load", "--input", "<private temporary folder>/image.tar"),
    ]


def test_url_needs_a_sha256_and_the_option_must_agree(tmp_path: Path) -> None:
    src = imagefetch.ImageSource("DockerArchive", "http://127.0.0.1:9/x.tar", None, False)
    with pytest.raises(UsageError) as info:
        imagefetch.local_file(src)
    assert info.value.lines() == ["DockerArchive http://127.0.0.1:9/x.tar has no sha256 to check the download against. Hint: add "
                                  "image_sha256: <hex> to container_config.yaml, append #sha256=<hex> to the URL, or pass --image-sha256"]
    with pytest.raises(UsageError) as info:
        imagefetch.expected_sha256(imagefetch.ImageSource("DockerArchive", "/x.tar", HEX, False), "cd" * 32)
    assert info.value.lines()[0].startswith(f"--image-sha256 {'cd' * 32} differs from the cube's image_sha256 {HEX}")


def test_download_is_cached_by_digest_and_a_mismatch_leaves_nothing(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, served, requests = server
    data = b"image bytes\n" * 1000
    (served / "img.sif").write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    url = f"{base}/img.sif"
    with pytest.raises(BackendError) as info:
        imagefetch.local_file(imagefetch.ImageSource("SingularityFile", url, HEX, False))
    assert info.value.lines() == [f"sha256 mismatch for {url}: expected {HEX}, got {good}. "
                                  "Hint: the server sent another file than the digest names; nothing was cached"]
    cache = tmp_path / "cache" / "images"
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    path = imagefetch.local_file(imagefetch.ImageSource("SingularityFile", url, None, False), f"sha256:{good.upper()}")
    assert path == cache / "sha256" / good and path.read_bytes() == data
    assert imagefetch.local_file(imagefetch.ImageSource("SingularityFile", url, good, False)) == path
    assert requests == ["/img.sif", "/img.sif"]  # the third one came from the cache
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [good]


def test_download_is_bounded(tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, served, _ = server
    (served / "big").write_bytes(b"x" * 5000)
    with pytest.raises(BackendError) as info:
        imagefetch.download(f"{base}/big", HEX, max_bytes=1000)
    assert info.value.lines()[0].startswith(f"{base}/big is 5000 bytes, more than the 1000 a download may have")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_local_file_is_checked(tmp_path: Path) -> None:
    (tmp_path / "img.sif").write_bytes(b"sif")
    digest = hashlib.sha256(b"sif").hexdigest()
    assert imagefetch.local_file(imagefetch.ImageSource("SingularityFile", str(tmp_path / "img.sif"), digest, False)) == tmp_path / "img.sif"
    with pytest.raises(BackendError) as info:
        imagefetch.local_file(imagefetch.ImageSource("SingularityFile", str(tmp_path / "img.sif"), HEX, False))
    assert info.value.lines()[0].startswith(f"sha256 mismatch for {tmp_path / 'img.sif'}: expected {HEX}, got {digest}")


def encrypt(tmp_path: Path, data: bytes, passphrase: str) -> Path:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(data)
    (tmp_path / "enc-pass").write_text(passphrase + "\n")
    out = tmp_path / "image.gpg"
    gpg_encrypt(plain, out, tmp_path / "enc-pass")
    plain.unlink()
    return out


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_decryption_right_and_wrong_passphrase(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, b"the plain image", "right one")
    (tmp_path / "good").write_text("right one\n")
    (tmp_path / "bad").write_text("wrong\n")
    with decrypt.decrypted(enc, tmp_path / "good", "image.sif") as plain:
        assert plain.read_bytes() == b"the plain image"
        assert (plain.parent.stat().st_mode & 0o777) == 0o700
        assert plain.stat().st_mtime_ns == enc.stat().st_mtime_ns
    assert not plain.parent.exists()
    with pytest.raises(BackendError) as info:
        with decrypt.decrypted(enc, tmp_path / "bad", "image.sif"):
            pytest.fail("decrypted with the wrong passphrase")
    (line,) = info.value.lines()
    assert line == (f"cannot decrypt {enc} with the passphrase in {tmp_path / 'bad'}: gpg: decryption failed: Bad session key. "
                    "Hint: check that the passphrase file holds the passphrase the image was encrypted with")
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing decrypted left


def test_decryption_key_is_required_and_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        decrypt.key_file(None, "EncryptedDockerArchive /x.gpg")
    assert info.value.lines() == ["EncryptedDockerArchive /x.gpg is encrypted and no passphrase file was given. "
                                  "Hint: pass --decryption-key=FILE (api: decryption_key=FILE), a file holding the passphrase"]
    with pytest.raises(UsageError) as info:
        decrypt.key_file(tmp_path / "nope", "x")
    assert info.value.lines()[0].startswith(f"the passphrase file {tmp_path / 'nope'} does not exist")
