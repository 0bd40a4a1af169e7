"""Content fingerprints of files and directories, with a size+mtime fast path.

A directory's fingerprint is the sha256 of its sorted (relative path, file sha256) list, so it
changes when any file is added, removed, renamed or edited. Known (size, mtime_ns, inode)
triples reuse the recorded hash instead of reading the file again.

Only regular files are ever opened (and read no further than the size they had when opened):
a FIFO, socket or device — also behind a symlink — is reported as `NotRegular`, never read, so
hashing cannot block or run forever. Symlinked directories are followed, loops are not.
Hashing that takes more than a couple of seconds shows its progress (see progress.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from cuberun.digests import sha256
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.progress import Progress

CHUNK = 1 << 20
Stat = tuple[int, int, int]  # size, mtime_ns, inode


class NotRegular(Exception):
    """A path that is not a regular file where content was expected (never opened)."""

    def __init__(self, path: str, kind: str, target: str | None = None) -> None:
        self.path = path
        self.kind = kind  # "a FIFO", "a socket", "a character device", ...
        self.target = target  # where a symlink pointed
        super().__init__(self.describe())

    def describe(self) -> str:
        via = f" (a link to {self.target})" if self.target else ""
        return f"{self.path}{via} is {self.kind}, not a regular file"


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def _not_regular(path: str, mode: int) -> NotRegular:
    target = None
    try:
        if os.path.islink(path):
            target = os.path.realpath(path)
    except OSError:
        pass
    return NotRegular(path, kind_of(mode), target)


@dataclass
class HashCache:
    """path -> (stat, sha256); loaded from and saved into the task state."""

    entries: dict[str, tuple[Stat, str]] = field(default_factory=dict)
    hashed_files: int = 0
    hashed_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: [list(v[0]), v[1]] for k, v in self.entries.items()}

    @classmethod
    def from_json(cls, data: Any) -> HashCache:
        cache = cls()
        if isinstance(data, dict):
            for k, v in data.items():
                try:
                    stat_, digest = v
                    cache.entries[k] = ((int(stat_[0]), int(stat_[1]), int(stat_[2])), str(digest))
                except (TypeError, ValueError, IndexError):
                    continue
        return cache


def file_sha256(path: str, progress: Progress | None = None) -> str:
    """sha256 of a regular file's content, up to the size it had when opened. Raises
    NotRegular (without blocking: the open is non-blocking) for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        left = st.st_size
        h = sha256(size=left)
        buf = bytearray(min(CHUNK, left) or 1)
        view = memoryview(buf)
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            while left > 0:
                n = fh.readinto(view[: min(CHUNK, left)] if left < CHUNK else buf)
                if not n:
                    break
                h.update(view[:n])
                left -= n
                if progress is not None:
                    progress.add(n)
    finally:
        os.close(fd)
    return str(h.hexdigest())


@dataclass(frozen=True)
class Fingerprint:
    path: str
    type: str  # "file", "directory" or "missing"
    sha256: str
    files: int
    bytes: int
    members: dict[str, str]  # relative path -> sha256 (directories; the file itself for files)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "sha256": self.sha256, "files": self.files, "bytes": self.bytes}


def _walk(root: str, exclude: Iterable[str]) -> list[tuple[str, str]]:
    """(relative path, absolute path) of every entry under root that is not a directory (regular
    files, links to them, and special files for the caller to judge), sorted; skips `exclude`
    absolute paths (and everything below them). Symlinked directories are followed once: a link
    back to a directory being walked (a loop) is skipped."""
    excluded = {os.path.normpath(e) for e in exclude}
    found: list[tuple[str, str]] = []
    try:
        top = os.stat(root)
    except OSError:
        return found
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [(root, "", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        path, rel, ancestors = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue  # vanished or unreadable
        for entry in entries:
            full = entry.path
            if full in excluded:
                continue
            sub = entry.name if not rel else f"{rel}/{entry.name}"
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if not is_dir:
                found.append((sub, full))
                continue
            if entry.is_symlink():
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    continue  # a loop
            else:
                st = entry.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
            stack.append((full, sub, ancestors | {key}))
    found.sort()
    return found


def fingerprint(path: str, cache: HashCache, exclude: Iterable[str] = (), *, special: str = "error", label: str | None = None) -> Fingerprint:
    """Fingerprint a file or a directory (recursively), reusing `cache` for unchanged files.
    `special`: "error" raises NotRegular for a FIFO, socket or device (top level or inside);
    "skip" leaves it out. `label` names the progress line shown when hashing takes long."""
    from cuberun.progress import Progress

    try:
        top = os.stat(path)
    except OSError:
        return Fingerprint(path, "missing", "", 0, 0, {})
    if stat.S_ISDIR(top.st_mode):
        items = _walk(path, exclude)
    elif stat.S_ISREG(top.st_mode):
        items = [(os.path.basename(path), path)]
    elif special == "error":
        raise _not_regular(path, top.st_mode)
    else:
        return Fingerprint(path, "missing", "", 0, 0, {})
    known: list[tuple[str, str, os.stat_result, str | None]] = []
    todo = 0
    for rel, full in items:
        try:
            st = top if full == path else os.stat(full)
        except OSError:
            continue  # vanished, or a dangling link
        if not stat.S_ISREG(st.st_mode):
            if special == "error":
                raise _not_regular(full, st.st_mode)
            continue
        entry = cache.entries.get(full)
        digest = entry[1] if entry is not None and entry[0] == (st.st_size, st.st_mtime_ns, st.st_ino) else None
        if digest is None:
            todo += st.st_size
        known.append((rel, full, st, digest))
    progress = Progress(label or path, todo) if todo else None
    members: dict[str, str] = {}
    total = 0
    h = sha256(size=sum(len(rel) + 66 for rel, _, _, _ in known))  # the member lines below
    try:
        for rel, full, st, digest in known:
            if digest is None:
                try:
                    digest = file_sha256(full, progress)
                except FileNotFoundError:
                    continue  # vanished since the walk
                except NotRegular:
                    if special == "error":
                        raise
                    continue
                cache.entries[full] = ((st.st_size, st.st_mtime_ns, st.st_ino), digest)
                cache.hashed_files += 1
                cache.hashed_bytes += st.st_size
            members[rel] = digest
            total += st.st_size
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest.encode() + b"\n")
    finally:
        if progress is not None:
            progress.close()
    if not stat.S_ISDIR(top.st_mode):
        digest = next(iter(members.values()), "")
        return Fingerprint(path, "file", digest, len(members), total, members)
    return Fingerprint(path, "directory", h.hexdigest(), len(members), total, members)


def diff_summary(old: dict[str, str], new: dict[str, str]) -> str:
    """'3 files: 1 added, 2 changed' style summary of two member maps."""
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    total = added + removed + changed
    parts = [f"{n} {w}" for n, w in ((added, "added"), (removed, "removed"), (changed, "changed")) if n]
    return f"{total} file{'s' if total != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")
