"""Root filesystems on disk: extracting an image's tar safely, removing a tree that holds
read-only directories (images do)."""

from __future__ import annotations

import os
import posixpath
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import CuberunError

if TYPE_CHECKING:
    import tarfile


class UnsafeArchive(CuberunError):
    pass


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _safe_members(tar: tarfile.TarFile, dest: str, skipped: list[str], done: Callable[[int], None] | None = None) -> Iterator[tarfile.TarInfo]:
    """Members that stay inside `dest`, checked one at a time as they are extracted (so that a
    symlink extracted earlier cannot redirect a later member outside). `done` is told the bytes
    of the archive read so far, member by member."""
    real_dest = os.path.realpath(dest)
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
        if member.islnk():
            target = posixpath.normpath(member.linkname.lstrip("/"))
            if target == ".." or target.startswith("../") or not _inside(os.path.realpath(os.path.join(real_dest, target)), real_dest):
                raise UnsafeArchive(f"the image archive has a hard link to outside the image: {member.name!r} -> {member.linkname!r}")
            member.linkname = target
        target_path = os.path.join(real_dest, name)
        if os.path.islink(target_path) or (os.path.lexists(target_path) and not (os.path.isdir(target_path) and member.isdir())):
            os.unlink(target_path)  # never write through a link (or over a file) extracted earlier
        member.name = name
        yield member


def safe_extract(tar_path: Path, dest: Path, done: Callable[[int], None] | None = None) -> list[str]:
    """Extract a root filesystem tar (docker export) into `dest`; returns the skipped members.
    Symbolic links may point anywhere (they are resolved inside the container); everything
    written goes below `dest`. `done` (progress) is told the bytes of the tar read so far."""
    import tarfile

    skipped: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "r:*") as tar:
        kwargs: dict[str, Any] = {"numeric_owner": True}
        if hasattr(tarfile, "fully_trusted_filter"):  # 3.12+ (and backports): our own checks apply
            kwargs["filter"] = "fully_trusted"
        tar.extractall(str(dest), members=_safe_members(tar, str(dest), skipped, done), **kwargs)
    return skipped


def rmtree(path: Path) -> None:
    """Remove a tree that may contain read-only directories (images do)."""
    import shutil

    def fix(func: Any, target: str, _exc: Any) -> None:
        try:
            parent = os.path.dirname(target)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            func(target)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=fix)
        else:
            shutil.rmtree(path, onerror=fix)
