from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cuberun.fingerprint import HashCache, diff_summary, fingerprint
from tests.conftest import write_tree


def test_file_and_directory_fingerprints(tmp_path: Path) -> None:
    write_tree(tmp_path, {"d/a.txt": "a", "d/sub/b.txt": "b", "d/skip/c.txt": "c"})
    cache = HashCache()
    fp = fingerprint(str(tmp_path / "d" / "a.txt"), cache)
    assert fp.sha256 == hashlib.sha256(b"a").hexdigest() and fp.type == "file"
    d = fingerprint(str(tmp_path / "d"), cache, exclude=[str(tmp_path / "d" / "skip")])
    assert (d.type, d.files, d.bytes) == ("directory", 2, 2)
    assert sorted(d.members) == ["a.txt", "sub/b.txt"]
    assert fingerprint(str(tmp_path / "nope"), cache).type == "missing"


def test_fast_path_reuses_hashes_and_detects_edits(tmp_path: Path) -> None:
    write_tree(tmp_path, {"d/a.txt": "a" * 1000, "d/b.txt": "b"})
    cache = HashCache()
    first = fingerprint(str(tmp_path / "d"), cache)
    assert cache.hashed_files == 2
    restored = HashCache.from_json(cache.to_json())
    again = fingerprint(str(tmp_path / "d"), restored)
    assert restored.hashed_files == 0 and again.sha256 == first.sha256
    path = tmp_path / "d" / "b.txt"
    path.write_text("B")
    os.utime(path, ns=(1, 1))  # a different mtime: the stat check sees it
    changed = fingerprint(str(tmp_path / "d"), restored)
    assert restored.hashed_files == 1 and changed.sha256 != first.sha256
    assert diff_summary(first.members, changed.members) == "1 file (1 changed)"


def test_diff_summary() -> None:
    assert diff_summary({"a": "1", "b": "2"}, {"b": "3", "c": "4", "d": "5"}) == "4 files (2 added, 1 removed, 1 changed)"


def test_special_files_are_never_opened(tmp_path: Path) -> None:
    import pytest

    from cuberun.fingerprint import NotRegular

    write_tree(tmp_path, {"d/a.txt": "a"})
    os.mkfifo(tmp_path / "d" / "pipe")  # opening it for reading would block forever
    with pytest.raises(NotRegular) as info:
        fingerprint(str(tmp_path / "d"), HashCache())
    assert info.value.describe() == f"{tmp_path / 'd' / 'pipe'} is a FIFO, not a regular file"
    assert sorted(fingerprint(str(tmp_path / "d"), HashCache(), special="skip").members) == ["a.txt"]
    (tmp_path / "d" / "pipe").unlink()
    (tmp_path / "d" / "zero").symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(NotRegular, match="a link to /dev/zero"):
        fingerprint(str(tmp_path / "d"), HashCache())
    with pytest.raises(NotRegular, match="is a character device"):
        fingerprint("/dev/null", HashCache())


def test_linked_directories_are_followed_but_not_loops(tmp_path: Path) -> None:
    write_tree(tmp_path, {"d/a.txt": "a", "shared/s.txt": "s"})
    (tmp_path / "d" / "shared").symlink_to(tmp_path / "shared")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    fp = fingerprint(str(tmp_path / "d"), HashCache())
    assert sorted(fp.members) == ["a.txt", "shared/s.txt"]
    (tmp_path / "shared" / "s.txt").write_text("changed")
    assert fingerprint(str(tmp_path / "d"), HashCache()).sha256 != fp.sha256


def test_a_file_is_read_only_up_to_its_size_when_opened(tmp_path: Path) -> None:
    from cuberun.fingerprint import file_sha256

    path = tmp_path / "f"
    path.write_bytes(b"x" * 3000)
    assert file_sha256(str(path)) == hashlib.sha256(b"x" * 3000).hexdigest()
