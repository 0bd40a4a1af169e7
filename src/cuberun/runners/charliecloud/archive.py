"""The charliecloud runner's image files: a container_config.yaml `DockerArchive` or
`EncryptedDockerArchive` (a `docker save` / `podman save` tar from a path, or from an http(s)
URL checked by its sha256: imagefetch.py) unpacked into a directory image without any Docker
engine. The archive's manifest.json names the image config and the layers; the layers are
extracted one over the other (rootfs.extract_layer: nothing outside the image, whiteouts
applied) and the config's Entrypoint, Cmd, WorkingDir and Env go into image.json, with the image
id (the sha256 of the config, as the engines give it) and the archive's sha256.

- DockerArchive: the directory image is cached by the archive's sha256
  (`<images_dir>/archive-<sha256>/`, rootfs/ and image.json): a second run unpacks nothing. A
  local archive without a given sha256 is hashed on each run to find it.
- EncryptedDockerArchive: decrypted (decrypt.py) into a private folder (mode 0700, in $TMPDIR),
  unpacked into its `image/`, and the decrypted tar deleted at once; the folder, and so the plain
  image, is deleted when the invocation ends (Runner.release: success, failure or Ctrl-C; at
  the latest when cuberun exits). It is never cached.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from cuberun import imagefetch
from cuberun.errors import BackendError, UsageError
from cuberun.runners.base import Step
from cuberun.runners.charliecloud.image import FORMAT, ROOTFS, ImageConfig
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    import tarfile

    from cuberun.runners.charliecloud.convert import CharliecloudConvert
    from cuberun.runners.charliecloud.image import CharliecloudImage

CONVERTER = "archive"
MAX_JSON = 1 << 20  # manifest.json and the image config
PRIVATE = "<private temporary folder>"
MOUNT_DIRS = ("dev", "proc", "sys", "tmp", "etc")
MOUNT_FILES = ("passwd", "group", "hosts", "resolv.conf")
CONFIG_KEYS = ("Entrypoint", "Cmd", "WorkingDir", "Env", "User")


@dataclass(frozen=True)
class ArchiveImage:
    """What a `docker save` archive holds: the image id, its run configuration, its layers."""

    image_id: str  # sha256:<hex of the config file>
    config: dict[str, Any]  # the config's "config": Entrypoint, Cmd, WorkingDir, Env, User
    created: str | None
    layers: tuple[str, ...]  # the archive members of the layers, lowest first


# -- reading and unpacking an archive (no runner) -----------------------------------------------------
def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    return {posixpath.normpath(m.name.lstrip("/")): m for m in tar.getmembers()}


def _json(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> tuple[Any, bytes]:
    member = members.get(posixpath.normpath(name.lstrip("/")))
    if member is None or not (member.isfile() or member.issym() or member.islnk()):
        raise BackendError(f"the archive has no {name}", "give an archive written by `docker save` or `podman save`")
    stream = tar.extractfile(member)
    data = stream.read(MAX_JSON + 1) if stream is not None else b""
    if len(data) > MAX_JSON:
        raise BackendError(f"{name} in the archive is larger than {MAX_JSON} bytes", "give an archive written by `docker save` or `podman save`")
    try:
        return json.loads(data), data
    except ValueError as exc:
        raise BackendError(f"{name} in the archive is not JSON: {exc}", "give an archive written by `docker save` or `podman save`") from None


def read_image(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo] | None = None) -> ArchiveImage:
    """The image of an open `docker save` archive (exactly one image), from manifest.json and its config."""
    members = _members(tar) if members is None else members
    manifest, _ = _json(tar, members, "manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise BackendError("manifest.json of the archive must describe exactly one image", "save one image per archive")
    entry = manifest[0]
    layers = entry.get("Layers")
    if not isinstance(entry.get("Config"), str) or not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise BackendError("manifest.json of the archive names no image config or layers", "give an archive written by `docker save` or `podman save`")
    config, raw = _json(tar, members, entry["Config"])
    if not isinstance(config, dict):
        raise BackendError("the image config in the archive is not a JSON object", "give an archive written by `docker save` or `podman save`")
    run = config.get("config")
    run = run if isinstance(run, dict) else {}
    created = config.get("created")
    return ArchiveImage(f"sha256:{hashlib.sha256(raw).hexdigest()}", {k: run.get(k) for k in CONFIG_KEYS},
                        created if isinstance(created, str) else None, tuple(layers))


def unpack(path: Path, rootfs: Path, done: Callable[[int], None] | None = None) -> tuple[ArchiveImage, list[str]]:
    """Unpack the `docker save` archive `path` into the directory `rootfs` (layer over layer);
    returns its image and the members skipped (device files). `done` is told the bytes read."""
    import tarfile

    from cuberun.runners import zstdlayer
    from cuberun.runners.rootfs import UnsafeArchive, extract_layer

    try:
        with tarfile.open(path, "r:*") as tar:
            members = _members(tar)
            image = read_image(tar, members)
            skipped: list[str] = []
            for name in image.layers:
                member = members.get(posixpath.normpath(name.lstrip("/")))
                stream = tar.extractfile(member) if member is not None else None
                if stream is None or member is None:
                    raise BackendError(f"the archive has no layer {name} (manifest.json names it)", "the archive is incomplete: save it again")
                progress = None if done is None else _offset(done, member.offset_data)
                if zstdlayer.sniff(stream):  # by its first bytes: a layer's name says nothing of its compression
                    rootfs.mkdir(parents=True, exist_ok=True)
                    with zstdlayer.decompressed(stream, rootfs.parent, f"layer {name} of the image archive {path}", progress) as plain:
                        extract_layer(cast("IO[bytes]", plain), rootfs, skipped)  # read() is all a streamed tar uses
                else:
                    extract_layer(stream, rootfs, skipped, progress)
            mount_points(rootfs)
    except (tarfile.TarError, OSError, EOFError, KeyError, UnsafeArchive) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise BackendError(f"cannot unpack the image archive {path}: {why}",
                           "give an archive written by `docker save` or `podman save`; check the free space") from None
    return image, skipped


def _offset(done: Callable[[int], None], base: int) -> Callable[[int], None]:
    """`done` told the bytes read of the archive, from the bytes read of a layer starting at `base`."""
    return lambda n: done(base + n)


def mount_points(rootfs: Path) -> None:
    """What ch-run binds onto and a saved image may lack (a container engine makes them in its
    containers): the directories /dev /proc /sys /tmp and the files /etc/passwd, /etc/group,
    /etc/hosts, /etc/resolv.conf, created empty when missing (never through a link)."""
    import os

    for name in MOUNT_DIRS:
        path = rootfs / name
        if not os.path.lexists(path):
            path.mkdir(mode=0o755)
    etc = rootfs / "etc"
    if not etc.is_symlink() and etc.is_dir():
        for name in MOUNT_FILES:
            path = etc / name
            if not os.path.lexists(path):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))


# -- the runner's side -----------------------------------------------------------------------------
def source(runner: CharliecloudImage) -> imagefetch.ImageSource | None:
    """The archive of a container_config.yaml cube (none when an image_dir is given)."""
    if runner.user_image is not None:
        return None
    src = imagefetch.source_of(runner.cube)
    if src is not None:
        return src
    if runner.cube.format == "container_config":
        tar = runner.docker_section().get("tar_file")
        if isinstance(tar, str) and tar:
            return imagefetch.ImageSource("DockerArchive", tar, None, False)
    return None


def digest(runner: CharliecloudImage, src: imagefetch.ImageSource) -> str:
    """The archive's sha256: the one given (checked at configure), else the local file's (hashed once per runner)."""
    if runner._archive_digest is None:
        given = imagefetch.expected_sha256(src, runner.options.image_sha256)
        if given is None and src.is_url:
            imagefetch.local_file(src, runner.options.image_sha256)  # the one-line error: a URL needs a sha256
        runner._archive_digest = given or imagefetch.sha256_of(Path(src.location))
    return runner._archive_digest


def store(runner: CharliecloudImage, src: imagefetch.ImageSource, base: Path) -> Path:
    if src.encrypted:
        return runner._private_store or Path(PRIVATE) / "image"
    return base / f"archive-{digest(runner, src)}"


def steps(runner: CharliecloudImage, src: imagefetch.ImageSource) -> list[Step]:
    """What configure runs (the --dry-run): the decryption of an encrypted archive; the download
    and the unpacking happen in cuberun itself."""
    if not src.encrypted:
        return []
    from cuberun import decrypt

    file = str(imagefetch.cached_path(src.sha256)) if src.is_url and src.sha256 else src.location
    key = Path(runner.options.decryption_key or "KEYFILE")
    return [Step(tuple(decrypt.gpg_argv(Path(file), key, Path(f"{PRIVATE}/image.tar"), Path(f"{PRIVATE}/gnupg"))), "decrypt")]


def image_config(runner: CharliecloudImage, src: imagefetch.ImageSource) -> ImageConfig:
    """The run configuration before the archive is unpacked (--dry-run): read from a plain
    archive that is here (a path, or a URL's cached file); unknown for an encrypted one."""
    import tarfile

    if src.encrypted:
        return ImageConfig(origin=f"{src.location} (encrypted: read once decrypted)")
    file = imagefetch.cached(src.sha256) if src.is_url else Path(src.location)
    if file is None:
        return ImageConfig(origin=f"{src.location} (read once downloaded)")
    try:
        with tarfile.open(file, "r:*") as tar:
            image = read_image(tar)
    except (tarfile.TarError, OSError, EOFError, BackendError):
        return ImageConfig(origin=f"{file} (unreadable)")
    return ImageConfig.from_docker(image.config, f"{file} (image config)")


def configure(runner: CharliecloudConvert, src: imagefetch.ImageSource) -> None:
    """Make the directory image of the archive ready (see the module doc). Quiet when cached."""
    if not src.docker:
        raise UsageError(f"a {src.kind} runs on singularity or apptainer, not on {runner.name}", "use --platform=singularity")
    file = imagefetch.local_file(src, runner.options.image_sha256)  # downloaded (once) and checked
    if src.encrypted:
        from cuberun import decrypt
        from cuberun.runners import imagefile

        key = decrypt.key_file(runner.options.decryption_key, f"{src.kind} {src.location}")
        plain = imagefile.hold_decrypted(runner, file, key, "image.tar")  # deleted at release
        runner._private_store = plain.parent / "image"
        try:
            _unpack_into(runner, src, plain, None, "decrypted: a private copy, deleted after the run")
        finally:
            plain.unlink(missing_ok=True)  # the plain archive goes at once, the plain image at release
        return
    sha = digest(runner, src)

    def current() -> bool:
        meta = runner.stored_metadata()
        return meta is not None and meta.get("archive_sha256") == sha

    if current():
        return
    with runner._store_lock():
        if not current():  # another cuberun may have unpacked it meanwhile
            _unpack_into(runner, src, file, sha, "not unpacked yet")


def _unpack_into(runner: CharliecloudConvert, src: imagefetch.ImageSource, file: Path, sha: str | None, why: str) -> None:
    from cuberun import progress
    from cuberun.runners.rootfs import rmtree

    target = runner.store
    target.mkdir(parents=True, exist_ok=True)
    new = target / f".{ROOTFS}.new-{runner._token}"
    shown = f"the decrypted {src.location}" if src.encrypted else src.location
    start = time.monotonic()
    print(f"cuberun: unpacking {shown} into a Charliecloud directory image ({why}): {target / ROOTFS}", file=sys.stderr, flush=True)
    try:
        with progress.activity(f"unpacking {Path(src.location).name} for Charliecloud", total=file.stat().st_size, unit="bytes") as act:
            image, skipped = unpack(file, new, done=lambda n: act.update(done=n))
        runner._commit(new, {
            "format": FORMAT,
            "image": src.location,
            "id": image.image_id,
            "archive_sha256": sha,
            "repo_digests": [],
            "created": image.created,
            "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "converter": CONVERTER,
            "config": image.config,
            "skipped": skipped[:50],
        })
    finally:
        rmtree(new)
    print(f"cuberun: unpacked {image.image_id[:19]} in {time.monotonic() - start:.1f} s", file=sys.stderr)


def fingerprint_command(argv: list[str], rootfs: Path) -> list[str]:
    """The ch-run command of an encrypted archive's image for the fingerprint: its private folder
    (new on each run) written as the placeholder, so that an unchanged task stays up to date."""
    private = str(rootfs)
    return [f"{PRIVATE}/image/{ROOTFS}" if a == private else a for a in argv]

