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
