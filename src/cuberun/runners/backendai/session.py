"""What the Backend.AI runner reads and writes as plain data (no client, no process): a task's
session plan, session names, the `session watch` / `session info` output and the verdict it gives, the session's
startup command, and the outputs archive unpacked only into the declared outputs."""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask

TERMINAL_STATUSES = frozenset({"TERMINATED", "CANCELLED", "ERROR"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9-]+")


def session_name(prefix: str, task: str, suffix: str) -> str:
    """`<prefix>-<task>-<suffix>`: letters, digits and '-', 4 to 64 characters (Backend.AI's rule)."""
    safe_task = _NAME_SAFE.sub("-", task).strip("-") or "task"
    safe_prefix = _NAME_SAFE.sub("-", prefix).strip("-") or "cuberun"
    name = f"{safe_prefix}-{safe_task}"[: 63 - len(suffix)].rstrip("-")
    return f"{name}-{suffix}"


def default_vfolder(cube_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", cube_name).strip("-._") or "cube"
    return f"cuberun-{safe}"[:64]


def workspace_relative(path: Path, workspace: Path) -> str | None:
    """The path relative to the workspace ('.' for the workspace itself), None when outside."""
    ws = os.path.normpath(str(workspace))
    p = os.path.normpath(str(path))
    if p == ws:
        return "."
    if not p.startswith(ws.rstrip(os.sep) + os.sep):
        return None
    return Path(os.path.relpath(p, ws)).as_posix()


def exit_code_from(value: Any, failed: bool) -> int:
    """A batch exit code as the shell reports it: -N (killed by signal N) -> 128+N; a failure
    with no code (or 0) -> 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 1 if failed else 0
    if value < 0:
        return 128 + (-value)
    if failed and value == 0:
        return 1
    return value


def _dict_of(raw: str) -> dict[str, Any] | None:
    """One line of `session watch --output json`: a JSON object or a Python dict repr."""
    line = _ANSI.sub("", raw).strip()
    if not line.startswith("{"):
        return None
    value: Any = None
    try:
        value = json.loads(line)
    except ValueError:
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
    return value if isinstance(value, dict) else None


# the events of a session before its task runs, as (state, what it means): shown while they last
WAITING_EVENTS = {
    "session_enqueued": ("PENDING", "queued"),
    "session_scheduled": ("SCHEDULED", "an agent was chosen"),
    "session_preparing": ("PREPARING", ""),
    "kernel_preparing": ("PREPARING", ""),
    "kernel_pulling": ("PULLING", "the agent pulls the image"),
    "kernel_creating": ("CREATING", "the container is being created"),
}
WAITING_STATES = ("PENDING", "SCHEDULED", "PREPARING", "PREPARED", "PULLING", "CREATING")  # also `session info` statuses


def watch_state(line: str) -> tuple[str, str] | None:
    """The session's state from one line of `session watch`: a waiting state and its meaning
    (WAITING_EVENTS), ("RUNNING", "") once it started or ("ENDED", "") once it ended; None for
    a line that is no event."""
    event = _dict_of(line)
    name = event.get("event") if event is not None else None
    if not isinstance(name, str):
        return None
    if name in WAITING_EVENTS:
        return WAITING_EVENTS[name]
    return ("RUNNING", "") if name.endswith("_started") else ("ENDED", "")


def session_status(item: Mapping[str, Any]) -> str:
    """`session info`'s status without the enum prefix some versions print (SessionStatus.X)."""
    status = str(item.get("status") or "").upper()
    return status.split(".", 1)[1] if status.startswith("SESSIONSTATUS.") else status


def parse_watch_output(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The events printed by `session watch --output json` (one Python dict per line: the
    client echoes the event dict, not JSON) and whether it said "No matching items"."""
    events: list[dict[str, Any]] = []
    no_match = False
    for raw in _ANSI.sub("", text).splitlines():
        value = _dict_of(raw)
        if value is None:
            continue
        if value.get("ok") is False and "no matching" in str(value.get("reason", "")).lower():
            no_match = True
        elif isinstance(value.get("event"), str):
            events.append(value)
    return events, no_match


@dataclass(frozen=True)
class Verdict:
    """What the watch established: 'success' / 'failure' (exit code known), 'ended' (terminated
    or cancelled without a success or failure event), 'timeout' (the client's --max-wait), or
    'unknown' (no matching session, client error)."""

    kind: str
    exit_code: int | None = None
    reason: str | None = None


def watch_verdict(events: Sequence[Mapping[str, Any]], client_exit: int, no_match: bool = False) -> Verdict:
    decisive = [e for e in events if e.get("event") in ("session_success", "session_failure")]
    if decisive:
        last = decisive[-1]
        if last["event"] == "session_success":
            code = exit_code_from(last.get("exitCode", 0), failed=False)
            return Verdict("success" if code == 0 else "failure", code, None if code == 0 else f"session succeeded with exit code {code}")
        code = exit_code_from(last.get("exitCode"), failed=True)
        return Verdict("failure", code, f"batch session failed with exit code {code}")
    ended = [e for e in events if e.get("event") in ("session_terminated", "kernel_cancelled", "session_cancelled")]
    if ended:
        return Verdict("ended", None, f"session ended ({ended[-1]['event']}) without a success event")
    if client_exit == 3:
        return Verdict("timeout", None, "no result before max_wait")
    if no_match:
        return Verdict("unknown", None, "session watch found no active session of that name")
    return Verdict("unknown", None, f"session watch exited {client_exit} without a result")


def _find_exit_code(data: Any, depth: int = 0) -> int | None:
    if depth > 6:
        return None
    if isinstance(data, str) and data.strip().startswith("{"):
        try:
            data = json.loads(data)
        except ValueError:
            try:
                data = ast.literal_eval(data.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if isinstance(data, Mapping):
        for key in ("exit_code", "exitCode"):
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        for value in data.values():
            found = _find_exit_code(value, depth + 1)
            if found is not None:
                return found
    if isinstance(data, list):
        for value in data:
            found = _find_exit_code(value, depth + 1)
            if found is not None:
                return found
    return None


def info_verdict(item: Mapping[str, Any]) -> Verdict | None:
    """`session info --output json` item -> the outcome once the session has ended (None while
    it has not). Terminated or cancelled without result SUCCESS is a failure."""
    status = session_status(item)
    if status not in TERMINAL_STATUSES:
        return None
    result = str(item.get("result") or "").upper().split(".")[-1]
    code = _find_exit_code(item.get("status_data"))
    info = str(item.get("status_info") or "").strip()
    detail = f" ({info})" if info else ""
    if result == "SUCCESS" and (code in (None, 0)):
        return Verdict("success", 0)
    if result in ("", "UNDEFINED") and status == "TERMINATED" and info == "task-finished" and code in (None, 0):
        # Backend.AI 25-26 leave the result UNDEFINED; a batch task that exited 0 ends "task-finished"
        return Verdict("success", 0)
    failed_code = exit_code_from(code, failed=True)
    return Verdict("failure", failed_code, f"session ended {status}{detail} with result {result or 'UNDEFINED'}, exit code {failed_code}")


# places a volume at its mount path ($2) as a symbolic link to its folder or file in the vfolder ($1)
PLACE = ('cuberun_place() { mkdir -p -- "$(dirname -- "$2")" && { [ -L "$2" ] || [ ! -d "$2" ] || rmdir -- "$2"; } && '
         'ln -sfn -- "$1" "$2" || { echo "cuberun: cannot place the volume at $2 (a link to $1): the kernel user must be able '
         'to create it, and the image may have nothing there but an empty directory" >&2; exit 125; }; }')


def startup_command(
    command: Sequence[str], *, mount: str, workdir: str | None, in_tar: str | None, out_tar: str | None,
    outputs: Sequence[str], output_dirs: Sequence[str], output_files: Sequence[str] = (), links: Sequence[tuple[str, str]] = (),
) -> str:
    """The batch startup command (one string, run by the agent with /bin/sh -c): unpack the
    inputs, create the output directories (and `output_files`, empty when missing), place each
    container_config.yaml volume at its mount path (`links`: (path in the vfolder, mount path),
    a symbolic link; an empty directory the image has there is replaced), run the task from the
    image's WORKDIR in a subshell, pack the outputs, exit with the task's code. Every path is
    shell-quoted; a volume that cannot be placed ends the session with 125 and says why."""
    q = shlex.quote
    parts = [f"cd {q(mount)} || exit 125"]
    if in_tar:
        parts.append(f"if [ -f {q(in_tar)} ]; then tar -xf {q(in_tar)} || exit 125; rm -f {q(in_tar)}; fi")
    if output_dirs:
        parts.append("mkdir -p -- " + " ".join(q(d) for d in output_dirs) + " || exit 125")
    if output_files:
        parts.append("touch -- " + " ".join(q(f) for f in output_files) + " || exit 125")
    if links:
        parts.append(PLACE)
        parts.extend(f"cuberun_place {q(source)} {q(target)}" for source, target in links)
    run = shlex.join(command) if command else "true"
    if workdir:
        parts.append(f"(cd {q(workdir)} && exec {run})")
    else:
        parts.append(f"(exec {run})")
    parts.append("rc=$?")
    if out_tar and outputs:
        listed = " ".join(q(o) for o in outputs)
        parts.append(
            f'cd {q(mount)} && set -- && for p in {listed}; do if [ -e "$p" ]; then set -- "$@" "$p"; fi; done; '
            f'if [ $# -gt 0 ]; then tar -cf {q(out_tar)} -- "$@"; fi'
        )
    parts.append("exit $rc")
    return "; ".join(parts)


def _is_within(member: str, allowed: Sequence[str]) -> bool:
    return any(member == a or member.startswith(a.rstrip("/") + "/") or a == "." for a in allowed)


def safe_extract(archive: Path, destination: Path, allowed: Sequence[str]) -> list[str]:
    """Unpack regular files and directories whose paths lie under `allowed` (workspace-relative
    outputs) into `destination`. Absolute paths, `..`, links and devices are skipped."""
    from cuberun.safeio import write_from

    written: list[str] = []
    skipped: list[str] = []
    dest = destination.resolve()
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("./") or ".") if member.name not in (".", "./") else "."
            if member.name.startswith("/") or name == ".." or name.startswith("../") or not _is_within(name, allowed):
                skipped.append(member.name)
                continue
            target = (dest / name).resolve() if name != "." else dest
            if target != dest and dest not in target.parents:
                skipped.append(member.name)
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                source = tar.extractfile(member)
                if source is None:
                    continue

                def fill(fd: int, source: Any = source, mode: int = (member.mode & 0o777) | 0o600) -> None:
                    os.fchmod(fd, mode)
                    while chunk := source.read(1 << 20):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]

                with source:
                    write_from(target, fill, what="task output")  # safeio: never over a FIFO, device or folder
                written.append(name)
            else:
                skipped.append(member.name)
    if skipped:
        say(f"warning: skipped {len(skipped)} archive entries outside the outputs or not plain files: {', '.join(skipped[:5])}")
    return written


def _strip(text: str) -> str:
    return _ANSI.sub("", text)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in _strip(text).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
    return (errors or lines or [""])[-1]


@dataclass
class SessionPlan:
    """Everything one task's batch session needs (pure: built before anything runs)."""

    task: ResolvedTask
    name: str
    command: list[str]  # the task's command line inside the session
    startup: str  # the -c string
    inputs: list[str]  # workspace-relative paths packed and uploaded
    outputs: list[str]  # workspace-relative paths packed in the session and downloaded
    in_tar: str | None  # vfolder-relative archive names
    out_tar: str | None
    create_argv: list[str]  # with secrets in -e values redacted (for records and --dry-run)
    real_create_argv: list[str]
    session_id: str | None = None
    finished: bool = False
    details: dict[str, Any] = field(default_factory=dict)
