"""A function run in a forked copy of this process (no program is started), its text answer read
from a pipe: file-system work done on another core while this process starts up (codeid.start_early).
Kept apart from process.py so that forking early does not first import subprocess and the rest."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


class Forked:
    """A function running in a forked copy of this process (no program is started): its text
    answer is read from a pipe. Used to do file-system work on another core while this process
    carries on; whoever forks reaps (result() or cancel())."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.done = False

    def result(self) -> str | None:
        """The child's answer, or None when it failed (the caller then does the work itself)."""
        if self.done:
            return None
        chunks = []
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            chunks = []
        finally:
            self._reap(kill=False)
        text = b"".join(chunks).decode("utf-8", "surrogateescape")
        return text if text.startswith("ok\n") and text.endswith("\nend\n") else None

    def cancel(self) -> None:
        if not self.done:
            self._reap(kill=True)

    def _reap(self, kill: bool) -> None:
        self.done = True
        try:
            os.close(self.fd)
        except OSError:
            pass
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)  # our own child, by the pid fork returned
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def fork_call(fn: Callable[[], str]) -> Forked | None:
    """Run fn() in a forked child (at start-up, before any thread exists); None when fork is
    not possible. The child never returns into cuberun: it writes fn()'s text and _exits."""
    threading = sys.modules.get("threading")  # not imported: no thread was started through it
    if not hasattr(os, "fork") or (threading is not None and threading.active_count() > 1):
        return None
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            data = ("ok\n" + fn() + "\nend\n").encode("utf-8", "surrogateescape")
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
            code = 0
        except BaseException:  # the parent sees no answer and does the work itself
            pass
        finally:
            os._exit(code)
    os.close(write_fd)
    import atexit

    forked = Forked(pid, read_fd)
    atexit.register(forked.cancel)
    return forked
