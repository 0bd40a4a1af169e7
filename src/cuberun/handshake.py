"""The inner half of the nested-cuberun handshake (runners/nested.py is the outer one).

A cuberun started by another one (over ssh, in a Slurm job) gets `run --handshake=VERSION`;
it then writes its events as whole lines `cuberun-handshake: {json}` to stderr, each with the
version `v`: `start` (task, run id) when a task starts, `error` (the first line of its own error,
the error's kind, the exit code), `end` (the exit code) when it exits. Nothing is written
without --handshake. A caller of another version gets one clear usage error.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
MARKER = b"cuberun-handshake: "
_enabled: list[bool] = [False]


def check_version(requested: int) -> None:
    """`--handshake=N` of the outer cuberun: N must be ours. Turns the events on."""
    from cuberun.errors import UsageError

    if requested != VERSION:
        raise UsageError(
            f"the calling cuberun speaks handshake version {requested}, this one {VERSION}",
            "install the same cuberun version on both sides (cuberun --version)",
        )
    _enabled[0] = True


def emit(event: str, **fields: Any) -> None:
    """One event line on stderr, when an outer cuberun asked for them (else nothing)."""
    if not _enabled[0]:
        return
    line = MARKER + json.dumps({"v": VERSION, "event": event, **fields}, sort_keys=True, default=str).encode() + b"\n"
    try:
        sys.stderr.flush()
        out = getattr(sys.stderr, "buffer", None)
        if out is not None:
            out.write(line)
            out.flush()
        else:
            sys.stderr.write(line.decode())
            sys.stderr.flush()
    except (OSError, ValueError):  # the outer side is gone: nothing to tell
        pass
