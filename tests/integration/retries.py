"""What the real retry tests of every runner check (tests/integration/test_retry_real.py and the
runners' own real-test modules, which keep their module fixtures: a built image, a SIF, a rootfs).

The flaky task of each runner fails while a marker file in its output folder is missing, and
appends one `x` to it on every attempt: after a run retried once, the marker reads `xx`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import run_records

# the flaky task: a program for a runner that runs the cube's own files (local, ssh, slurm)
FLAKY_PY = """\
import os, sys
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--out="))
marker = os.path.join(out, "marker")
done = os.path.exists(marker)
with open(marker, "a") as f:
    f.write("x")
print("attempt", open(marker).read().count("x"), flush=True)
sys.exit(0 if done else 3)
"""
# the flaky task as one `python3 -c` entrypoint (for a container: the cube folder is not mounted); it prints `attempt N`
FLAKY_ENTRY = ("python3 -c 'import os, sys; out = [a.split(\"=\", 1)[1] for a in sys.argv if a.startswith(\"--out=\")][0]; "
               "m = os.path.join(out, \"marker\"); done = os.path.exists(m); open(m, \"a\").write(\"x\"); "
               "print(\"attempt\", open(m).read().count(\"x\"), flush=True); sys.exit(0 if done else 3)'")


def check_second_attempt(workspace: Path, proc: subprocess.CompletedProcess[str], marker: Path, *, first_exit: int = 3,
                         max_attempts: int = 3, log_words: bool = True) -> dict[str, Any]:
    """Exit 0 on attempt 2 of `max_attempts`: the record, the summary, the marker the first attempt left.

    `first_exit`: the exit code the failed first attempt is recorded with (what the backend passes on).
    `log_words`: the task prints `attempt N`, and the task's log (both attempts appended) has it."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    (record,) = run_records(workspace)
    assert (record["status"], record["exit_code"], record["attempt"], record["max_attempts"]) == ("succeeded", 0, 2, max_attempts), record
    assert [a["attempt"] for a in record["attempts"]] == [1, 2]
    assert [a["exit_code"] for a in record["attempts"]] == [first_exit, 0]
    assert all(a["elapsed_s"] >= 0 for a in record["attempts"])
    assert record["limits"]["retries"] == max_attempts - 1
    assert marker.read_text() == "xx"  # the first attempt's output was left as it wrote it
    assert f"succeeded on attempt 2 of {max_attempts}" in proc.stderr
    assert f"failed with exit code {first_exit} on attempt 1 of {max_attempts}" in proc.stderr
    log = Path(record["log"]).read_text()
    assert f"cuberun: attempt 1 of {max_attempts} failed with exit code {first_exit}" in log
    if log_words:
        assert "attempt 1" in log and "attempt 2" in log
    return record


def check_timed_out_twice(workspace: Path, proc: subprocess.CompletedProcess[str], seconds: int) -> dict[str, Any]:
    """`--timeout=seconds --retries=1`: both attempts hit the limit, exit 124, the record and summary say so."""
    assert proc.returncode == 124, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    (record,) = run_records(workspace)
    assert (record["status"], record["exit_code"], record["details"]["timed_out"]) == ("failed", 124, True), record
    assert (record["attempt"], record["max_attempts"]) == (2, 2)
    assert [(a["exit_code"], a.get("timed_out")) for a in record["attempts"]] == [(124, True), (124, True)]
    assert record["limits"]["timeout"] == seconds and record["limits"]["timeout_source"] == "cli"
    assert "timed out on attempt 1 of 2" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and f"timed out after {seconds} s (--timeout)" in errors[0] and "every attempt failed" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    return record


# what a task in a container writes about itself, the same seen from inside and from the host: its
# PID namespace and its start time (clock ticks after boot; a namespace's number is reused once it is gone)
WHOAMI_SH = 'echo "$(readlink /proc/$$/ns/pid) $(cut -d" " -f22 /proc/$$/stat)"'


def still_running(ns: str, start: str) -> list[int]:
    """The live host processes in PID namespace `ns` (`pid:[4026532...]`) started at `start` (both as
    WHOAMI_SH wrote them from inside the container): the task itself when it outlived its run."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if fields[0] != "Z" and fields[19] == start:  # fields[0] is field 3 (the state), fields[19] field 22 (starttime)
            found.append(int(entry))
    return found
