"""A cuberun that runs cuberun elsewhere (ssh: on another host; slurm: in a batch job).

Two halves, both here:

- `run_argv` turns one invocation's task and RunOptions into the inner `cuberun run` argv, from
  one option table, so every runner that nests forwards the same options the same way;
- the outer half of the handshake (cuberun/handshake.py is the inner one): the outer passes
  `--handshake=VERSION` and reads the inner cuberun's event lines from the output it follows
  (`events`), drops them from what the user sees (`HandshakeFilter`), and never reads the inner
  one's human wording. A different version on either side is one clear error (`mismatch`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.runners.base import RunOptions

from cuberun.handshake import MARKER, VERSION
from cuberun.process import write_best_effort

# RunOptions field -> the inner `cuberun run` flag (the value flags, in this order)
FORWARDED = (("gpus", "--gpus"), ("network", "--network"), ("security", "--security"), ("memory", "--memory"), ("cpus", "--cpu"), ("mount", "--mount"),
             ("timeout", "--timeout"))


def run_argv(
    cuberun: Sequence[str],
    *,
    cube: str,
    task: str,
    platform: str,
    workspace: str,
    options: RunOptions,
    params: Iterable[str] = (),
    forward_gpus: bool = True,
    retried: bool = False,
) -> list[str]:
    """The inner `cuberun run` of one task: on `platform`, with this invocation's -P overrides
    (runner.* are this side's), run options and parameter values (`name=value`). `--no-deps
    --force`: this side already decided that the task runs (and ran or submitted what it needs).
    `retried`: this side retries the task (retry.py), so the inner one runs it once (`--retries=0`)."""
    argv = [*cuberun, "run", f"--mlcube={cube}", f"--task={task}", f"--platform={platform}", f"--workspace={workspace}",
            "--no-deps", "--force", f"--handshake={VERSION}"]
    argv += [f"-P{item}" for item in options.config_overrides if not item.startswith("runner.")]
    for attr, flag in FORWARDED:
        value = getattr(options, attr)
        if value is not None and (forward_gpus or attr != "gpus"):
            argv.append(f"{flag}={value}")
    if options.allow_missing_inputs:
        argv.append("--allow-missing-inputs")
    if options.allow_run_args:  # the run policy's opt-out travels with the task (only when given)
        argv.append("--allow-run-args")
    if retried:
        argv.append("--retries=0")
    return argv + list(params)


# -- the outer side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Events:
    """What the inner cuberun said through the handshake."""

    versions: tuple[int, ...] = ()
    run_id: str | None = None
    error: str | None = None  # its own error's first line (not the task's exit)
    error_kind: str | None = None
    exit_code: int | None = None
    timeout: float | None = None  # the task was stopped at this time limit (s)

    @property
    def spoke(self) -> bool:
        return bool(self.versions)


def events(data: bytes | str) -> Events:
    """The handshake events in an inner cuberun's output (whole lines that start with the marker)."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    versions: list[int] = []
    found: dict[str, Any] = {}
    for line in raw.splitlines():
        if not line.startswith(MARKER):
            continue
        try:
            item = json.loads(line[len(MARKER) :])
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        version = item.get("v")
        versions.append(version if isinstance(version, int) else -1)
        if version != VERSION:
            continue
        kind = item.get("event")
        if kind == "start" and isinstance(item.get("run_id"), str):
            found["run_id"] = item["run_id"]
        elif kind == "error" and isinstance(item.get("message"), str):
            found["error"], found["error_kind"] = item["message"], str(item.get("kind") or "")
            limit = item.get("timeout")
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
                found["timeout"] = float(limit)
        elif kind == "end" and isinstance(item.get("exit_code"), int):
            found["exit_code"] = item["exit_code"]
    return Events(tuple(versions), **found)


def mismatch(found: Events, output: str, where: str) -> str | None:
    """Why the inner cuberun `where` cannot talk to this one, or None: it speaks another handshake
    version, or it is too old to know --handshake at all."""
    other = sorted({v for v in found.versions if v != VERSION})
    if other:
        return f"the cuberun {where} speaks handshake version {other[0]}, this one {VERSION}"
    if not found.spoke and "--handshake" in output and ("no such option" in output.lower()):
        return f"the cuberun {where} is older than this one: it does not know --handshake"
    if not found.spoke and "the calling cuberun speaks handshake version" in output:
        return f"the cuberun {where} speaks another handshake version than this one ({VERSION})"
    return None


MISMATCH_HINT = "install the same cuberun version on both sides (cuberun --version)"


class HandshakeFilter:
    """A write-only stream that passes everything to `target` except the handshake lines. A
    fragment that may begin such a line is held until its line is complete (the inner cuberun
    writes each one whole; at most 64 KiB are held); everything else passes at once."""

    HOLD = 65536

    def __init__(self, target: IO[bytes] | Any | None) -> None:
        self.target = target
        self.pending = b""
        self.line_start = True

    def write(self, data: bytes) -> int:
        buf = self.pending + bytes(data)
        self.pending = b""
        out = bytearray()
        i = 0
        while i < len(buf):
            nl = buf.find(b"\n", i)
            piece = buf[i:] if nl < 0 else buf[i : nl + 1]
            if self.line_start and (piece.startswith(MARKER) or (nl < 0 and MARKER.startswith(piece))):
                if nl < 0 and len(piece) < self.HOLD:
                    self.pending = piece  # the rest of this line decides
                    break
                if nl < 0:
                    out += piece  # too long for a handshake line
            else:
                out += piece
            self.line_start = nl >= 0
            i += len(piece)
        if out:
            write_best_effort(self.target, bytes(out))  # a closed pipe or a full disk never stops the task
        return len(data)

    def flush(self) -> None:
        pass  # each write is flushed

    def close(self) -> None:
        """The stream ended: a held fragment was not a handshake line after all."""
        if self.pending:
            write_best_effort(self.target, self.pending)
        self.pending = b""
