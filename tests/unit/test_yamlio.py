from __future__ import annotations

from pathlib import Path

import pytest

from cuberun import yamlio
from cuberun.errors import SpecError


def test_positions_of_keys_and_values() -> None:
    doc = yamlio.parse("name: x\ntasks:\n  t:\n    entrypoint: run\n", "f.yaml")
    assert doc.data == {"name": "x", "tasks": {"t": {"entrypoint": "run"}}}
    assert doc.key_marks[("tasks", "t", "entrypoint")] == (4, 5)
    assert doc.value_marks[("tasks", "t", "entrypoint")] == (4, 17)
    assert doc.position(("tasks", "t", "missing")) == (3, 3)


def test_keys_stay_strings() -> None:
    doc = yamlio.parse("on: 1\n1: x\nyes: no\n", "f.yaml")
    assert doc.data == {"on": 1, "1": "x", "yes": False}


def test_raw_scalars_keep_version_text() -> None:
    doc = yamlio.parse("version: 1.10\n", "f.yaml")
    assert doc.data["version"] == 1.1
    assert doc.raw_scalars[("version",)] == "1.10"


def test_merge_keys() -> None:
    doc = yamlio.parse("base: &b {a: 1}\nx:\n  <<: *b\n  c: 2\n", "f.yaml")
    assert doc.data["x"] == {"a": 1, "c": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2}\n", "f.yaml:1:9: invalid YAML: did not find expected ',' or ']'. Hint: check the brackets, quotes and indentation"),
        ("a: 1\na: 2\n", "f.yaml:2:1: a: duplicate key 'a'. Hint: it is already set on line 1"),
        ("? [a]\n: 1\n", "f.yaml:1:3: a mapping key must be a plain scalar"),
        ("a: *nope\n", "f.yaml:1:4: invalid YAML: found undefined alias. Hint: check the brackets, quotes and indentation"),
    ],
)
def test_errors_have_positions(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        yamlio.parse(text, "f.yaml")
    assert info.value.lines() == [message]


def test_recursive_alias_is_bounded() -> None:
    with pytest.raises(SpecError) as info:
        yamlio.parse("a: &x\n  b: *x\n", "f.yaml")
    assert info.value.lines() == ["f.yaml:1:4: a YAML alias refers to the node that contains it (a recursive structure). "
                                  "Hint: remove the alias, or point it at another anchor"]


def test_read_text_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (yamlio.MAX_BYTES + 1))
    with pytest.raises(SpecError) as info:
        yamlio.read_text(big)
    assert "too large" in info.value.lines()[0]


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.yaml"
    yamlio.write_atomic(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"
    assert [p.name for p in target.parent.iterdir()] == ["f.yaml"]


def test_parse_cache_is_bounded_and_least_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CUBERUN_NO_PARSE_CACHE", raising=False)
    monkeypatch.setattr(yamlio, "CACHE_MAX_ENTRIES", 5)
    files = []
    for i in range(8):  # eight cubes in folders that are then deleted, as temp folders are
        f = tmp_path / f"cube{i}" / "mlcube.yaml"
        f.parent.mkdir()
        f.write_text(f"name: c{i}\n")
        files.append(f)
    folder = tmp_path / "cache" / "parsed"
    stranger = folder / "notes.txt"  # not the cache's: never removed
    for i, f in enumerate(files[:5]):
        assert yamlio.load(f).data == {"name": f"c{i}"}
        os.utime(yamlio._cache_file(f), ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # used in order 0..4
    stranger.write_text("mine")
    assert yamlio.load(files[0]).data == {"name": "c0"}  # a hit makes c0 the most recently used
    assert len(list(folder.glob("*.json"))) == 5
    yamlio.load(files[5])  # a new entry: the least recently used (c1) goes
    kept = {p.name for p in folder.glob("*.json")}
    assert yamlio._cache_file(files[1]).name not in kept
    assert {yamlio._cache_file(f).name for f in (files[0], files[2], files[3], files[4], files[5])} == kept
    for f in files[6:]:
        yamlio.load(f)
    assert len(list(folder.glob("*.json"))) == 5 and stranger.read_text() == "mine"
    monkeypatch.setattr(yamlio, "CACHE_MAX_BYTES", 1)  # the byte bound: only the entry just written stays
    other = tmp_path / "other.yaml"
    other.write_text("name: other\n")
    yamlio.load(other)
    assert [p.name for p in folder.glob("*.json")] == [yamlio._cache_file(other).name]
