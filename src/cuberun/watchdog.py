"""The watchdog process of a running task (started by process.watchdog()):

    python -I -S watchdog.py GROUP GRACE [N ARG1 ... ARGN]...

It waits on its stdin, a pipe only cuberun holds open: a byte means "the task is done, exit";
end of file means cuberun is gone (kill -9 included). It then stops the task's process group
GROUP (SIGTERM; SIGKILL after GRACE seconds) and runs the clean-up commands, each given as its
length N and its N arguments (`docker rm -f NAME`, `scancel JOB`).

Started once per task, so it is kept small: the standard library's os, sys and time and the
C core of signal (`_signal`: the `signal` module's enums cost more than the rest of the script)
only (no cuberun package, no json or re), run as a script of a few dozen lines.
"""

import _signal as signal  # the same functions and numbers, without enum
import os
import sys
import time


def commands(words: list[str]) -> list[list[str]]:
    """The clean-up commands from their length-prefixed form: `2 a b 1 c` -> [[a, b], [c]]."""
    found: list[list[str]] = []
    i = 0
    while i < len(words):
        n = int(words[i])
        found.append(words[i + 1 : i + 1 + n])
        i += 1 + n
    return [c for c in found if c]


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(group: int, limit: float) -> None:
    end = time.monotonic() + limit
    while _alive(group) and time.monotonic() < end:
        time.sleep(0.05)


def main(argv: list[str]) -> None:
    watch(int(argv[0]), float(argv[1]), commands(argv[2:]))


def watch(group: int, grace: float, cleanup: list[list[str]]) -> None:
    """Wait on stdin, then (cuberun gone) stop GROUP and run `cleanup`."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    try:
        if os.read(0, 1):  # cuberun says the task is done
            return
    except OSError:
        pass
    if group > 0 and _alive(group):
        for sig, limit in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(group, sig)
            except OSError:
                pass
            _wait(group, limit)
            if not _alive(group):
                break
    for command in cleanup:
        try:
            pid = os.posix_spawnp(command[0], command, dict(os.environ))
        except OSError:
            continue
        end = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
