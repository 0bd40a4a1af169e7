"""Root filesystems on disk: extracting an image's tar (a `docker export`, or the layers of a
`docker save` one over the other) safely, removing a tree that holds read-only directories (images do)."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cuberun.errors import CuberunError
from cuberun.safeio import rmtree as rmtree  # re-exported: images are trees with read-only directories

if TYPE_CHECKING:
    import tarfile


WHITEOUT = ".wh."  # an image layer's deletion marker of the file it names
OPAQUE = ".wh..wh..opq"  # an image layer's marker of a directory that hides what earlier layers put in it
MAX_LAYER_BYTES = 64 << 30  # the uncompressed bytes one image layer may have (a compression bomb is refused)


class UnsafeArchive(CuberunError):
    pass


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _safe_members(tar: tarfile.TarFile, dest: str, skipped: list[str], done: Callable[[int], None] | None = None,
                  layer: set[str] | None = None) -> Iterator[tarfile.TarInfo]:
    """Members that stay inside `dest`, checked one at a time as they are extracted (so that a
    symlink extracted earlier cannot redirect a later member outside). `done` is told the bytes
    of the archive read so far, member by member. With `layer` (the names this layer wrote so
    far, filled here), the tar is an image layer over what is in `dest` already: its whiteouts
    are applied (never extracted) and directories of earlier layers are made writable."""
    real_dest = os.path.realpath(dest)
    writable: set[str] = set()
    for member in tar:
        if done is not None:
            done(tar.offset)
        name = posixpath.normpath(member.name.lstrip("/"))
        if name in ("", "."):
            continue
        if name == ".." or name.startswith("../") or os.path.isabs(name):
            raise UnsafeArchive(f"the image archive has a member outside the image: {member.name!r}")
        if member.ischr() or member.isblk():
            skipped.append(name)
            continue
        parent = os.path.realpath(os.path.join(real_dest, posixpath.dirname(name)))
        if not _inside(parent, real_dest):
            raise UnsafeArchive(f"the image archive writes {member.name!r} through a link that leaves the image")
        if layer is not None:
            if member.offset_data + member.size > MAX_LAYER_BYTES:
                raise UnsafeArchive(f"an image layer is larger than {MAX_LAYER_BYTES} bytes uncompressed (at {member.name!r})")
            if _whiteout(name, parent, layer):
                continue
            _remember(name, layer)
            if parent not in writable:
                writable.add(parent)
                if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
                    os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if member.islnk():
            target = posixpath.normpath(member.linkname.lstrip("/"))
            if target == ".." or target.startswith("../") or not _inside(os.path.realpath(os.path.join(real_dest, target)), real_dest):
                raise UnsafeArchive(f"the image archive has a hard link to outside the image: {member.name!r} -> {member.linkname!r}")
            member.linkname = target
        target_path = os.path.join(real_dest, name)
        if os.path.islink(target_path) or (os.path.lexists(target_path) and not (os.path.isdir(target_path) and member.isdir())):
            if os.path.isdir(target_path) and not os.path.islink(target_path):
                rmtree(Path(target_path))  # a later layer's file in place of a directory
            else:
                os.unlink(target_path)  # never write through a link (or over a file) extracted earlier
        member.name = name
        yield member


def _remember(name: str, layer: set[str]) -> None:
    """`name` and its parent directories were written by this layer (an opaque directory keeps them)."""
    while name and name not in layer:
        layer.add(name)
        name = posixpath.dirname(name)


def _whiteout(name: str, parent: str, layer: set[str]) -> bool:
    """Apply `name` when it is a whiteout (True): `.wh.NAME` deletes NAME of the earlier layers,
    `.wh..wh..opq` empties its directory of what earlier layers put there."""
    base = posixpath.basename(name)
    if not base.startswith(WHITEOUT):
        return False
    folder = posixpath.dirname(name)
    if base == OPAQUE:
        if os.path.isdir(parent) and not os.path.islink(parent):
            for child in os.listdir(parent):
                if posixpath.join(folder, child) not in layer:
                    rmtree(Path(parent) / child)
        return True
    victim = base[len(WHITEOUT):]
    if victim in ("", ".", "..") or "/" in victim:
        raise UnsafeArchive(f"the image layer has a whiteout of no file: {name!r}")
    path = Path(parent) / victim
    if os.path.lexists(path):
        rmtree(path)
    return True


def extract_layer(fileobj: IO[bytes], dest: Path, skipped: list[str], done: Callable[[int], None] | None = None) -> None:
    """Extract one layer of an image (a tar stream, compressed or not) over the layers already
    in `dest`, with the checks of `safe_extract` and the layer's whiteouts applied. `done` is
    told the bytes of the (uncompressed) layer read so far."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        tar.extractall(str(dest), members=_safe_members(tar, str(dest), skipped, done, layer=set()), **_extract_kwargs())


def _extract_kwargs() -> dict[str, Any]:
    import tarfile

    kwargs: dict[str, Any] = {"numeric_owner": True}
    if hasattr(tarfile, "fully_trusted_filter"):  # 3.12+ (and backports): our own checks apply
        kwargs["filter"] = "fully_trusted"
    return kwargs


def safe_extract(tar_path: Path, dest: Path, done: Callable[[int], None] | None = None) -> list[str]:
    """Extract a root filesystem tar (docker export) into `dest`; returns the skipped members.
    Symbolic links may point anywhere (they are resolved inside the container); everything
    written goes below `dest`. `done` (progress) is told the bytes of the tar read so far."""
    import tarfile

    skipped: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "r:*") as tar:
        tar.extractall(str(dest), members=_safe_members(tar, str(dest), skipped, done), **_extract_kwargs())
    return skipped
