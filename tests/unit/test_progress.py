"""The progress display: plain lines off a terminal, nothing with --quiet, the pip and image
parsers, and the queue wait. Deterministic: the interval is 0 (a line for every change), no
clock is compared."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from cuberun import console, progress
from cuberun.runners.pyenv import pip_line


@pytest.fixture(autouse=True)
def plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CUBERUN_PROGRESS", "plain")
    monkeypatch.setenv("CUBERUN_PROGRESS_INTERVAL", "0")
    yield
    progress.configure()


def untimed(text: str) -> list[str]:
    """The lines without their elapsed time ' (N s)' at the end."""
    lines = text.splitlines()
    assert all(re.search(r" \(\d+ s\)$", ln) for ln in lines), lines
    return [re.sub(r" \(\d+ s\)$", "", ln) for ln in lines]


PIP_OUTPUT = b"""\
WARNING: Location 'file:///x' is ignored: it is neither a file nor a directory.
Collecting six (from -r requirements.txt (line 1))
  Downloading six-1.16.0-py2.py3-none-any.whl (11 kB)
Collecting numpy==1.26.4
  Using cached numpy-1.26.4-cp311-manylinux.whl (18.2 MB)
Processing /opt/wheels/joblib-1.6.0-py3-none-any.whl (from scikit-learn)
Installing collected packages: six, numpy, joblib
Successfully installed joblib-1.6.0 numpy-1.26.4 six-1.16.0
"""


def test_pip_output_becomes_phases_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.activity("building the Python environment") as act:
        act.phase("resolving", unit="packages")
        sink = act.sink(pip_line, echo=False)
        for i in range(0, len(PIP_OUTPUT), 7):  # in pieces, as a pipe delivers it
            sink.write(PIP_OUTPUT[i : i + 7])
    lines = untimed(capsys.readouterr().err)
    assert lines[0] == "cuberun: building the Python environment"
    assert "cuberun: building the Python environment: resolving, 1 package (six)" in lines
    assert "cuberun: building the Python environment: resolving, 2 packages (numpy==1.26.4)" in lines
    assert "cuberun: building the Python environment: resolving, 1 package (downloading six 1.16.0 (11 kB))" in lines
    assert "cuberun: building the Python environment: resolving, 2 packages (downloading numpy 1.26.4 (18.2 MB))" in lines
    assert "cuberun: building the Python environment: resolving, 3 packages (joblib 1.6.0)" in lines
    assert "cuberun: building the Python environment: installing, 0/3 packages" in lines
    assert "cuberun: building the Python environment: installing, 3/3 packages" in lines
    assert not any("WARNING" in ln for ln in lines)


def test_verbose_echoes_the_tool_output(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    progress.configure(verbose=True)
    with progress.activity("x") as act:
        act.sink(pip_line).write(b"Collecting six\n")
    assert b"Collecting six\n" in capsysbinary.readouterr().err


def test_quiet_shows_nothing_but_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    progress.configure(quiet=True)
    with progress.activity("building") as act:
        act.phase("resolving")
        act.update(done=3, total=4)
    console.say("task 'x' will run")
    console.warn("careful")
    assert capsys.readouterr().err == "cuberun: warning: careful\n"


def test_plain_lines_respect_the_interval(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CUBERUN_PROGRESS_INTERVAL", "3600")  # no heartbeat fires within the test
    with progress.activity("pulling image x") as act:
        for i in range(50):
            act.update(done=i, total=50)  # counts within an interval: no line
        act.phase("extracting")  # a phase change: a line at once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("cuberun: pulling image x: extracting")


def test_image_lines() -> None:
    seen: list[str] = []

    with progress.activity("building image x") as act:
        for line in ["Step 2/7 : RUN pip install -r req.txt", "#7 [3/4] COPY . /app", "STEP 4/5: WORKDIR /w"]:
            progress.image_line(line, act)
            seen.append(act.count())
        act.update(done=0, total=0)
        for line in ["a1: Pulling fs layer", "b2: Pulling fs layer", "a1: Pull complete"]:
            progress.image_line(line, act)
        seen.append(act.count())
    assert seen == ["2/7", "3/4", "4/5", "1/2"]


def test_queue_wait_shows_while_pending(capsys: pytest.CaptureFixture[str]) -> None:
    wait = progress.Waiting("job 12 (task 'train') waits in the queue")
    wait.state("PENDING", "Resources")
    wait.state("PENDING", "Priority")
    wait.state("RUNNING")
    wait.state("COMPLETED")
    lines = untimed(capsys.readouterr().err)
    assert lines == ["cuberun: job 12 (task 'train') waits in the queue: PENDING: Resources",
                     "cuberun: job 12 (task 'train') waits in the queue: PENDING: Priority"]


def test_control_characters_in_what_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.activity("building image x\x1b[2J"):
        pass
    assert "\x1b" not in capsys.readouterr().err


def test_tty_display_uses_rich_and_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_PROGRESS", "tty")
    with progress.activity("building the Python environment") as act, progress.activity("second, in parallel") as other:
        act.phase("resolving")
        other.update(done=1, total=2)
        assert progress._LIVE.progress is not None and len(progress._LIVE.rows) == 2
    assert progress._LIVE.progress is None and not progress._LIVE.rows


def test_verbose_on_a_terminal_uses_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_PROGRESS", "tty")
    assert progress._display() is progress._LIVE
    progress.configure(verbose=True)  # the tool's own bytes go to the terminal: no live line to garble
    assert isinstance(progress._display(), progress._Plain)
    wait = progress.Waiting("job 1")
    assert not wait.active
    wait.state("PENDING")
    assert wait.active
    wait.close()
    assert not wait.active
