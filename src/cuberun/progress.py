"""Live progress of long work on stderr: managed env builds, image builds and pulls, transfers,
queue waits, hashing. One small interface for every runner:

    from cuberun import progress

    with progress.activity("building image x:1") as act:
        act.phase("step 2/7")
        act.update(done=3, total=10, note="numpy")
        outcome = stream(argv, log=log, echo=act.sink(parse_line))

On a terminal, one live line per activity (rich: spinner, what, phase, done/total, elapsed),
rewritten in place and gone when the work ends. Otherwise (a log, a pipe, CI) plain lines
`cuberun: building image x:1: step 2/7 (12 s)`: one when the phase changes, then at most one
every interval, and one every interval while nothing changes, so a log shows the work is alive.
The interval is 2 s (CUBERUN_PROGRESS_INTERVAL=SECONDS; 0 = a line for every change, what the
tests use). `--quiet` shows nothing (configure(quiet=True)); CUBERUN_PROGRESS=tty|plain|off
chooses the display whatever stderr is. rich is imported only when a live line is shown.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, TextIO

DELAY = 2.0  # seconds of hashing before the first progress line
TTY_INTERVAL = 0.25
PLAIN_INTERVAL = 2.0
_VERBOSE = False


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    """From the command line: --quiet (no progress, no informational lines), -v (the tools' own
    output, e.g. pip's, on stderr too)."""
    global _VERBOSE
    from cuberun import console

    console.QUIET = quiet
    _VERBOSE = verbose


def verbose() -> bool:
    return _VERBOSE


def shows_output() -> bool:
    """Whether a tool's own progress output (docker build, pip with -v) goes to stderr: always
    but on a terminal, where the live line stands for it (-v shows it there too)."""
    return verbose() or mode() != "tty"


def interval() -> float:
    raw = os.environ.get("CUBERUN_PROGRESS_INTERVAL")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    return PLAIN_INTERVAL


def mode(stream: TextIO | None = None) -> str:
    """'off', 'plain' or 'tty'."""
    from cuberun import console

    if console.QUIET:
        return "off"
    forced = os.environ.get("CUBERUN_PROGRESS", "")
    if forced in ("off", "plain", "tty"):
        return forced
    try:
        tty = bool((stream or sys.stderr).isatty())
    except (AttributeError, ValueError, OSError):
        tty = False
    return "tty" if tty and os.environ.get("TERM") != "dumb" else "plain"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def seconds(s: float) -> str:
    s = int(s)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def _write_line(text: str) -> None:
    from cuberun.console import _LOCK

    with _LOCK:
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe, a full disk under a log: never stops the work
            pass


class Activity:
    """One piece of long work. `phase(text)` says what it is doing now; `update(...)` moves the
    count (done of total `unit`) and the note (e.g. the package being fetched)."""

    def __init__(self, what: str, total: float | None, unit: str, display: _Display) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done: float = 0
        self.stage = ""
        self.note = ""
        self.start = time.monotonic()
        self._display = display

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def phase(self, text: str, *, done: float | None = 0, total: float | None = None, unit: str | None = None) -> None:
        self.stage, self.note = text, ""
        if done is not None:
            self.done = done
        self.total = total
        if unit is not None:
            self.unit = unit
        self._display.changed(self, force=True)

    def update(self, *, done: float | None = None, total: float | None = None, advance: float = 0, note: str | None = None) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        self.done += advance
        if note is not None:
            self.note = note
        self._display.changed(self, force=False)

    def count(self) -> str:
        unit = f" {self.unit[:-1] if self.unit.endswith('s') and self.done == 1 and not self.total else self.unit}" if self.unit else ""
        if self.unit == "bytes":
            return f"{human(self.done)} of {human(self.total)}" if self.total else human(self.done)
        if self.total:
            return f"{self.done:.0f}/{self.total:.0f}{unit}"
        return f"{self.done:.0f}{unit}" if self.done else ""

    def status(self) -> str:
        """`phase, 3/10 packages (note)` without the elapsed time."""
        parts = [p for p in (self.stage, self.count()) if p]
        text = ", ".join(parts)
        if self.note:
            text += f" ({self.note})" if text else self.note
        return text

    def line(self) -> str:
        status = self.status()
        return f"cuberun: {self.what}{': ' + status if status else ''} ({seconds(self.elapsed())})"

    def message(self, text: str) -> None:
        """A whole line above the live display (or between the plain lines)."""
        if not isinstance(self._display, _Off):
            _write_line(f"cuberun: {text}")

    def sink(self, parse: Callable[[str, Activity], None] | None = None, *, echo: bool | None = None) -> IO[bytes]:
        """A file object for a tool's output (process.stream's echo): each line goes to `parse`
        (which may call phase/update); with echo (default: -v) the bytes go to stderr as well."""
        return _LineSink(self, parse, verbose() if echo is None else echo)  # type: ignore[return-value]


def line_sink(on_line: Callable[[str], None], *, echo: IO[bytes] | None = None) -> IO[bytes]:
    """A file object for a tool's output that calls `on_line` with each line (stripped, not
    empty), copying the bytes to `echo` too when given: e.g. to follow a tool's event stream
    while it runs (Backend.AI's `session watch`)."""
    sink = _LineSink(None, lambda line, _act: on_line(line), False)
    sink.echo = echo
    return sink  # type: ignore[return-value]


class _LineSink:
    def __init__(self, act: Activity | None, parse: Callable[[str, Any], None] | None, echo: bool) -> None:
        self.act = act
        self.parse = parse
        self.echo = getattr(sys.stderr, "buffer", None) if echo else None
        self.partial = b""

    def write(self, data: bytes) -> int:
        if self.echo is not None:
            try:
                self.echo.write(data)
                self.echo.flush()
            except (OSError, ValueError):
                pass
        if self.parse is not None:
            self.partial += data
            *lines, self.partial = self.partial.replace(b"\r", b"\n").split(b"\n")
            self.partial = self.partial[-65536:]  # a progress bar without line ends
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self.parse(line, self.act)
        return len(data)

    def flush(self) -> None:
        pass


class _Display:
    def add(self, act: Activity) -> None: ...

    def changed(self, act: Activity, *, force: bool) -> None: ...

    def remove(self, act: Activity) -> None: ...


class _Off(_Display):
    pass


class _Plain(_Display):
    """Line-oriented: a line at a phase change, then at most one per interval; a heartbeat
    thread writes one per interval while nothing changes (no thread when the interval is 0)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last: dict[int, float] = {}
        self.stop: dict[int, threading.Event] = {}

    def _show(self, act: Activity) -> None:
        self.last[id(act)] = time.monotonic()
        _write_line(act.line())

    def add(self, act: Activity) -> None:
        self._show(act)
        if self.every > 0:
            stop = threading.Event()
            self.stop[id(act)] = stop
            threading.Thread(target=self._beat, args=(act, stop), daemon=True, name="cuberun-progress").start()

    def _beat(self, act: Activity, stop: threading.Event) -> None:
        while not stop.wait(self.every / 4):
            if time.monotonic() - self.last.get(id(act), 0.0) >= self.every:
                self._show(act)

    def changed(self, act: Activity, *, force: bool) -> None:
        if force or time.monotonic() - self.last.get(id(act), 0.0) >= self.every:
            self._show(act)

    def remove(self, act: Activity) -> None:
        stop = self.stop.pop(id(act), None)
        if stop is not None:
            stop.set()
        self.last.pop(id(act), None)


class _Live(_Display):
    """rich's live display on stderr: one row per running activity (parallel tasks share it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[int, Any] = {}
        self.progress: Any = None

    def add(self, act: Activity) -> None:
        with self.lock:
            if self.progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                self.progress = Progress(
                    SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, refresh_per_second=8, redirect_stdout=False,
                )
                self.progress.start()
            self.rows[id(act)] = self.progress.add_task(self._text(act), total=act.total or None, completed=act.done)

    @staticmethod
    def _text(act: Activity) -> str:
        from rich.markup import escape

        from cuberun.console import printable

        status = act.status()
        return escape(printable(f"{act.what}{': ' + status if status else ''}"))

    def changed(self, act: Activity, *, force: bool) -> None:
        with self.lock:
            row = self.rows.get(id(act))
            if row is not None and self.progress is not None:
                self.progress.update(row, description=self._text(act), total=act.total or None, completed=act.done)

    def remove(self, act: Activity) -> None:
        with self.lock:
            row = self.rows.pop(id(act), None)
            if self.progress is None:
                return
            if row is not None:
                self.progress.remove_task(row)
            if not self.rows:
                self.progress.stop()
                self.progress = None


_LIVE = _Live()


def _display(stream: TextIO | None = None) -> _Display:
    chosen = mode(stream)
    if chosen == "off":
        return _Off()
    if chosen == "tty" and not verbose():  # -v: the tools' own output goes to the terminal too, between plain lines
        return _LIVE
    return _Plain(interval())


TICK = 0.5  # seconds between calls of an activity's `tick` (work that prints nothing, measured from outside)


@contextmanager
def activity(what: str, *, total: float | None = None, unit: str = "", tick: Callable[[Activity], None] | None = None,
             phase: str = "") -> Iterator[Activity]:
    """Long work shown while the block runs; the display is taken down when it ends. `tick`,
    when given, is called every TICK seconds meanwhile (e.g. to count files an installer wrote);
    `phase` is the first phase (in the first line already)."""
    from cuberun.console import printable

    display = _display()
    act = Activity(printable(what), total, unit, display)
    act.stage = phase
    display.add(act)
    stop = threading.Event()
    if tick is not None and not isinstance(display, _Off):
        def ticking() -> None:
            while not stop.wait(TICK):
                try:
                    tick(act)
                except Exception:  # only a display: never stops the work
                    pass

        threading.Thread(target=ticking, daemon=True, name="cuberun-progress-tick").start()
    try:
        yield act
    finally:
        stop.set()
        display.remove(act)


class Progress:
    """Hashing: `add(n)` after each chunk; `close()` at the end. Nothing for the first seconds,
    then bytes done of the total and the rate, on the shared display (a live line on a
    terminal, a plain line per interval otherwise)."""

    def __init__(self, what: str, total: int, *, stream: TextIO | None = None, delay: float = DELAY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = stream
        self.delay = delay
        self.clock = clock
        self.start = clock()
        self.next = self.start + delay
        self.shown = False
        self._mode: str | None = None
        self._act: Activity | None = None

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def tty(self) -> bool:
        return self._kind() == "tty"

    def _kind(self) -> str:
        if self._mode is None:
            self._mode = mode(self.stream)
        return self._mode

    def add(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now >= self.next:
            self._show(now)

    def rate(self, now: float) -> str:
        return f"{human(self.done / max(now - self.start, 1e-9))}/s"

    def line(self, now: float) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""
        return f"cuberun: hashing {self.what}: {human(self.done)} of {human(self.total)}{pct}, {self.rate(now)}"

    def _show(self, now: float) -> None:
        kind = self._kind()
        if kind == "off":
            self.next = float("inf")
            return
        self.shown = True
        if kind == "tty":
            if self._act is None:
                self._act = Activity(f"hashing {self.what}", self.total, "bytes", _LIVE)
                _LIVE.add(self._act)
            self._act.note = self.rate(now)
            self._act.update(done=self.done)
            self.next = now + TTY_INTERVAL
            return
        from cuberun.console import _LOCK

        with _LOCK:
            try:
                out = self._out()
                out.write(self.line(now) + "\n")
                out.flush()
            except (OSError, ValueError):
                pass
        self.next = now + max(interval(), 0.05)

    def close(self) -> None:
        if self._act is not None:
            _LIVE.remove(self._act)
            self._act = None


def image_line(line: str, act: Activity) -> None:
    """Progress from one line of an image build or pull (docker, podman, BuildKit)."""
    import re

    step = re.match(r"^(?:Step|STEP) (\d+)/(\d+)\s*:?\s*(.*)$", line) or re.match(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\] (.*)$", line)
    if step:
        act.update(done=int(step.group(1)), total=int(step.group(2)), note=step.group(3)[:60])
    elif line.endswith(": Pulling fs layer"):
        act.update(total=(act.total or 0) + 1)
    elif line.endswith((": Pull complete", ": Already exists")):
        act.update(advance=1)


class Waiting:
    """A queue wait, shown while a job waits (Slurm PENDING, a pod Pending, a Backend.AI session
    queued or preparing) and taken down when it starts: call `state(...)` at each poll or event
    and `close()` when the wait ends. `waiting`: the states that are a wait (default: Slurm's
    and Kubernetes')."""

    WAITING = ("PENDING", "Pending", "CONFIGURING", "REQUEUED")

    def __init__(self, what: str, waiting: tuple[str, ...] | None = None) -> None:
        self.what = what
        self.waiting = self.WAITING if waiting is None else waiting
        self._cm: Any = None
        self._act: Activity | None = None

    @property
    def active(self) -> bool:
        return self._cm is not None

    def state(self, state: str | None, reason: str = "") -> None:
        if state not in self.waiting:
            self.close()
            return
        text = f"{state}{': ' + reason if reason else ''}"
        if self._cm is None:
            self._cm = activity(self.what, phase=text)
            self._act = self._cm.__enter__()
        elif self._act is not None and text != self._act.stage:
            self._act.phase(text)  # a new state: a line at once

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm, self._act = self._cm, None, None
            cm.__exit__(None, None, None)
