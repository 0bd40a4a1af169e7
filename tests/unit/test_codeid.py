"""The code identity: what counts as code, ignore files, the stat fast path, naming what changed."""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

import pytest

from cuberun import codeid
from cuberun.ignorefiles import git_ignored, git_rules, is_ignored, read_dockerignore
from tests.conftest import write_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(where))
    return where


def members(root: Path, scope: str = "code", exclude: tuple[str, ...] = ()) -> dict[str, str]:
    return codeid.identity([root], scope, exclude).members


def test_what_counts_as_code(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_tree(root, {
        "prog.py": "p", "lib/a.py": "a", "lib/__pycache__/a.cpython-311.pyc": "c", "x.pyc": "c", ".git/HEAD": "h",
        "venv/pyvenv.cfg": "", "venv/lib/site.py": "s", "env/conda-meta/history": "", "env/bin/python": "",
        "workspace/data.txt": "d", "out/result.txt": "r", "mlcube.yaml": "m", ".gitignore": "", ".prog.py.swp": "x",
    })
    os.mkfifo(root / "fifo")  # never opened: not code
    (root / "link.py").symlink_to("prog.py")
    (root / "dirlink").symlink_to("lib")
    (root / "dangling").symlink_to("nowhere")
    found = members(root, exclude=(str(root / "workspace"), str(root / "out"), str(root / "mlcube.yaml")))
    assert sorted(found) == ["dangling", "dirlink", "lib/a.py", "link.py", "prog.py"]
    assert found["link.py"] == found["prog.py"]  # a linked file counts by its content
    assert found["dirlink"] == "->lib" and found["dangling"] == "->nowhere"


def test_gitignore_rules_nested_and_negated(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_tree(root, {
        ".gitignore": "*.log\n/build/\ndata\n!keep.log\n# comment\n",
        "a.log": "", "keep.log": "", "build/x.py": "", "src/build/y.py": "", "data": "", "src/data/z": "",
        "src/.gitignore": "secret.txt\n", "src/secret.txt": "", "secret.txt": "", "src/main.py": "",
    })
    assert sorted(members(root)) == ["keep.log", "secret.txt", "src/build/y.py", "src/main.py"]
    rules = git_rules("docs/*.md\n**/tmp\nfoo/**\n")
    assert git_ignored("docs/a.md", "a.md", False, rules) and not git_ignored("docs/x/a.md", "a.md", False, rules)
    assert git_ignored("a/b/tmp", "tmp", True, rules) and git_ignored("foo/x/y", "y", False, rules)


def test_cuberunignore_replaces_the_other_ignore_files(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_tree(root, {".cuberunignore": "big/\n", ".gitignore": "*.py\n", ".dockerignore": "conf\n", "a.py": "", "conf": "", "big/x": ""})
    assert sorted(members(root)) == ["a.py", "conf"]
    (root / ".cuberunignore").unlink()
    assert sorted(members(root)) == ["big/x"]  # .gitignore and .dockerignore together


def test_docker_scope_is_what_docker_build_sends(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write_tree(root, {".dockerignore": "data/*\n!data/keep.txt\nnotes\n", "Dockerfile": "FROM x\n", "run.sh": "#!/bin/sh\n",
                      "data/a.bin": "", "data/keep.txt": "k", "notes/n.md": "", "__pycache__/c.pyc": "", ".git/HEAD": ""})
    (root / "run.sh").chmod(0o755)
    (root / "l").symlink_to("Dockerfile")
    found = members(root, "docker")
    assert sorted(found) == [".dockerignore", ".git", ".git/HEAD", "Dockerfile", "__pycache__", "__pycache__/c.pyc", "data", "data/keep.txt",
                             "l", "run.sh"]
    assert found["run.sh"].endswith("+x") and found["l"] == "->Dockerfile" and found["data"] == "dir"
    rules = read_dockerignore(root)
    assert is_ignored("data/a.bin", rules) and not is_ignored("data/keep.txt", rules) and is_ignored("notes/n.md", rules)


def test_unchanged_files_are_not_read_again_and_racy_ones_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cuberun.fingerprint as fp

    root = tmp_path / "c"
    write_tree(root, {"a.py": "a", "b.py": "b"})
    old = time.time_ns() - 10_000_000_000
    for name in ("a.py", "b.py"):
        os.utime(root / name, ns=(old, old))
    reads: list[str] = []
    real = fp.file_sha256
    monkeypatch.setattr(fp, "file_sha256", lambda path, progress=None: reads.append(os.path.basename(path)) or real(path, progress))
    first = codeid.identity([root])
    assert sorted(reads) == ["a.py", "b.py"]
    reads.clear()
    codeid.identity([root])  # changed less than a second before they were hashed (ctime is now): never trusted
    assert sorted(reads) == ["a.py", "b.py"]
    now = time.time_ns()
    monkeypatch.setattr(codeid.time, "time_ns", lambda: now + 10_000_000_000)  # hashed long after their last change
    codeid.identity([root])
    reads.clear()
    again = codeid.identity([root])
    assert reads == [] and again.sha256 == first.sha256
    (root / "b.py").write_text("B")
    changed = codeid.identity([root])
    assert reads == ["b.py"] and changed.sha256 != first.sha256
    assert codeid.describe_diff(first.members, changed.members) == "b.py"


def test_explain_names_the_files_from_the_kept_listing(tmp_path: Path) -> None:
    root, ws = tmp_path / "c", tmp_path / "ws"
    write_tree(root, {"a.py": "1", "b.py": "2"})
    before = codeid.identity([root])
    codeid.save_snapshot(ws, before.sha256)
    (root / "a.py").write_text("11")
    (root / "c.py").write_text("3")
    (root / "b.py").unlink()
    after = codeid.identity([root])
    assert codeid.explain(ws, before.sha256, after.sha256) == "a.py, c.py (added), b.py (removed)"
    assert codeid.explain(ws, "0" * 64, after.sha256) == ""  # no listing kept: the caller says so
    many = {f"f{i}.py": "x" for i in range(6)}
    assert codeid.describe_diff({}, many) == "f0.py (added), f1.py (added), f2.py (added) and 3 more"


def test_several_roots_and_progress_on_long_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path, {"cube/m.py": "m", "code/x.py": "x", "cube/sub/y.py": "y"})
    both = codeid.identity([tmp_path / "cube", tmp_path / "code", tmp_path / "cube" / "sub"])
    assert sorted(both.members) == ["code/x.py", "cube/m.py", "cube/sub/y.py"] and both.files == 3

    from cuberun import progress

    monkeypatch.setenv("CUBERUN_PROGRESS_INTERVAL", "2")
    monkeypatch.delenv("CUBERUN_PROGRESS", raising=False)
    out = io.StringIO()
    clock = iter(float(i) for i in range(1000))
    p = progress.Progress("input data", 10 << 20, stream=out, clock=lambda: next(clock))
    for _ in range(10):
        p.add(1 << 20)
    p.close()
    text = out.getvalue().splitlines()
    assert text[0] == "cuberun: hashing input data: 2.0 MiB of 10.0 MiB (20%), 1.0 MiB/s" and "\r" not in out.getvalue()
    assert len(text) == 5  # not a terminal: a plain line every interval (2 s of the 10 s the injected clock counts)


def test_sockets_in_the_code_folder_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_tree(root, {"a.py": "a"})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(root / "s.sock"))
        assert sorted(members(root)) == ["a.py"]
    finally:
        sock.close()


def test_walk_through_folder_descriptors_keeps_paths_and_stats(tmp_path: Path) -> None:
    """walk() lists each folder through an open descriptor (one fstatat per file): the entries
    are still the absolute paths under the root as given (a root reached through a symlink
    included), with the stat of the file itself, and an in-place edit that keeps the size is seen."""
    real = tmp_path / "real"
    write_tree(real, {"prog.py": "print(1)\n", "lib/a.py": "a", "lib/deep/b.py": "bb", "workspace/x": "x"})
    (tmp_path / "via").symlink_to(real)
    root = tmp_path / "via"
    entries = codeid.walk(root, "code", (str(root / "workspace"),))
    assert [e[0] for e in entries] == ["lib/a.py", "lib/deep/b.py", "prog.py"]
    for rel, full, kind, st, _ in entries:
        assert full == str(root / rel) and kind == "f" and st is not None
        own = os.lstat(full)
        assert (st.st_ino, st.st_size, st.st_mtime_ns) == (own.st_ino, own.st_size, own.st_mtime_ns)
    before = codeid.identity([root], "code", (str(root / "workspace"),)).sha256
    old = os.lstat(real / "lib" / "deep" / "b.py")
    with open(real / "lib" / "deep" / "b.py", "r+b") as fh:  # same size, same folder listing
        fh.write(b"cc")
    os.utime(real / "lib" / "deep" / "b.py", ns=(old.st_atime_ns, old.st_mtime_ns))  # its old mtime put back (ctime still moves)
    assert codeid.identity([root], "code", (str(root / "workspace"),)).sha256 != before


def test_early_walk_in_a_forked_child_matches_and_sees_in_place_edits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """start_early (the walk in a forked child, taken by identity()) gives the digest computed in
    this process, with the exclusions of files inside sub-folders and the path order ('a.b' before
    'a/b'), and still sees an edit that keeps the size and puts the old mtime back. The walk leaves
    the garbage collector as it found it."""
    import gc

    root = tmp_path / "c"
    write_tree(root, {"a.b": "1", "a/b.py": "2", "a/skip.py": "3", "lib/x.py": "x", "mlcube.yaml": "m", "workspace/w": "w"})
    exclude = (str(root / "workspace"), str(root / "mlcube.yaml"), str(root / "a" / "skip.py"))
    monkeypatch.setattr(codeid, "EARLY_MIN_FILES", 1)
    monkeypatch.setattr(codeid, "_EARLY", [])
    here = codeid.identity([root], "code", exclude)
    assert sorted(here.members) == ["a.b", "a/b.py", "lib/x.py"]
    assert [e[0] for e in codeid.walk(root, "code", exclude)] == ["a.b", "a/b.py", "lib/x.py"] and gc.isenabled()

    def early() -> codeid.CodeId:
        codeid.start_early(root, exclude)
        if not codeid._EARLY:
            pytest.skip("no fork here (another thread runs)")
        got = codeid.identity([root], "code", exclude)
        assert not codeid._EARLY and got._members is None  # the child's answer, not computed again here
        return got

    assert early().sha256 == here.sha256
    old = os.lstat(root / "lib" / "x.py")
    with open(root / "lib" / "x.py", "r+b") as fh:
        fh.write(b"y")
    os.utime(root / "lib" / "x.py", ns=(old.st_atime_ns, old.st_mtime_ns))
    edited = early()
    assert edited.sha256 != here.sha256
    assert codeid.describe_diff(here.members, edited.members) == "lib/x.py"
