"""The caches the identity keeps (code records and listings, interpreters, the secret key, nested
requirements): a damaged or special file there is ignored (and rebuilt when it is a regular file),
never trusted, never opened so that it could block, never written over."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from cuberun import codeid, secretid
from cuberun.runners import pyidentity
from cuberun.runners.reqfiles import closure, includes
from tests.conftest import write_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(where))
    monkeypatch.setattr(secretid, "_KEY", None)
    codeid._SEEN.clear()
    return where


def _code(root: Path) -> codeid.CodeId:
    return codeid.identity([root], "code")


def _records(cache: Path) -> list[Path]:
    return sorted((cache / "code").iterdir())


@pytest.mark.parametrize("damage", ["fifo", "not-json", "list", "wrong-types", "dir", "dev-zero"])
def test_a_damaged_code_cache_is_ignored(tmp_path: Path, cache: Path, damage: str) -> None:
    root = tmp_path / "c"
    write_tree(root, {"prog.py": "p", "lib/a.py": "a"})
    clean = _code(root)
    for path in _records(cache):
        if damage in ("fifo", "dir", "dev-zero"):
            path.unlink()
            os.mkfifo(path) if damage == "fifo" else path.mkdir() if damage == "dir" else path.symlink_to("/dev/zero")
        else:
            path.write_text({"not-json": "{", "list": "[]"}.get(damage) or
                            path.read_text().replace('"files":', '"files":"many","x":').replace('"bytes":', '"bytes":[1],"y":'))
    again = _code(root)
    assert (again.sha256, sorted(again.members)) == (clean.sha256, sorted(clean.members))
    for path in _records(cache):  # special files are left as they are; a regular one is rebuilt
        if damage == "fifo":
            assert stat.S_ISFIFO(os.lstat(path).st_mode)
        elif damage == "dev-zero":
            assert os.readlink(path) == "/dev/zero"


def test_a_summary_of_wrong_types_is_not_a_crash(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    # the folder's stat digest as one that never changes (the real one holds atimes in whole
    # seconds: reading the files can change it), so that the summary's fast path is taken
    monkeypatch.setattr(codeid, "_stat_digest", lambda entries, docker: ("same stat", 0))
    root = tmp_path / "c"
    write_tree(root, {"prog.py": "p"})
    first = _code(root)
    [summary] = [p for p in _records(cache) if p.suffix == ".sum"]
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "files": "many", "bytes": [1]}))
    [record] = [p for p in _records(cache) if p.suffix == ".json"]
    record.write_text(json.dumps({**json.loads(record.read_text()), "files": {"prog.py": [1, 2]}}))
    codeid._SEEN.clear()
    again = _code(root)
    assert again.sha256 == first.sha256 and again.files == 0
    assert again.members == {"prog.py": ""}  # the listing only explains changes; a digest it cannot read is named as changed


def test_code_listings_are_written_safely_and_only_ours_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, ws = tmp_path / "c", tmp_path / "ws"
    write_tree(root, {"prog.py": "p"})
    listings = ws / codeid.SNAPSHOT_DIR
    listings.mkdir(parents=True)
    (listings / "notes.json").write_text("mine")
    os.mkfifo(listings / ("f" * 32 + ".json"))
    monkeypatch.setattr(codeid, "KEEP_SNAPSHOTS", 2)
    for i in range(4):
        (root / "prog.py").write_text(f"p{i}")
        code = codeid.identity([root], "code")
        codeid.save_snapshot(ws, code.sha256)
        os.utime(listings / f"{code.sha256[:32]}.json", ns=(i * 10**9, i * 10**9))
    names = sorted(p.name for p in listings.iterdir())
    assert "notes.json" in names and "f" * 32 + ".json" in names
    assert len(names) == 4  # two listings kept, the user's file and the FIFO untouched
    fifo = listings / f"{code.sha256[:32]}.json"
    fifo.unlink()
    os.mkfifo(fifo)
    assert codeid.explain(ws, code.sha256, code.sha256) == ""  # a FIFO listing is not read
    codeid.save_snapshot(ws, code.sha256)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert codeid.explain(ws, "../" * 8 + "etc/passwd", code.sha256) == ""


@pytest.mark.parametrize("damage", ["fifo", "list", "deep", "dev-zero", "wrong-types"])
def test_a_damaged_interpreter_cache_is_ignored(cache: Path, damage: str) -> None:
    path = cache / "interpreters.json"
    first = pyidentity.identity(sys.executable, {}, None)
    assert path.is_file()
    path.unlink()
    if damage == "fifo":
        os.mkfifo(path)
    elif damage == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_text({"list": "[1]", "deep": "[" * 100000 + "]" * 100000}.get(damage, '{"k": {"path": 5}, "x": [1]}'))
    assert pyidentity.identity(sys.executable, {}, None) == first
    if damage == "fifo":
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
    elif damage == "dev-zero":
        assert os.readlink(path) == "/dev/zero"


def test_the_secret_key_is_made_once_and_never_read_from_a_special_file(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cache / "secret-key"
    digest = secretid.secret_digest("v")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.stat().st_size == 32
    secretid._KEY = None
    assert secretid.secret_digest("v") == digest
    path.write_bytes(b"short")  # damaged: made again
    secretid._KEY = None
    other = secretid.secret_digest("v")
    assert other != digest and path.stat().st_size == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    path.symlink_to("/dev/zero")  # would make every key the same
    secretid._KEY = None
    zero_key = secretid.secret_digest("v")
    secretid._KEY = None
    assert secretid.secret_digest("v") != zero_key and os.readlink(path) == "/dev/zero"
    assert "cannot keep the secret key" in capsys.readouterr().err


def test_nested_requirements_that_are_special_files_are_not_read(tmp_path: Path) -> None:
    write_tree(tmp_path, {"req.txt": "-r pipe.txt\n-r dev.txt\n-r big.txt\nnumpy\n"})
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "dev.txt").symlink_to("/dev/zero")
    with open(tmp_path / "big.txt", "wb") as fh:
        fh.truncate(100 << 20)
    assert includes(tmp_path / "pipe.txt") == [] and includes(tmp_path / "dev.txt") == [] and includes(tmp_path / "big.txt") == []
    assert [p.name for p in closure([tmp_path / "req.txt"])] == ["req.txt", "pipe.txt", "dev.txt", "big.txt"]
