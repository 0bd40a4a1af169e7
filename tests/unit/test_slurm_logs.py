"""The end of a Slurm job's log (slurm/logs.py, _finish_tails): a shared filesystem can show a
log's last writes (or the whole log) late, so after the job ended a tail is done only once its
size stayed the same across polls spanning LOG_GRACE (bounded by LOG_WAIT); at once when the log
ends with the job's cuberun `end` handshake event; never waiting after a cancel. The files are
real; what the job still writes is scripted per poll, and time is an injected clock; the real
runner is exercised by tests/integration/test_slurm_runner.py and tests/faults/test_slurm_faults.py."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from cuberun.handshake import MARKER
from cuberun.runners.slurm.logs import LOG_GRACE, LOG_POLL, LOG_WAIT, _finish_tails, _LogTail

END = MARKER + b'{"event": "end", "exit_code": 0, "v": 1}\n'
START = MARKER + b'{"event": "start", "run_id": "r1", "task": "hello", "v": 1}\n'


class Clock:
    """Sleeping moves the clock on, nothing else does; then[n] runs after the n-th sleep (the job
    or the filesystem writing meanwhile)."""

    def __init__(self, then: dict[int, Callable[[], object]] | None = None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.then = then or {}

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds == LOG_POLL
        self.now += seconds
        self.sleeps += 1
        action = self.then.get(self.sleeps)
        if action is not None:
            action()


class Cancel:
    def __init__(self, requested: bool = False) -> None:
        self.requested = requested


def append(path: Path, data: bytes) -> Callable[[], object]:
    def write() -> None:
        with open(path, "ab") as fh:
            fh.write(data)

    return write


def tail_of(path: Path, text: bytes | None) -> tuple[_LogTail, io.BytesIO]:
    """A tail that followed the job while it ran: it has shown `text` (None: no log yet)."""
    if text is not None:
        path.write_bytes(text)
    sink = io.BytesIO()
    tail = _LogTail(str(path), [sink])
    tail.pump()
    return tail, sink


def finish(tails: list[_LogTail], clock: Clock, cancel: Cancel | None = None) -> None:
    _finish_tails(tails, cancel, clock=clock.monotonic, sleep=clock.sleep)


def test_lines_that_show_late_are_copied(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    tail, sink = tail_of(log, START + b"working\n")
    clock = Clock(then={3: append(log, b"last line\n")})  # 0.3 s after the job ended
    finish([tail], clock)
    assert sink.getvalue() == b"working\nlast line\n"  # the handshake line stays in the job log only
    assert 0.3 + LOG_GRACE <= clock.now <= 0.3 + LOG_GRACE + 2 * LOG_POLL  # the grace counts from the last growth


def test_a_log_ending_with_the_end_event_needs_no_wait(tmp_path: Path) -> None:
    tail, sink = tail_of(tmp_path / "job.log", START + b"hello\n" + END)
    clock = Clock()
    finish([tail], clock)
    assert sink.getvalue() == b"hello\n" and clock.sleeps == 0


def test_the_wait_ends_when_the_end_event_shows(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    tail, sink = tail_of(log, START + b"hello\n")
    clock = Clock(then={4: append(log, b"bye\n" + END)})
    finish([tail], clock)
    assert sink.getvalue() == b"hello\nbye\n" and clock.sleeps == 4


def test_text_after_the_end_event_is_waited_for(tmp_path: Path) -> None:
    """slurmstepd may write after the job's cuberun exited (an oom-kill note): the event must be last."""
    log = tmp_path / "job.log"
    tail, sink = tail_of(log, START + END + b"slurmstepd: error: Detected 1 oom_kill event\n")
    clock = Clock()
    finish([tail], clock)
    assert sink.getvalue() == b"slurmstepd: error: Detected 1 oom_kill event\n" and clock.now >= LOG_GRACE


@pytest.mark.parametrize("text", [None, START + b"working\n"], ids=["no-log-yet", "log-not-ended"])
def test_no_wait_after_a_cancel(tmp_path: Path, text: bytes | None) -> None:
    tail, sink = tail_of(tmp_path / "job.log", text)
    (tmp_path / "job.log").write_bytes((text or b"") + b"cancelled meanwhile\n")
    clock = Clock()
    finish([tail], clock, Cancel(requested=True))
    assert clock.sleeps == 0 and sink.getvalue() == b"working\ncancelled meanwhile\n"[0 if text else 8 :]


def test_a_cancel_during_the_wait_stops_it(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    tail, sink = tail_of(log, b"working\n")
    cancel = Cancel()
    clock = Clock(then={2: lambda: setattr(cancel, "requested", True), 3: append(log, b"too late\n")})
    finish([tail], clock, cancel)
    assert clock.sleeps == 2 and sink.getvalue() == b"working\n"


def test_a_log_that_keeps_growing_is_bounded(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    tail, sink = tail_of(log, b"0\n")
    clock = Clock(then={n: append(log, b"%d\n" % n) for n in range(1, 1000)})
    finish([tail], clock)
    assert LOG_WAIT <= clock.now <= LOG_WAIT + 2 * LOG_POLL
    assert sink.getvalue() == b"".join(b"%d\n" % n for n in range(clock.sleeps + 1))  # all that was written up to the last read


def test_a_log_that_appears_late_is_copied_and_one_never_written_costs_the_grace(tmp_path: Path) -> None:
    late, never = tmp_path / "late.log", tmp_path / "never.log"
    tail, sink = tail_of(late, None)
    missing, nothing = tail_of(never, None)
    clock = Clock(then={5: append(late, START + b"hello\n" + END)})
    finish([tail, missing], clock)
    assert sink.getvalue() == b"hello\n" and nothing.getvalue() == b""
    assert LOG_GRACE <= clock.now <= LOG_GRACE + 2 * LOG_POLL  # the missing one: its absence stayed the same


def test_tails_wait_together_and_each_only_as_long_as_it_needs(tmp_path: Path) -> None:
    done, slow = tmp_path / "done.log", tmp_path / "slow.log"
    first, out1 = tail_of(done, b"a\n" + END)
    second, out2 = tail_of(slow, b"b\n")
    clock = Clock(then={2: append(done, b"never read\n"), 10: append(slow, b"b2\n")})
    finish([first, second], clock)
    assert out1.getvalue() == b"a\n"  # done at the first read: not read again
    assert out2.getvalue() == b"b\nb2\n" and clock.now <= 1.0 + LOG_GRACE + 2 * LOG_POLL


def test_a_held_fragment_is_written_at_the_end(tmp_path: Path) -> None:
    tail, sink = tail_of(tmp_path / "job.log", b"ok\ncuberun-hand")  # could have begun a handshake line: held
    assert sink.getvalue() == b"ok\n"
    finish([tail], Clock(), Cancel(requested=True))
    assert sink.getvalue() == b"ok\ncuberun-hand"
