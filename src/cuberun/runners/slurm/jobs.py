"""Slurm job scripts and scheduler output: pure functions, no subprocess (unit-tested)."""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from cuberun.errors import EXIT_BACKEND, UsageError
from cuberun.runners.base import Step
from cuberun.valueclass import dataclass, field
from cuberun.valueclass import replace as replace_fields

SBATCH_MISSING = "sbatch not found. Hint: install the Slurm client or use another --platform"
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}
)
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"})
LIMIT_STATES = frozenset({"TIMEOUT", "OUT_OF_MEMORY"})
QUIET_REASONS = frozenset({"", "None", "(null)", "NonZeroExitCode", "TimeLimit"})
FORBIDDEN_SBATCH_ARGS = ("--output", "--error", "--wrap", "--wait", "--parsable", "--array", "--dependency", "-o", "-e", "-W", "-a", "-d")

DEFAULT_MAX_WAIT = 7 * 24 * 3600.0  # from submission: a week in the queue is the outer bound
RUN_MARGIN = 120.0  # beyond the job's time limit: KillWait, epilog, OverTimeLimit slack
CONTROLLER_GRACE = 120.0  # how long the controller may stay unreachable while we wait
CANCEL_WAIT = 30.0  # after scancel: until Slurm reports the job ended
TAIL_INTERVAL = 0.1  # how often the job log is read
CLIENT_TIMEOUT = 60.0  # one sbatch/scontrol/sacct call (an unreachable controller takes ~10-20 s)
EXIT_STOPPED_WAITING = 124
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

# -- pure helpers (unit-tested) ---------------------------------------------------------------
def sbatch_quote(value: str) -> str:
    """Quote a value for an `#SBATCH` line. sbatch tokenises those lines like a shell (quotes,
    `#` starts a comment) but treats a backslash as an escape even inside single quotes."""
    if "\n" in value or "\r" in value:
        raise ValueError("a line break cannot be written into an #SBATCH line")
    return shlex.quote(value.replace("\\", "\\\\"))


def parse_time_limit(text: str | int | None) -> float | None:
    """Slurm time (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; `UNLIMITED`) -> seconds; None
    when unlimited or unparseable."""
    if text is None:
        return None
    if isinstance(text, int):
        return float(text) * 60
    value = text.strip()
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", "PARTITION_LIMIT"):
        return None
    days = 0
    if "-" in value:
        head, _, value = value.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
        parts = value.split(":") if value else ["0"]
        if not all(p.isdigit() for p in parts) or len(parts) > 3:
            return None
        nums = [int(p) for p in parts] + [0] * (3 - len(parts))  # D-H, D-H:M, D-H:M:S
        return float(days * 86400 + nums[0] * 3600 + nums[1] * 60 + nums[2])
    parts = value.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    nums = [int(p) for p in parts]
    if len(nums) == 1:
        return float(nums[0] * 60)
    if len(nums) == 2:
        return float(nums[0] * 60 + nums[1])
    return float(nums[0] * 3600 + nums[1] * 60 + nums[2])


def parse_exit(raw: str | None) -> tuple[int, int]:
    """`ExitCode=N:S` -> (N, S); anything else -> (0, 0)."""
    code, _, sig = (raw or "").partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return 0, 0


def job_exit_code(state: str, raw: str | None) -> int:
    """Our exit code for a finished job (see the table in the module docstring)."""
    code, sig = parse_exit(raw)
    killed = 128 + sig if 0 < sig < 32 else 0  # standard signals; Slurm reports launch failures as 0:53
    if state == "COMPLETED":
        return code
    if state in LIMIT_STATES:
        return 128 + signal.SIGKILL
    if state == "CANCELLED":
        return code or killed or 128 + signal.SIGTERM
    return code or killed or EXIT_BACKEND


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about a job (from scontrol, sacct or the jobcomp log)."""

    job_id: str
    state: str
    exit_code: str = "0:0"
    reason: str = ""
    time_limit: float | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    source: str = "scontrol"

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


_WANTED = ("JobId", "ArrayJobId", "ArrayTaskId", "JobState", "Reason", "ExitCode", "TimeLimit", "Partition", "NodeList", "SubmitTime", "StartTime", "EndTime", "Dependency")


def parse_job_line(line: str, source: str = "scontrol") -> JobInfo | None:
    """One `scontrol show job -o` line (or a jobcomp/filetxt line: the same Key=Value format).
    Values with spaces (WorkDir, Command, StdOut) come after the keys read here, and the first
    occurrence of each key wins. An array element is named `<ArrayJobId>_<ArrayTaskId>` (its own
    id is kept as the SlurmJobId field); a record of pending elements keeps its id expression."""
    found: dict[str, str] = {}
    for key in _WANTED:
        m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", line)
        if m:
            found[key] = m.group(1)
    if "JobId" not in found or "JobState" not in found:
        return None
    state = found["JobState"].split("+")[0].upper()
    job_id = found["JobId"]
    if found.get("ArrayJobId") and found.get("ArrayTaskId"):
        found["SlurmJobId"] = job_id
        job_id = f"{found['ArrayJobId']}_{found['ArrayTaskId']}"
    return JobInfo(
        job_id=job_id,
        state=state,
        exit_code=found.get("ExitCode", "0:0"),
        reason=found.get("Reason", ""),
        time_limit=parse_time_limit(found.get("TimeLimit")),
        fields={k: v for k, v in found.items() if k not in ("JobId", "JobState", "ExitCode", "Reason")},
        source=source,
    )


def expand_task_ids(text: str) -> list[int]:
    """An ArrayTaskId expression (`4`, `2-19%4`, `1,3,5-7`, `0-15:4`, `[2-5]`) -> the indexes."""
    found: list[int] = []
    for part in text.split("%", 1)[0].strip("[]").split(","):
        head, _, step = part.partition(":")
        first, dash, last = head.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (step and not step.isdigit()):
            continue
        found.extend(range(int(first), int(last if dash else first) + 1, int(step or 1) or 1))
    return found


def array_elements(text: str, array_id: str) -> dict[int, JobInfo]:
    """`scontrol show job -o <array id>` -> JobInfo per element index (pending elements share the
    array's record, whose ArrayTaskId is an expression)."""
    found: dict[int, JobInfo] = {}
    for line in text.splitlines():
        info = parse_job_line(line)
        if info is None or info.fields.get("ArrayJobId") != array_id:
            continue
        for index in expand_task_ids(info.fields.get("ArrayTaskId", "")):
            found[index] = replace_fields(info, job_id=f"{array_id}_{index}")
    return found


def parse_sacct(text: str, job_id: str) -> JobInfo | None:
    """`sacct -X -n -P -o State,ExitCode` output -> JobInfo (State may read 'CANCELLED by 0')."""
    for line in text.splitlines():
        state, sep, code = line.strip().partition("|")
        if sep and state:
            return JobInfo(job_id, state.split()[0].upper(), code.strip() or "0:0", source="sacct")
    return None


def normalize_memory(value: str) -> str:
    """`4g`, `512M`, `1.5GB`, `2048` (bytes, like docker) -> a Slurm --mem value."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)[bB]?\s*", value)
    if not m:
        raise UsageError(f"invalid memory size '{value}'", "write it like 4G, 512M or 1.5G")
    number, unit = float(m.group(1)), m.group(2).upper()
    if not unit:  # plain bytes
        return f"{max(1, math.ceil(number / (1024 * 1024)))}M"
    if number.is_integer():
        return f"{int(number)}{unit}"
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return f"{max(1, math.ceil(number * scale))}M"


@dataclass(frozen=True)
class JobSpec:
    """A job script, before rendering. `commands` has one argv per array element: one means a
    plain job; several become `#SBATCH --array=0-N` and a `case $SLURM_ARRAY_TASK_ID` that execs
    the element's argv (how parameter sweeps run)."""

    directives: tuple[tuple[str, str], ...]  # ("--partition", "debug") -> #SBATCH --partition=debug
    commands: tuple[tuple[str, ...], ...]
    extra: tuple[str, ...] = ()  # sbatch_args, verbatim, on one #SBATCH line
    comment: str = ""
    env: tuple[tuple[str, str], ...] = ()  # exported before the command
    array_limit: int | None = None  # at most this many elements at once (--array=0-N%limit)


def _command_text(argv: Sequence[str], indent: str) -> str:
    """One option or override per line (after the program and its leading words), for reading."""
    text = ""
    for i, arg in enumerate(argv):
        breaks = i > 0 and (arg.startswith(("--", "-P")) or ("=" in arg and not arg.startswith("-")))
        text += (f" \\\n{indent}" if breaks else (" " if i else "")) + shlex.quote(arg)
    return text


def render_job_script(spec: JobSpec) -> str:
    lines = ["#!/bin/bash"]
    if spec.comment:
        lines.append("# " + spec.comment.replace("\n", " "))
    lines += [f"#SBATCH {opt}={sbatch_quote(value)}" for opt, value in spec.directives]
    if len(spec.commands) > 1:
        lines.append(f"#SBATCH --array=0-{len(spec.commands) - 1}" + (f"%{spec.array_limit}" if spec.array_limit else ""))
    if spec.extra:
        lines.append("#SBATCH " + " ".join(sbatch_quote(a) for a in spec.extra))
    lines.append("set -euo pipefail")
    lines += [f"export {key}={shlex.quote(value)}" for key, value in spec.env]
    if len(spec.commands) == 1:
        lines.append("exec " + _command_text(spec.commands[0], "    "))
    else:
        lines.append('case "${SLURM_ARRAY_TASK_ID:-}" in')
        for i, argv in enumerate(spec.commands):
            lines.append(f"  {i}) exec " + _command_text(argv, "      ") + " ;;")
        lines.append('  *) echo "cuberun: unexpected array index ${SLURM_ARRAY_TASK_ID:-none}" >&2; exit 125 ;;')
        lines.append("esac")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class JobScriptStep(Step):
    """The job script a run writes (what --dry-run shows as a `cat > FILE <<'EOF'` here-doc)."""

    path: str = ""
    content: str = ""

    def display(self) -> str:
        marker = "CUBERUN_JOB_SCRIPT"
        while marker in self.content.splitlines():
            marker += "_"
        folder = os.path.dirname(self.path)
        return f"mkdir -p {shlex.quote(folder)} && cat > {shlex.quote(self.path)} <<'{marker}'\n{self.content}{marker}"

    def to_json(self) -> dict[str, Any]:
        return dict(super().to_json(), path=self.path, content=self.content)

