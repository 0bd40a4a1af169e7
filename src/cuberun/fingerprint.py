"""Content fingerprints of files and directories, with a size+mtime fast path.

A directory's fingerprint is the sha256 of its sorted (relative path, file sha256) list, so it
changes when any file is added, removed, renamed or edited. Known (size, mtime_ns, inode)
triples reuse the recorded hash instead of reading the file again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cuberun.valueclass import dataclass, field

CHUNK = 1 << 20
Stat = tuple[int, int, int]  # size, mtime_ns, inode


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
                    stat, digest = v
                    cache.entries[k] = ((int(stat[0]), int(stat[1]), int(stat[2])), str(digest))
                except (TypeError, ValueError, IndexError):
                    continue
        return cache


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


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
    """(relative path, absolute path) of every regular file under root, sorted; skips `exclude`
    absolute paths (and everything below them) and symlinked directories' loops."""
    excluded = {os.path.normpath(e) for e in exclude}
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in excluded)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if full in excluded:
                continue
            found.append((os.path.relpath(full, root), full))
    found.sort()
    return found


def fingerprint(path: str, cache: HashCache, exclude: Iterable[str] = ()) -> Fingerprint:
    """Fingerprint a file or a directory (recursively), reusing `cache` for unchanged files."""

    def one(full: str) -> tuple[str, int]:
        st = os.stat(full)
        key: Stat = (st.st_size, st.st_mtime_ns, st.st_ino)
        known = cache.entries.get(full)
        if known is not None and known[0] == key:
            return known[1], st.st_size
        digest = file_sha256(full)
        cache.entries[full] = (key, digest)
        cache.hashed_files += 1
        cache.hashed_bytes += st.st_size
        return digest, st.st_size

    if os.path.isfile(path):
        digest, size = one(path)
        return Fingerprint(path, "file", digest, 1, size, {os.path.basename(path): digest})
    if os.path.isdir(path):
        members: dict[str, str] = {}
        total = 0
        h = hashlib.sha256()
        for rel, full in _walk(path, exclude):
            try:
                digest, size = one(full)
            except OSError:
                continue  # vanished or unreadable (a socket, a dangling link)
            members[rel] = digest
            total += size
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest.encode() + b"\n")
        return Fingerprint(path, "directory", h.hexdigest(), len(members), total, members)
    return Fingerprint(path, "missing", "", 0, 0, {})


def diff_summary(old: dict[str, str], new: dict[str, str]) -> str:
    """'3 files: 1 added, 2 changed' style summary of two member maps."""
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    total = added + removed + changed
    parts = [f"{n} {w}" for n, w in ((added, "added"), (removed, "removed"), (changed, "changed")) if n]
    return f"{total} file{'s' if total != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")


def hash_files(paths: list[Path]) -> dict[str, str]:
    """sha256 of many files, in threads (hashlib releases the GIL on large buffers)."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip((str(p) for p in paths), pool.map(lambda p: file_sha256(str(p)), paths), strict=True))
