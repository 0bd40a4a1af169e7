"""The one safe write helper and the bounded reader (cuberun.safeio)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cuberun.safeio import FileProblem, copy_file, make_dirs, read_regular, read_tail, target_of, write_file, write_new


def test_write_creates_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    write_file(target, "one")
    target.chmod(0o640)
    inode = target.stat().st_ino
    write_file(target, "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the mode of the file it replaces
    assert target.stat().st_ino != inode  # a new file renamed over it
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]  # no temporary file left


def test_write_goes_through_a_symbolic_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "settings.yaml"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "settings.yaml"
    link.symlink_to(real)
    assert write_file(link, "new") == real
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "real" / "created.txt")
    write_file(dangling, "made through the link")
    assert dangling.is_symlink() and (tmp_path / "real" / "created.txt").read_text() == "made through the link"


@pytest.mark.parametrize("kind", ["fifo", "dir", "device", "link-to-device"])
def test_never_writes_over_a_special_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "t"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    elif kind == "device":
        target = Path("/dev/null")
    else:
        target.symlink_to("/dev/null")
    before = os.lstat(target)
    with pytest.raises(FileProblem) as info:
        write_file(target, "x", what="report")
    assert "cannot write report: it is " in info.value.message
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "device" else ["t"])


def test_read_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: a blocking open would hang here
    for path, words in ((fifo, "is a FIFO (named pipe)"), (Path("/dev/zero"), "is a character device"), (tmp_path, "is a directory")):
        with pytest.raises(FileProblem) as info:
            read_regular(path, 100, what="cube file")
        assert info.value.problem == f"cube file {words}, not a regular file"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileProblem, match=r"too large \(101 bytes; the limit is 100\)"):
        read_regular(big, 100)
    assert read_regular(big, 101) == b"x" * 101
    assert read_tail(big, 3) == b"xxx" and read_tail(fifo, 3) is None and read_tail("/dev/zero", 3) is None


def test_copy_refuses_a_fifo_source(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "src")
    with pytest.raises(FileProblem, match="it is a FIFO"):
        copy_file(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_write_new_and_make_dirs_name_the_culprit(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileProblem) as info:
        write_new(tmp_path / "file", "x", what="cube file")
    assert info.value.message.endswith("cannot create cube file: there is already a regular file there")
    with pytest.raises(FileProblem) as info:
        make_dirs(tmp_path / "file" / "a" / "b", what="folder")
    assert info.value.path == str(tmp_path / "file") and "this is a regular file, not a folder" in info.value.message
    assert (tmp_path / "file").read_text() == "mine"


def test_target_of_a_link_loop(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(FileProblem, match="symbolic link loop"):
        target_of(loop)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_in_place_when_the_folder_is_not_writable(tmp_path: Path) -> None:
    """The file is writable but its folder is not: no temporary file can be made beside it, so the
    file is rewritten in place (checked in a child process running as nobody)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="cuberun-inplace-", dir="/tmp"))  # pytest's tmp_path is not nobody's to reach
    base.chmod(0o755)
    folder = base / "ro"
    folder.mkdir()
    target = folder / "s.yaml"
    target.write_text("old")
    os.chown(target, 65534, 65534)
    code = (f"import os\nfrom cuberun.safeio import write_file\nos.setgid(65534)\nos.setuid(65534)\n"  # imports first: /root is not nobody's
            f"write_file({str(target)!r}, 'new content')\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert target.read_text() == "new content"
        assert sorted(p.name for p in folder.iterdir()) == ["s.yaml"]
    finally:
        shutil.rmtree(base)
