"""Control characters never reach the terminal raw: printable() for people, shell_quote() for
commands that must still paste into bash as the same argument."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuberun.console import printable, shell_quote
from cuberun.runners.base import Step

CONTROL = [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B)] + ["\u2028", "\udc80"]


@pytest.mark.parametrize("text, shown", [
    ("plain path/x y", "plain path/x y"),
    ("a\nb", "a\\nb"),
    ("\x1b[2Jgone", "\\x1b[2Jgone"),
    ("bell\a", "bell\\a"),
    ("c1\x9b", "c1\\u009b"),
    ("bad\udcffbyte", "bad\\xffbyte"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def _bash_argument(quoted: str) -> bytes:
    return subprocess.run(["bash", "-c", "printf '%s' " + quoted], capture_output=True, check=True).stdout


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(CONTROL[1:] + list("ab '\"\\$`!*"))))  # no NUL: no argument holds one
def test_shell_quote_round_trips_through_bash(arg: str) -> None:
    quoted = shell_quote(arg)
    assert not any(ch in quoted for ch in CONTROL)
    assert _bash_argument(quoted) == arg.encode("utf-8", "surrogateescape")


def test_step_display_escapes_cwd_env_and_argv() -> None:
    step = Step(("python3", "x.py", "--out=/w/\x1b]0;title\x07"), cwd="/w\nx", env={"K": "v\r"})
    line = step.display()
    assert line == "cd $'/w\\nx' && K=$'v\\r' python3 x.py $'--out=/w/\\E]0;title\\a'"
