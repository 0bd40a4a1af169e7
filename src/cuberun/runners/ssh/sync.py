"""rsync filter rules, transfer statistics and progress, and the mapping of ssh/rsync errors; pure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import IO, cast

from cuberun.valueclass import dataclass

CONTROL_DIR_ENV = "CUBERUN_SSH_CONTROL_DIR"

# -- pure helpers ----------------------------------------------------------------------------
def _hash(*parts: str, size: int = 10) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:size]


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:limit] or "cube"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def rsync_pattern(path: str, wildcards: bool = False) -> str:
    """`path` as a literal rsync filter pattern. rsync treats a backslash as an escape only in
    patterns that contain a wildcard, so escape only then (and always when `wildcards`)."""
    if wildcards or any(c in path for c in "*?["):
        return re.sub(r"([*?\[\\])", r"\\\1", path)
    return path


def include_rules(paths: Iterable[str]) -> list[str]:
    """rsync filter rules that let through exactly `paths` (relative to the transfer root; each
    a file or a directory with everything in it) and the directories above them."""
    rules: list[str] = []
    seen: set[str] = set()
    for path in paths:
        if path in ("", "."):
            rules.append("+ *")
            continue
        parts = path.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i]) + "/"
            if ancestor not in seen:
                seen.add(ancestor)
                rules.append("+ /" + rsync_pattern(ancestor))
        if path not in seen:
            seen.add(path)
            rules.append("+ /" + rsync_pattern(path))
            rules.append("+ /" + rsync_pattern(path + "/", wildcards=True) + "***")
    return rules


def rsync_stats(text: str) -> dict[str, int]:
    """The numbers of `rsync --stats` (summed over several runs in `text`)."""
    keys = {
        "Number of regular files transferred": "files",
        "Total transferred file size": "transferred_bytes",
        "Total bytes sent": "bytes_sent",
        "Total bytes received": "bytes_received",
    }
    stats: dict[str, int] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        key = keys.get(label.strip())
        if sep and key:
            digits = re.sub(r"[^0-9]", "", value.split("bytes")[0])
            if digits:
                stats[key] = stats.get(key, 0) + int(digits)
    return stats


# rsync --info=progress2: "  22,413,312  74%   19.53MB/s    0:00:00  (xfr#1, to-chk=1/3)", one per
# carriage return; the rate in units of 1024 bytes (kB/s, MB/s, GB/s), the bytes with separators.
_PROGRESS = re.compile(r"^\s*([0-9][0-9,.']*)\s+(\d+)%\s+([0-9.]+)([kMGT]?B)/s\s+\d+:\d\d:\d\d(?:\s*\(xfr#\d+, \w+-chk=\d+/\d+\))?[ \t]*")
_RATE_UNITS = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass(frozen=True)
class RsyncProgress:
    """One overall progress line of rsync (--info=progress2)."""

    done: int  # bytes
    percent: int  # of the whole transfer (with --no-inc-recursive: of every file, known up front)
    rate: float  # bytes per second, rsync's own measure

    def total(self) -> int | None:
        """The transfer's size, estimated from the percentage (rsync prints no total): None
        below 10 %, where a whole-number percentage says too little."""
        if self.percent >= 100:
            return self.done
        if self.percent < 10:
            return None
        return round(self.done * 100 / self.percent)


def rsync_progress(line: str) -> RsyncProgress | None:
    """The progress in one piece of rsync's output (between carriage returns), or None."""
    return split_progress(line)[0]


def split_progress(piece: str) -> tuple[RsyncProgress | None, str]:
    """The progress at the start of a piece of rsync's output, and what follows it: an error
    message on stderr can land right after a progress line, before its carriage return."""
    m = _PROGRESS.match(piece)
    if m is None:
        return None, piece
    digits = re.sub(r"[^0-9]", "", m.group(1))
    return RsyncProgress(int(digits), int(m.group(2)), float(m.group(3)) * _RATE_UNITS[m.group(4)]), piece[m.end():]


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str


def ssh_problem(text: str, where: str, test_command: str) -> Problem | None:
    """The one-line account of an ssh/rsync failure, from its error output (None: not one)."""
    low = text.lower()

    def has(*needles: str) -> bool:
        return any(n.lower() in low for n in needles)

    if has("host key verification failed", "remote host identification has changed", "host key for", "no matching host key"):
        return Problem(
            f"host key verification failed for {where}: its key is unknown or does not match known_hosts",
            f"verify the host's fingerprint, then add its key to known_hosts (ssh-keyscan, or connect once with: {test_command}); "
            "cuberun never turns host key checking off unless strict_host_key_checking is set",
        )
    if has("permission denied (", "too many authentication failures", "authentication failed", "no more authentication methods"):
        return Problem(
            f"authentication refused by {where}",
            f"check user and identity_file (or ssh-add the key to your agent); try: {test_command}",
        )
    if has("could not resolve hostname", "name or service not known", "temporary failure in name resolution"):
        return Problem(f"cannot resolve the host name of {where}", "check 'host' (an ssh alias needs ssh_config if it is not in ~/.ssh/config)")
    if has("connection refused"):
        return Problem(f"cannot connect to {where}: connection refused", f"check that sshd runs there and the port is right; try: {test_command}")
    if has("timed out", "timeout"):
        return Problem(f"cannot connect to {where}: connection timed out", f"check that the host is up and reachable (VPN, firewall); try: {test_command}")
    if has("no route to host", "network is unreachable", "host is unreachable", "host is down"):
        return Problem(f"host {where} is unreachable", f"check the network path to the host; try: {test_command}")
    if has("connection closed by", "connection reset by", "kex_exchange_identification", "broken pipe", "closed by remote host", "client_loop"):
        return Problem(f"the connection to {where} was closed", f"check sshd on the host (MaxStartups, MaxSessions) and the network; try: {test_command}")
    if has("bad configuration option", "no argument after keyword", "can't open user config file", "bad configuration options", "garbage at end of line"):
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())
        return Problem(f"ssh rejected its configuration: {line}", "check ssh_config and ssh_options of the platform")
    if has("controlpath too long", "too long for unix domain socket"):
        return Problem("the ssh control socket path is too long", f"set {CONTROL_DIR_ENV} to a short directory, or multiplex: false")
    return None


def rsync_problem(text: str, returncode: int, where: str, direction: str) -> Problem | None:
    """rsync-specific failures (after ssh_problem found none)."""
    low = text.lower()
    if "no space left on device" in low or "disk quota exceeded" in low:
        side = "the remote host" if direction == "upload" else "this machine"
        return Problem(f"{side} is out of disk space while copying {'to' if direction == 'upload' else 'from'} {where}",
                       "free space (or choose another remote_root / workspace) and run again")
    if returncode == 127 or "rsync: command not found" in low or "rsync: not found" in low or "remote command not found" in low:
        return Problem(f"rsync is not installed on {where}", "install rsync on the remote host (e.g. apt-get install rsync), or set rsync_path")
    if "protocol version mismatch" in low or "is your shell clean" in low:
        return Problem(f"rsync could not talk to {where}: the remote shell prints text on startup",
                       "make the remote shell's startup files quiet for non-interactive sessions")
    return None


def _last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()
    return "no output"


class _Sink:
    """A write-only stream for process.stream: echoes to `target` (None: silent) and keeps the
    first and last bytes for parsing (the remote run id; error messages)."""

    def __init__(self, target: IO[bytes] | None = None, keep: int = 65536) -> None:
        self.target = target
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()

    def write(self, data: bytes) -> int:
        if self.target is not None:
            self.target.write(data)
        if len(self.head) < self.keep:
            self.head += data[: self.keep - len(self.head)]
        self.tail += data
        if len(self.tail) > self.keep:
            del self.tail[: len(self.tail) - self.keep]
        return len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def text(self) -> str:
        return self.tail.decode("utf-8", "replace")

    def io(self) -> IO[bytes]:
        return cast("IO[bytes]", self)

class RsyncSink(_Sink):
    """rsync's output with --info=progress2: each progress line goes to `on_progress`, the rest
    (the --stats block, error messages) is kept as _Sink keeps it."""

    def __init__(self, on_progress: Callable[[RsyncProgress], None]) -> None:
        super().__init__()
        self.on_progress = on_progress
        self.partial = b""

    def write(self, data: bytes) -> int:
        self.partial += data
        *pieces, self.partial = re.split(rb"[\r\n]", self.partial)
        if len(self.partial) > self.keep:  # a line without an end: keep it as text
            pieces.append(self.partial)
            self.partial = b""
        for piece in pieces:
            found, rest = split_progress(piece.decode("utf-8", "replace"))
            if found is not None:
                self.on_progress(found)
            if found is None or rest.strip():
                super().write(rest.encode("utf-8", "replace") + b"\n")
        return len(data)

    def text(self) -> str:
        if self.partial:
            super().write(self.partial)
            self.partial = b""
        return super().text()


# -- value objects ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """How to reach the host: what becomes the ssh (and rsync -e) options."""

    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_config: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str | None = None
    connect_timeout: int | None = None
    ssh_options: tuple[str, ...] = ()
    multiplex: bool = True
    control_persist: int = 60

    def where(self) -> str:
        text = self.host if self.user is None else f"{self.user}@{self.host}"
        return f"{text} (port {self.port})" if self.port else text

    def tag(self) -> str:
        return _hash(self.host, str(self.user), str(self.port), str(self.identity_file), str(self.ssh_config), str(self.known_hosts),
                     str(self.strict_host_key_checking), *self.ssh_options, size=8)


@dataclass(frozen=True)
class Item:
    """One parameter of a task on both sides."""

    name: str
    io: str
    local: str  # real local path
    remote: str  # remote path (relative: under the remote $HOME)
    rel: str | None  # path relative to the workspace; None when outside it
    value: str  # what the remote cuberun gets as NAME=VALUE

    @property
    def external(self) -> bool:
        return self.rel is None


@dataclass(frozen=True)
class Plan:
    root: str  # real local cube root
    ws: str  # real local workspace
    ws_rel: str | None  # the workspace relative to the root when inside it (the usual case)
    rcube: str
    rws: str
    items: tuple[Item, ...] = ()


