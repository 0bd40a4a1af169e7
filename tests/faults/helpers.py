"""What every fault test shares: one cube whose task fails on demand, runs in the background,
small tmpfs workspaces, and checks that nothing is left running.

The cube has one task, `work`, with two inputs (`script`: the program below, `mode`: what it
does this time) and one output directory `out/`. Changing `mode.txt` changes an input, so the
task runs again after a success; the program itself lives in the workspace, so the same cube
runs on the host, in containers (mounted like any input), over ssh and in Slurm jobs:

- `ok TEXT`: writes out/result.txt and exits 0 (the "earlier complete output");
- `gone PID...`: like `ok`, but exits 5 when one of these (host) pids still runs;
- `crash`: prints a line and exits 3 without touching out/;
- `sigkill`: kills itself with SIGKILL (what the kernel's OOM killer does);
- `hog MB`: touches MB megabytes (an OOM kill under a memory limit);
- `sleep S`: starts a grandchild that ignores SIGINT and SIGTERM, prints `READY <pid> <child pid>`,
  then waits S seconds (interrupt and backend-death tests);
- `fill MB`: writes out/big.bin until MB megabytes or the disk is full; when full, prints 400 more
  lines (more than the run log has room for) and exits 28 (ENOSPC).

Process rules (see /work/shared/reference/test-backends.md): only PIDs these tests started are
ever signalled, after checking /proc/PID/cmdline; every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

TASK_MARK = "cuberun-fault-task"
CHILD_MARK = "cuberun-fault-grandchild"
ENTRYPOINT = (
    "python3 -c \"import sys; a = dict(x[2:].split('=', 1) for x in sys.argv[1:]); "
    f"exec(compile(open(a['script']).read(), a['script'], 'exec'))  # {TASK_MARK}\""
)

FAULT_PY = textwrap.dedent(
    f'''
    import os, signal, subprocess, sys, time

    mode = open(a["mode"]).read().split()
    out = a["out"]
    what = mode[0]
    print(f"fault: mode {{what}}", flush=True)
    if what == "gone":  # ok, but only when none of the given pids runs any more (an orphan of a killed run)
        running = []
        for pid in mode[1:]:
            try:
                state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                running.append(pid)
        if running:
            print(f"fault: still running: {{' '.join(running)}}", flush=True)
            sys.exit(5)
        mode = ["ok", "after", "the", "orphans"]
        what = "ok"
    if what == "ok":
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "result.txt"), "w") as fh:
            fh.write(" ".join(mode[1:]) + "\\n")
        sys.exit(0)
    if what == "crash":
        print("fault: crashing with exit 3", flush=True)
        sys.exit(3)
    if what == "sigkill":
        print("fault: SIGKILL to myself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "hog":
        block = bytearray(int(mode[1]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("fault: hog survived", flush=True)
        sys.exit(0)
    if what == "fill":
        path = os.path.join(out, "big.bin")
        written = 0
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                while written < (int(mode[1]) << 20):
                    written += os.write(fd, b"\\0" * 65536)
            finally:
                os.close(fd)
        except OSError as exc:
            print(f"fault: fill stopped after {{written}} bytes: {{exc.strerror}}", flush=True)
            for i in range(400):
                print(f"fault: cleaning up after the full disk, line {{i:03d}} " + "." * 40, flush=True)
            sys.exit(28)
        print(f"fault: wrote {{written}} bytes", flush=True)
        sys.exit(0)
    if what == "sleep":
        code = (
            "import signal, sys, time  # {CHILD_MARK}\\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
            "print('armed', flush=True)\\n"
            "end = time.monotonic() + float(sys.argv[1])\\n"
            "while time.monotonic() < end:\\n"
            "    time.sleep(0.05)\\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code, mode[1]], stdout=subprocess.PIPE)
        child.stdout.readline()  # its handlers are in place: only SIGKILL stops it now
        print(f"fault: READY {{os.getpid()}} {{child.pid}}", flush=True)
        end = time.monotonic() + float(mode[1])
        while time.monotonic() < end:
            time.sleep(0.05)
        print("fault: slept", flush=True)
        sys.exit(0)
    print(f"fault: unknown mode {{what}}", flush=True)
    sys.exit(99)
    '''
)

CUBE_YAML = """\
name: faults
local:
  command: python3
  env: current
tasks:
  work:
    entrypoint: {entrypoint}
    parameters:
      inputs: {{script: {{type: file, default: fault.py}}, mode: {{type: file, default: mode.txt}}}}
      outputs: {{out: {{type: directory, default: out/}}}}
"""

SLEEP_S = 120  # how long a `sleep` task would run if nothing stopped it
RUN_TIMEOUT = 300.0  # any single cuberun invocation


# -- the cube -------------------------------------------------------------------------------------------
def fault_cube(root: Path, sections: dict[str, Any] | None = None) -> Path:
    """The cube at root/faults (workspace included); `sections` adds e.g. {"docker": {"image": ...}}."""
    import yaml

    cube = root / "faults"
    (cube / "workspace").mkdir(parents=True)
    text = CUBE_YAML.format(entrypoint=json.dumps(ENTRYPOINT))
    if sections:
        text += yaml.safe_dump(sections, default_flow_style=False)
    (cube / "mlcube.yaml").write_text(text, encoding="utf-8")
    (cube / "workspace" / "fault.py").write_text(FAULT_PY, encoding="utf-8")
    set_mode(cube / "workspace", "ok first")
    return cube


def set_mode(workspace: Path, mode: str) -> None:
    (workspace / "mode.txt").write_text(mode + "\n", encoding="utf-8")


def seed_workspace(cube: Path, workspace: Path) -> None:
    """Copy the task's inputs into another workspace (e.g. a tmpfs)."""
    for name in ("fault.py", "mode.txt"):
        (workspace / name).write_bytes((cube / "workspace" / name).read_bytes())


# -- records and state ------------------------------------------------------------------------------------
def records(workspace: Path, platform: str | None = None) -> list[dict[str, Any]]:
    """The run records of a workspace, oldest first (optionally of one platform only), in the
    order cuberun itself lists them (records created in the same millisecond included)."""
    from cuberun.records import list_runs

    return [r for r in list_runs(workspace, warn=False) if platform is None or r.get("platform") == platform]


def state_path(workspace: Path) -> Path:
    return workspace / ".cuberun" / "state" / "work.json"


def completed(workspace: Path) -> dict[str, bytes]:
    """What a successful run left: the up-to-date state (outputs recorded as complete) and its output."""
    return {"state": state_path(workspace).read_bytes(), "result": (workspace / "out" / "result.txt").read_bytes()}


def assert_completed_intact(workspace: Path, before: dict[str, bytes]) -> None:
    """The failed run recorded nothing as complete and left the earlier complete output alone."""
    assert completed(workspace) == before, "the earlier complete run's state or output changed"
    state = json.loads(before["state"])
    assert state["run_id"] in {r["run_id"] for r in records(workspace)}, "the state names no known run"
    assert not list(state_path(workspace).parent.glob(".*.tmp")), "a half-written state file was left behind"


def error_line(stderr: str) -> str:
    """Exactly one `cuberun: error:` line, and no traceback."""
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(lines) == 1, f"expected one error line:\n{stderr}"
    return lines[0]


def check_record(record: dict[str, Any], status: str | tuple[str, ...], exit_code: int) -> None:
    statuses = (status,) if isinstance(status, str) else status
    assert record["task"] == "work", record
    assert record["status"] in statuses and record["exit_code"] == exit_code, {k: record.get(k) for k in ("status", "exit_code", "error", "reason")}
    assert record["end"] is not None, record
    assert "outputs" not in record, "a failed run recorded output fingerprints"
    assert not list(Path(record["log"]).parent.glob(".reserved-space")), "the run still holds its reserved disk space"


# -- processes --------------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not this one) whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            line = cmdline(int(entry))
            if text in line and alive(int(entry)):
                found.append((int(entry), line[:200]))
    return found


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def assert_gone(pids: Sequence[int], timeout: float = 15.0) -> float:
    """The task's processes end within `timeout` seconds; returns how long that took."""
    start = time.monotonic()
    left = [p for p in pids if alive(p)]
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout), f"still running after {timeout} s: {[(p, cmdline(p)) for p in left]}"
    return time.monotonic() - start


def kill_ours(pids: Sequence[int], *marks: str) -> None:
    """Cleanup: SIGKILL processes the test started, if their command line still shows it."""
    for pid in pids:
        if alive(pid) and any(mark in cmdline(pid) for mark in marks or (TASK_MARK, CHILD_MARK)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_pid(pid: int, mark: str, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> bool:
    """Stop a daemon this test started: `sig`, a bounded wait, then SIGKILL; only while its
    command line still contains `mark` (no PID reuse). True when it is gone."""
    if not alive(pid):
        return True
    if mark not in cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_until(lambda: not alive(pid), timeout):
        return True
    if mark in cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return wait_until(lambda: not alive(pid), 10)


class Background:
    """`python -m cuberun ARGS` in the background, output in files; always stopped at the end."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path, name: str = "run") -> None:
        self.out_path = cwd / f"{name}.stdout"
        self.err_path = cwd / f"{name}.stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "cuberun", *args], env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> list[int]:
        """Until the task printed `fault: READY <pid> <child>`: those pids (real ones, or the
        container's own when it has a pid namespace)."""
        pattern = re.compile(r"fault: READY (\d+) (\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(self.stdout)
            if match:
                return [int(match.group(1)), int(match.group(2))]
            if self.proc.poll() is not None:
                raise AssertionError(f"cuberun exited {self.proc.returncode} before the task was ready\n{self.stdout}\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"the task was not ready within {timeout} s\n{self.stdout}\n{self.stderr}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def interrupt(run: Background, sig: int, timeout: float = 60.0) -> tuple[int, float]:
    """Send `sig` to cuberun; its exit code and how long it took to exit."""
    start = time.monotonic()
    run.signal(sig)
    code = run.wait(timeout)
    return code, time.monotonic() - start


# -- disks ------------------------------------------------------------------------------------------------
def can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here (None: it can)."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs as the workspace needs root"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A small tmpfs at `path`, unmounted at the end whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        from tests.backends import skip_or_fail

        skip_or_fail(f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(40):
            if subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def fill(directory: Path) -> int:
    """Fill the file system under `directory` completely; the bytes written."""
    written = 0
    fd = os.open(directory / "filler.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    written += os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return written


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def disk_size(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_blocks * st.f_frsize


# -- runners and scenarios --------------------------------------------------------------------------------
class Harness:
    """How one runner is driven: `cuberun run` for the fault cube on `platform`, and what "nothing
    left running" means there. Runner test modules subclass it (containers, remote hosts, jobs)."""

    platform = "local"
    real_pids = True  # the READY pids are this machine's (False: a container's own pid namespace)

    def __init__(self, env: dict[str, str], cwd: Path, extra: Sequence[str] = ()) -> None:
        self.env = env
        self.cwd = cwd
        self.extra = list(extra)

    def argv(self, cube: Path, extra: Sequence[str], workspace: Path | None) -> list[str]:
        argv = ["run", f"--mlcube={cube}", "--task=work", f"--platform={self.platform}", *self.extra, *extra]
        return argv + ([f"--workspace={workspace}"] if workspace is not None else [])

    def run(self, cube: Path, *extra: str, workspace: Path | None = None, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *self.argv(cube, extra, workspace)], env=self.env, cwd=str(self.cwd),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def start(self, cube: Path, *extra: str, workspace: Path | None = None, name: str = "run") -> Background:
        return Background(self.argv(cube, extra, workspace), self.env, self.cwd, name)

    def ok(self, cube: Path, *extra: str, workspace: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = self.run(cube, *extra, workspace=workspace)
        assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    def leftovers(self, workspace: Path, pids: Sequence[int]) -> list[str]:
        """What still runs of this test's task: its READY pids, and any process that names the workspace."""
        left = [f"pid {p}: {cmdline(p)[:120]}" for p in pids if self.real_pids and alive(p)]
        left += [f"pid {p}: {line}" for p, line in processes_mentioning(str(workspace))]
        return left

    def assert_nothing_left(self, workspace: Path, pids: Sequence[int] = (), timeout: float = 15.0) -> None:
        if not wait_until(lambda: not self.leftovers(workspace, pids), timeout, 0.2):
            raise AssertionError(f"still running {timeout} s later: {self.leftovers(workspace, pids)}")

    def cleanup(self, workspace: Path, pids: Sequence[int]) -> None:
        """Whatever happened, stop what the test started (only that)."""
        if self.real_pids:
            kill_ours(pids)
        kill_ours([p for p, _ in processes_mentioning(str(workspace))], TASK_MARK, CHILD_MARK, str(workspace))


def crash_after_success(h: Harness, cube: Path, code: int = 3) -> tuple[str, dict[str, Any], subprocess.CompletedProcess[str]]:
    """A successful run, then the same task crashes: its exit code, one error line, a failed
    record, the earlier state and output untouched, nothing left running."""
    ws = cube / "workspace"
    h.ok(cube)
    before = completed(ws)
    set_mode(ws, "crash")
    proc = h.run(cube)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    line = error_line(proc.stderr)
    assert "fault: crashing with exit 3" in proc.stdout
    record = records(ws, h.platform)[-1]
    check_record(record, "failed", code)
    assert_completed_intact(ws, before)
    h.assert_nothing_left(ws)
    return line, record, proc


def killed_after_success(h: Harness, cube: Path, *extra: str, mode: str = "sigkill", status: str | tuple[str, ...] = "failed",
                         code: int = 137) -> tuple[str, dict[str, Any], subprocess.CompletedProcess[str]]:
    """A successful run, then the task is SIGKILLed (by itself, or by an OOM killer under `extra` limits)."""
    ws = cube / "workspace"
    h.ok(cube)
    before = completed(ws)
    set_mode(ws, mode)
    proc = h.run(cube, *extra)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    line = error_line(proc.stderr)
    record = records(ws, h.platform)[-1]
    check_record(record, status, code)
    assert_completed_intact(ws, before)
    h.assert_nothing_left(ws)
    return line, record, proc


def killed_from_outside_after_success(h: Harness, cube: Path, task_pid: Callable[[list[int]], int],
                                      status: str | tuple[str, ...] = "failed") -> tuple[str, dict[str, Any], Background]:
    """A successful run, then the running task is SIGKILLed from the host, as the kernel's OOM
    killer would (in a container the task is PID 1 there, which cannot kill itself)."""
    ws = cube / "workspace"
    h.ok(cube)
    before = completed(ws)
    set_mode(ws, f"sleep {SLEEP_S}")
    run = h.start(cube, name="killed")
    pids: list[int] = []
    try:
        pids = run.wait_ready()
        pid = task_pid(pids)
        assert TASK_MARK in cmdline(pid), (pid, cmdline(pid))
        os.kill(pid, signal.SIGKILL)
        code = run.wait(60)
        h.assert_nothing_left(ws, pids)
    finally:
        run.stop()
        h.cleanup(ws, pids)
    assert code == 137, f"exit {code}\n{run.stdout}\n{run.stderr}"
    line = error_line(run.stderr)
    record = records(ws, h.platform)[-1]
    check_record(record, status, 137)
    assert_completed_intact(ws, before)
    return line, record, run


def interrupted_after_success(h: Harness, cube: Path, sig: int, *, ready: Callable[[list[int]], object] | None = None,
                              gone_within: float = 15.0) -> tuple[str, dict[str, Any], float]:
    """A successful run, then a long run of the task is stopped by `sig` sent to cuberun:
    128+sig, 'was interrupted', an interrupted record, nothing left running within `gone_within` s."""
    ws = cube / "workspace"
    h.ok(cube)
    before = completed(ws)
    set_mode(ws, f"sleep {SLEEP_S}")
    run = h.start(cube, name=f"interrupt-{sig}")
    pids: list[int] = []
    try:
        pids = run.wait_ready()
        if h.real_pids:
            assert all(alive(p) for p in pids), pids
        if ready is not None:
            ready(pids)
        code, took = interrupt(run, sig)
        start = time.monotonic()
        h.assert_nothing_left(ws, pids, timeout=gone_within)
        gone = took + time.monotonic() - start
    finally:
        run.stop()
        h.cleanup(ws, pids)
    assert code == 128 + sig, f"exit {code}\n{run.stdout}\n{run.stderr}"
    line = error_line(run.stderr)
    assert "was interrupted" in line, line
    record = records(ws, h.platform)[-1]
    check_record(record, "interrupted", 128 + sig)
    assert_completed_intact(ws, before)
    return line, record, gone


def cuberun_killed_mid_run(h: Harness, cube: Path, *, orphans_visible: bool, ready: Callable[[list[int]], object] | None = None,
                           ) -> tuple[dict[str, Any], subprocess.CompletedProcess[str], str]:
    """A successful run, then cuberun itself is SIGKILLed while its task runs (with a grandchild
    that ignores SIGTERM): the task and everything it started end (its watchdog), the record
    is listed as `lost`, and a new run, started at once, runs the task only once nothing of the
    killed run runs any more (`gone` mode checks the orphans' pids from inside the new task when
    `orphans_visible`, i.e. they are this machine's pids). Returns the lost record, the new run
    and the listing of `cuberun runs`."""
    ws = cube / "workspace"
    h.ok(cube)
    set_mode(ws, f"sleep {SLEEP_S}")
    run = h.start(cube, name="killed-cuberun")
    pids: list[int] = []
    try:
        pids = run.wait_ready()
        if ready is not None:
            ready(pids)
        cuberun = run.proc.pid
        assert "cuberun" in cmdline(cuberun), cmdline(cuberun)
        killed = records(ws, h.platform)[-1]
        set_mode(ws, ("gone " + " ".join(map(str, pids))) if orphans_visible else "ok after the kill")
        os.kill(cuberun, signal.SIGKILL)  # our own child, just checked
        assert run.wait(60) == -signal.SIGKILL
        again = h.run(cube)  # at once: it must wait until the orphans are gone
        h.assert_nothing_left(ws, pids if orphans_visible else ())
    finally:
        run.stop()
        h.cleanup(ws, pids)
    assert again.returncode == 0, f"exit {again.returncode}\n{again.stdout}\n{again.stderr}"
    assert "fault: still running" not in again.stdout, again.stdout
    listing = subprocess.run([sys.executable, "-m", "cuberun", "runs", f"--mlcube={cube}", "--status=lost"], env=h.env, cwd=str(h.cwd),
                             capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert listing.returncode == 0, listing.stderr
    lost = [r for r in records(ws, h.platform) if r["run_id"] == killed["run_id"]]
    assert [r["status"] for r in lost] == ["lost"], lost
    assert records(ws, h.platform)[-1]["status"] == "succeeded"
    for lock in (ws / ".cuberun" / "locks").glob("*.lock"):  # every lock is free again
        fd = os.open(lock, os.O_RDWR)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    return lost[0], again, listing.stdout


def disk_fills_during_the_task(h: Harness, cube: Path, workspace: Path, *, all_output: bool = True) -> tuple[str, dict[str, Any]]:
    """`workspace` is a small tmpfs: a successful run there, then the task fills the disk and
    exits 28. cuberun passes 28 through with one error line, finishes the record (in place: there
    is no room for a new file), records no state, keeps the earlier output."""
    seed_workspace(cube, workspace)
    h.ok(cube, workspace=workspace)
    before = completed(workspace)
    set_mode(workspace, "fill 64")
    proc = h.run(cube, workspace=workspace)
    assert proc.returncode == 28, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr}"
    line = error_line(proc.stderr)
    assert "fault: fill stopped after" in proc.stdout and "No space left on device" in proc.stdout
    if all_output:  # what the log had no room for still reached the terminal
        assert "line 399" in proc.stdout
    assert (workspace / "out" / "big.bin").stat().st_size > 0.75 * disk_size(workspace), "the task did not fill the disk"
    record = records(workspace, h.platform)[-1]
    check_record(record, "failed", 28)
    assert_completed_intact(workspace, before)
    assert not list(workspace.rglob(".record.*.tmp")), "a half-written record was left behind"
    h.assert_nothing_left(workspace)
    return line, record


def workspace_full_before_the_run(h: Harness, cube: Path, workspace: Path) -> str:
    """`workspace` is a small tmpfs, full before the run: cuberun cannot even write its lock and
    record. One error line naming the file, exit 1, no new record, the earlier state untouched."""
    seed_workspace(cube, workspace)
    h.ok(cube, workspace=workspace)
    before = completed(workspace)
    set_mode(workspace, "ok second")
    known = [r["run_id"] for r in records(workspace)]
    fill(workspace)
    proc = h.run(cube, workspace=workspace)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    line = error_line(proc.stderr)
    assert re.fullmatch(
        rf"cuberun: error: cannot write {re.escape(str(workspace))}/\.cuberun/\S+: No space left on device\. "
        r"Hint: free space on that file system \(df -h\), or choose another --workspace", line), line
    assert "fault: mode" not in proc.stdout, "the task ran"
    assert [r["run_id"] for r in records(workspace)] == known, "a record of a run that never started"
    assert all(r["status"] == "succeeded" for r in records(workspace))
    assert_completed_intact(workspace, before)
    h.assert_nothing_left(workspace)
    return line
