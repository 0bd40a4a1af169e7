"""Running ssh and rsync: the shared connection, quiet transfers, remote commands with their
output shown, ssh/rsync failures as one-line errors, and what this machine remembers of the
remote (state files)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import BackendError, CuberunError
from cuberun.runners.ssh.commands import SSHCommands
from cuberun.runners.ssh.sync import (
    Plan,
    Problem,
    RsyncProgress,
    RsyncSink,
    _hash,
    _last_line,
    _Sink,
    rsync_problem,
    rsync_stats,
    ssh_problem,
)
from cuberun.valueclass import replace as replace_fields

if TYPE_CHECKING:
    from cuberun.process import Captured, Outcome

PROBE_TIMEOUT = 60.0

# exit 0: found; PROBE_ABSENT: not found. `command -v` alone exits 1 in bash but 127 in dash (Debian's
# /bin/sh), and 127 is also what a missing /bin/sh gives: name the answer ourselves.
PROBE_ABSENT = 3
PROBE_SCRIPT = f'if command -v "$1" >/dev/null 2>&1; then exit 0; else exit {PROBE_ABSENT}; fi'


class SSHConnection(SSHCommands):
    """Talking to the remote host."""

    # -- local state (what this machine knows the remote has) ----------------------------------
    def _state_file(self, kind: str, *key: str) -> Path:
        from cuberun.paths import cache_dir

        t = self.target
        return cache_dir() / "ssh" / f"{kind}-{_hash(t.host, str(t.user), str(t.port), str(t.ssh_config), *key, size=20)}.json"

    @staticmethod
    def _read_state(path: Path) -> dict[str, Any]:
        from cuberun.safeio import read_json

        try:  # a damaged cache (a FIFO, too large, not JSON) is ignored and rewritten
            data = read_json(path, 16 << 20)
        except (CuberunError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _write_state(path: Path, data: Mapping[str, Any]) -> None:
        from cuberun.safeio import write_file

        try:
            write_file(path, json.dumps(dict(data), indent=1) + "\n", what="ssh state")
        except (OSError, CuberunError):
            pass  # the state only saves round trips

    def _install_state(self) -> Path:
        return self._state_file("install", self.venv)

    def _cube_state(self, plan: Plan) -> Path:
        return self._state_file("cube", plan.rcube)

    def sources_fingerprint(self, plan: Plan) -> str:
        """Names, sizes and mtimes of the cube sources (what the source sync would look at)."""
        h = hashlib.sha256()
        skip_dirs = {".git", ".hg", ".svn", "__pycache__", ".cuberun", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
        ws = plan.ws
        count = 0
        for dirpath, dirnames, filenames in os.walk(plan.root):
            dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and os.path.join(dirpath, d) != ws
                                 and not (dirpath == plan.root and d == "workspace"))
            for name in sorted(filenames):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                h.update(f"{os.path.relpath(os.path.join(dirpath, name), plan.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="replace"))
                count += 1
                if count > 50000:  # a huge tree: do not pretend to know; always sync
                    return "unknown-" + str(time.time())
        return h.hexdigest()


    # -- running commands --------------------------------------------------------------------
    def _fail(self, text: str, fallback: str, hint: str | None = None, direction: str | None = None, returncode: int = 1) -> BackendError:
        where = self.target.where()
        problem = ssh_problem(text, where, self.test_command())
        if problem is None and direction is not None:
            problem = rsync_problem(text, returncode, where, direction)
            if problem is None and returncode == 12 and not self._remote_rsync_present():
                # the remote shell's "not found" races rsync's own protocol error: ask directly
                problem = rsync_problem("rsync: command not found", 127, where, direction)
        if problem is not None:
            return BackendError(problem.message, problem.hint)
        return BackendError(f"{fallback}: {_last_line(text)}", hint)

    def _remote_rsync_present(self) -> bool:
        path = str(self.config.get("rsync_path") or "rsync")
        try:
            result = self._capture(self.ssh_argv(["/bin/sh", "-c", PROBE_SCRIPT, "sh", path]))
        except BackendError:
            return True  # cannot tell: keep rsync's own message
        return result.returncode != PROBE_ABSENT

    def _capture(self, argv: Sequence[str], timeout: float = PROBE_TIMEOUT) -> Captured:
        from cuberun.process import capture

        result = capture(argv, timeout=timeout)
        if result.missing:
            raise BackendError(f"{argv[0]} is not installed on this machine", "install OpenSSH's client and rsync (e.g. apt-get install openssh-client rsync)")
        return result

    def _ensure_connection(self) -> None:
        """Open (or find) the shared connection, so every failure to connect shows up here as one
        clear error, and any password prompt happens here, on the terminal."""
        if self._connected:
            return
        path = self.control_path()
        if path is not None and self._prepare_control_dir():
            check = self._capture([*self.ssh_base(), "-O", "check", "--", self.target.host], timeout=10)
            if check.returncode != 0:
                timeout = (self.target.connect_timeout or 30) + 60
                result = self._capture([*self.ssh_base(), "-f", "-N", "--", self.target.host], timeout=timeout)
                if result.returncode != 0:
                    raise self._fail(result.stderr, f"cannot connect to {self.target.where()}", f"try: {self.test_command()}")
        self._connected = True

    def _prepare_control_dir(self) -> bool:
        """The directory of the control sockets must be ours and private; else no multiplexing."""
        path = self.control_dir()
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError:
            st = None
        import stat as stat_mod

        if st is None or not stat_mod.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            print(f"cuberun: warning: {path} is not a private directory of this user; not sharing ssh connections", file=sys.stderr)
            self._target = replace_fields(self.target, multiplex=False)
            return False
        return True

    def _transfer(self, argvs: Sequence[Sequence[str]], direction: str, what: str | None = None) -> tuple[Outcome | None, dict[str, Any]]:
        """Run rsync calls quietly, their progress (--info=progress2) shown as `what`: bytes
        done of the total and rsync's rate; returns (the outcome if interrupted, stats)."""
        from cuberun import progress
        from cuberun.process import stream

        started = time.monotonic()
        text = ""
        label = what or f"{direction}ing ({self.target.host})"
        with progress.activity(label, unit="bytes") as act:
            def show(p: RsyncProgress) -> None:
                act.update(done=p.done, total=p.total(), note=f"{progress.human(p.rate)}/s")

            for i, argv in enumerate(argvs):
                if len(argvs) > 1:
                    act.phase(f"transfer {i + 1}/{len(argvs)}")
                sink = RsyncSink(show)
                outcome = stream(argv, echo=sink.io())
                text += sink.text()
                if outcome.interrupted:
                    return outcome, {}
                if outcome.exit_code != 0:
                    raise self._fail(sink.text(), f"rsync ({direction}) failed with exit code {outcome.exit_code}",
                                     "run with --dry-run to see the rsync command", direction, outcome.exit_code)
        stats: dict[str, Any] = dict(rsync_stats(text))
        stats["seconds"] = round(time.monotonic() - started, 3)
        stats["calls"] = len(argvs)
        return None, stats

    def _remote(self, remote_argv: Sequence[str]) -> tuple[int, str]:
        """Run a remote command with its output on our stderr (install, configure)."""
        from cuberun.process import stream

        sink = _Sink(getattr(sys.stderr, "buffer", None))
        outcome = stream(self.ssh_argv(remote_argv), echo=sink.io())
        if outcome.interrupted:
            raise KeyboardInterrupt
        return outcome.exit_code, sink.text()

    def _remote_error(self, code: int, text: str, what: str, hint: str) -> BackendError:
        problem = ssh_problem("\n".join(text.splitlines()[-3:]), self.target.where(), self.test_command()) if code == 255 else None
        if problem is None and ("no space left on device" in text.lower() or "disk quota exceeded" in text.lower()):
            problem = Problem(f"the remote host {self.target.where()} is out of disk space", "free space there, or choose another remote_root")
        if problem is not None:
            return BackendError(problem.message, problem.hint)
        return BackendError(f"{what} on {self.target.host} failed with exit code {code}: {_last_line(text)}", hint)
