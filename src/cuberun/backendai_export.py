"""Backend.AI kernel images from cubes: the `ai.backend.*` labels, inferred and written.

A Backend.AI agent only runs images that carry its kernel labels (kernelspec, features, resource
minimums, base distro, runtime type and path). Users of MLPerf-style cubes used to add them by
hand; this module derives them:

- `export_from_cube`: a Dockerfile `FROM <cube image>` plus one LABEL block. Values come from,
  highest first: the command-line flags, labels the image already carries, facts read from the
  image (`/etc/os-release` for the base distro, the image's `python3` for the runtime path), the
  cube's `platform` block (host_memory_gb, accelerator_count), then defaults. Every value says
  where it came from, so nothing is guessed silently.
- `rewrite_dockerfile`: adds the labels to the final stage of any Dockerfile. Existing
  `ai.backend.*` labels are kept (or updated in place when a flag names them), never duplicated;
  other labels, comments and continuation lines are left as they were.

Pure functions do the work (golden tests pin them); `probe_image` is the only part that talks to
the container engine, through `cuberun.process`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from cuberun.errors import UsageError
from cuberun.valueclass import dataclass, field

PREFIX = "ai.backend."
KERNELSPEC = "ai.backend.kernelspec"
CORECOUNT = "ai.backend.envs.corecount"
FEATURES = "ai.backend.features"
BASE_DISTRO = "ai.backend.base-distro"
MIN_CPU = "ai.backend.resource.min.cpu"
MIN_MEM = "ai.backend.resource.min.mem"
MIN_CUDA = "ai.backend.resource.min.cuda.device"
ACCELERATORS = "ai.backend.accelerators"
RUNTIME_TYPE = "ai.backend.runtime-type"
RUNTIME_PATH = "ai.backend.runtime-path"
SERVICE_PORTS = "ai.backend.service-ports"

# the order of the block (the hand-written block of the MLPerf-on-Backend.AI notes, GPU labels after memory)
ORDER = (KERNELSPEC, CORECOUNT, FEATURES, BASE_DISTRO, MIN_CPU, MIN_MEM, MIN_CUDA, ACCELERATORS, RUNTIME_TYPE, RUNTIME_PATH, SERVICE_PORTS)
REQUIRED = (KERNELSPEC, FEATURES, BASE_DISTRO, MIN_CPU, MIN_MEM, RUNTIME_TYPE, RUNTIME_PATH)
RUNTIME_TYPES = ("app", "python")
DEFAULT_CORECOUNT = "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
DEFAULT_BASE_DISTRO = "ubuntu22.04"
DEFAULT_RUNTIME_PATH = "/usr/bin/python3"
DEFAULT_MIN_CPU = "1"
DEFAULT_MIN_MEM = "1g"
PROBE_TIMEOUT = 120.0
_MEM = re.compile(r"^\d+(\.\d+)?[kmgtp]?$", re.IGNORECASE)
_SERVICE_PORT = re.compile(r"^[A-Za-z0-9_.-]+:(http|tcp|pty|preopen):\d+$")
# prints sys.executable, then the os-release text (after a marker line)
_PY_PROBE = (
    "import sys\n"
    "print(sys.executable)\n"
    "print('--os-release--')\n"
    "for p in ('/etc/os-release', '/usr/lib/os-release'):\n"
    "    try:\n"
    "        print(open(p).read()); break\n"
    "    except OSError:\n"
    "        pass\n"
)


# -- values ----------------------------------------------------------------------------------
def features_for(runtime_type: str) -> str:
    """`batch uid-match` for every kernel (batch sessions; the agent matches the user's uid);
    a python runtime also serves code snippets (`query`) and interactive input (`user-input`)."""
    names = {"batch", "uid-match"}
    if runtime_type == "python":
        names |= {"query", "user-input"}
    return " ".join(sorted(names))


def parse_os_release(text: str) -> str | None:
    """`/etc/os-release` -> a Backend.AI base-distro name: ID + VERSION_ID cut to major.minor
    (debian12, ubuntu22.04, alpine3.18, centos7). None when there is no ID."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("'\"")]
        values[key.strip()] = parts[0] if parts else ""
    distro = values.get("ID", "").strip().lower()
    if not distro:
        return None
    version = values.get("VERSION_ID", "").strip()
    if version:
        pieces = version.split(".")
        version = ".".join(pieces[:2])
    return re.sub(r"[^a-z0-9.]+", "", distro + version) or None


def memory_label(value: Any) -> str | None:
    """platform.host_memory_gb -> a label value: 16 -> '16g', 0.5 -> '512m'."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number <= 0:
        return None
    if number == int(number):
        return f"{int(number)}g"
    return f"{max(1, round(number * 1024))}m"


def derive_image_name(image: str) -> str:
    """The kernel image's default name: the cube image with `-backendai` added to its tag
    (`mlcommons/mnist:0.0.1` -> `mlcommons/mnist:0.0.1-backendai`; no tag -> `latest-backendai`)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return f"{name}-backendai"
    return f"{name}:latest-backendai"


def quote_value(value: str) -> str:
    """A Dockerfile LABEL value in double quotes: `\\`, `"` and `$` escaped (LABEL expands $VAR)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    out = out.replace("\n", " ")
    return f'"{out}"'


def label_block(labels: Sequence[tuple[str, str]], escape: str = "\\") -> str:
    """One LABEL instruction, a key per line, continuation lines aligned under the first key."""
    if not labels:
        return ""
    lines = [f"{key}={quote_value(value)}" for key, value in labels]
    indent = " " * len("LABEL ")
    text = "LABEL " + lines[0]
    for line in lines[1:]:
        text += f" {escape}\n{indent}{line}"
    return text + "\n"


# -- what the image says -----------------------------------------------------------------------
@dataclass
class ImageFacts:
    """What `probe_image` learned about an image (all None when it is not present locally)."""

    image: str
    present: bool = False
    image_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    base_distro: str | None = None
    runtime_path: str | None = None
    notes: list[str] = field(default_factory=list)


def _engine_extra(engine: Sequence[str]) -> list[str]:
    import os

    return ["--pull=never"] if any(os.path.basename(t) == "podman" for t in engine) else []


def inspect_image(engine: Sequence[str], image: str, *, timeout: float = 30.0) -> ImageFacts:
    """`docker image inspect`: presence, labels, ENTRYPOINT, CMD, WORKDIR (nothing is run)."""
    from cuberun.process import capture

    facts = ImageFacts(image)
    res = capture([*engine, "image", "inspect", image], timeout=timeout)
    if res.missing:
        facts.notes.append(f"{engine[0]} is not installed, so the image could not be inspected")
        return facts
    if res.returncode != 0:
        return facts
    try:
        data = json.loads(res.stdout)
        entry = data[0] if isinstance(data, list) else data
    except (ValueError, IndexError, KeyError):
        facts.notes.append(f"cannot parse the output of {engine[0]} image inspect {image}")
        return facts
    config = entry.get("Config") or {}
    facts.present = True
    facts.image_id = entry.get("Id")
    labels = config.get("Labels") or {}
    facts.labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    ep = config.get("Entrypoint")
    facts.entrypoint = [str(t) for t in ep] if isinstance(ep, list) else None
    cmd = config.get("Cmd")
    facts.cmd = [str(t) for t in cmd] if isinstance(cmd, list) else None
    facts.workdir = str(config.get("WorkingDir") or "") or None
    return facts


def probe_image(engine: Sequence[str], image: str) -> ImageFacts:
    """Inspect the image, then run it once (`--rm --network none`, ENTRYPOINT replaced) to read
    its Python's path and `/etc/os-release`: with `python3`, else `python`, else `cat`."""
    from cuberun.process import capture

    facts = inspect_image(engine, image)
    if not facts.present:
        return facts
    base = [*engine, "run", "--rm", "--network", "none", *_engine_extra(engine)]
    for exe in ("python3", "python"):
        res = capture([*base, "--entrypoint", exe, image, "-c", _PY_PROBE], timeout=PROBE_TIMEOUT)
        if res.returncode == 0 and "--os-release--" in res.stdout:
            head, _, release = res.stdout.partition("--os-release--")
            path = head.strip().splitlines()[-1].strip() if head.strip() else ""
            facts.runtime_path = path if path.startswith("/") else None
            facts.base_distro = parse_os_release(release)
            break
    if facts.runtime_path is None:
        facts.notes.append(f"no python3 or python runs in {image}")
    if facts.base_distro is None:
        res = capture([*base, "--entrypoint", "cat", image, "/etc/os-release"], timeout=PROBE_TIMEOUT)
        if res.returncode == 0:
            facts.base_distro = parse_os_release(res.stdout)
        if facts.base_distro is None:
            facts.notes.append(f"cannot read /etc/os-release of {image}")
    return facts


# -- choosing the values -------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelOptions:
    """The command-line flags (None: not given)."""

    base_distro: str | None = None
    min_cpu: str | None = None
    min_mem: str | None = None
    gpu: int | None = None
    runtime_type: str | None = None
    runtime_path: str | None = None
    features: str | None = None
    service_ports: str | None = None

    def validate(self) -> None:
        if self.runtime_type is not None and self.runtime_type not in RUNTIME_TYPES:
            raise UsageError(f"--runtime-type '{self.runtime_type}' is not allowed", "use app or python")
        if self.min_mem is not None and not _MEM.match(self.min_mem):
            raise UsageError(f"--min-mem '{self.min_mem}' is not a size", "write e.g. 512m, 1g or 16g")
        if self.min_cpu is not None:
            try:
                ok = float(self.min_cpu) > 0
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"--min-cpu '{self.min_cpu}' is not a positive number", "write e.g. 1 or 4")
        if self.gpu is not None and self.gpu < 0:
            raise UsageError(f"--gpu {self.gpu} is negative", "write a count of GPUs, 0 for none")
        if self.runtime_path is not None and not self.runtime_path.startswith("/"):
            raise UsageError(f"--runtime-path '{self.runtime_path}' is not absolute", "write e.g. /usr/bin/python3")
        if self.service_ports:
            for item in self.service_ports.split(","):
                if not _SERVICE_PORT.match(item.strip()):
                    raise UsageError(f"--service-ports item '{item}' is not name:proto:port", "proto is http, tcp, pty or preopen")


@dataclass
class Choice:
    key: str
    value: str
    source: str  # "flag", "image label", "image", "cube platform", "default", "kept"


def choose_labels(
    options: LabelOptions,
    *,
    facts: ImageFacts | None = None,
    platform: Mapping[str, Any] | None = None,
    existing: Mapping[str, str] | None = None,
) -> list[Choice]:
    """The label values, in block order. Precedence: flag > `existing` (labels the image or the
    Dockerfile already has) > facts read from the image > the cube's platform block > default."""
    existing = dict(existing or {})
    platform = dict(platform or {})
    chosen: dict[str, Choice] = {}

    def pick(key: str, flag: str | None, *candidates: tuple[str | None, str]) -> None:
        if flag is not None:
            chosen[key] = Choice(key, flag, "flag")
            return
        if key in existing:
            chosen[key] = Choice(key, existing[key], "kept")
            return
        for value, source in candidates:
            if value is not None and value != "":
                chosen[key] = Choice(key, value, source)
                return

    image = facts.image if facts else "the image"
    pick(KERNELSPEC, None, ("1", "default"))
    pick(CORECOUNT, None, (DEFAULT_CORECOUNT, "default"))
    runtime_type = options.runtime_type or existing.get(RUNTIME_TYPE) or "app"
    features = options.features
    if features is None and options.runtime_type is not None:
        features = features_for(options.runtime_type)  # follows --runtime-type
    pick(FEATURES, features, (features_for(runtime_type), f"runtime type {runtime_type}"))
    pick(BASE_DISTRO, options.base_distro, (facts.base_distro if facts else None, f"/etc/os-release of {image}"), (DEFAULT_BASE_DISTRO, "default"))
    pick(MIN_CPU, options.min_cpu, (DEFAULT_MIN_CPU, "default"))
    pick(MIN_MEM, options.min_mem, (memory_label(platform.get("host_memory_gb")), "platform.host_memory_gb"), (DEFAULT_MIN_MEM, "default"))
    if options.gpu != 0:  # --gpu 0: no GPU labels, whatever the cube asks for
        count = platform.get("accelerator_count", platform.get("num_accelerators"))
        cube_gpus = str(count) if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
        gpu_flag = str(options.gpu) if options.gpu else None
        pick(MIN_CUDA, gpu_flag, (cube_gpus, "platform.accelerator_count"))
        if MIN_CUDA in chosen:
            pick(ACCELERATORS, "cuda" if gpu_flag else None, ("cuda", "GPUs requested"))
    pick(RUNTIME_TYPE, options.runtime_type, ("app", "default"))
    pick(RUNTIME_PATH, options.runtime_path, (facts.runtime_path if facts else None, f"the python of {image}"), (DEFAULT_RUNTIME_PATH, "default"))
    pick(SERVICE_PORTS, options.service_ports)
    return [chosen[k] for k in ORDER if k in chosen]


def describe_choices(choices: Sequence[Choice]) -> list[str]:
    return [f"{c.key}={c.value} ({c.source})" for c in choices]


# -- Dockerfile from a cube image -----------------------------------------------------------------
def render_dockerfile(image: str, choices: Sequence[Choice], notes: Sequence[str] = ()) -> str:
    """`FROM <image>` plus the LABEL block; notes become comments above."""
    head = [
        f"# Backend.AI kernel image of the MLCube image {image}.",
        "# Written by `cuberun export backendai`. The agent ignores ENTRYPOINT/CMD: the cuberun",
        "# backendai runner passes each task's full command line as the batch startup command.",
    ]
    head += [f"# note: {n}" for n in notes]
    return "\n".join(head) + f"\nFROM {image}\n" + label_block([(c.key, c.value) for c in choices])


# -- rewriting an existing Dockerfile -------------------------------------------------------------
@dataclass
class _Token:
    line: int  # index into the physical lines
    start: int  # column of the first character
    end: int  # column after the last character
    text: str  # the token with quotes and escapes resolved


@dataclass
class _Instruction:
    keyword: str
    first: int  # first physical line
    last: int  # last physical line (continuations included)
    tokens: list[_Token]  # the argument words (LABEL only)
    args: str  # the arguments as one logical line


def _escape_char(lines: Sequence[str]) -> str:
    """The `# escape=` parser directive (backslash unless a leading directive says otherwise)."""
    for raw in lines:
        m = re.match(r"^\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$", raw.rstrip("\r\n"))
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
            return m.group(2)
    return "\\"


def _continues(line: str, escape: str) -> bool:
    return line.rstrip("\r\n").rstrip().endswith(escape)


def _tokenize(lines: Sequence[str], first: int, last: int, col: int, escape: str) -> list[_Token]:
    """Words of a LABEL instruction with their positions: quotes ("..." with escapes, '...'
    literal) and escaped characters resolved; continuations and comment lines inside skipped."""
    tokens: list[_Token] = []
    cur: _Token | None = None
    quote: str | None = None
    for li in range(first, last + 1):
        line = lines[li].rstrip("\r\n")
        if li > first and quote is None and cur is None and re.match(r"^\s*#", line):
            continue  # a comment line inside a continued instruction
        body = line.rstrip()
        cont = li < last and body.endswith(escape) and quote is None
        end_col = len(body) - 1 if cont else len(line)
        i = col if li == first else 0
        while i < end_col:
            c = line[i]
            if quote is None and c.isspace():
                if cur is not None:
                    tokens.append(cur)
                    cur = None
                i += 1
                continue
            if cur is None:
                cur = _Token(li, i, i, "")
            if quote is None and c in ("'", '"'):
                quote = c
            elif quote is not None and c == quote:
                quote = None
            elif c == escape and quote != "'" and i + 1 < len(line):
                cur.text += line[i + 1]
                i += 1
            else:
                cur.text += c
            i += 1
            cur.line, cur.end = li, i
        if cur is not None and quote is None:
            tokens.append(cur)
            cur = None
        elif cur is not None:
            cur.text += "\n"
    if cur is not None:
        tokens.append(cur)
    return tokens


def parse_instructions(text: str) -> tuple[list[str], list[_Instruction], str]:
    """Physical lines (with their line endings), instructions with their line ranges, and the
    escape character."""
    lines = text.splitlines(keepends=True)
    escape = _escape_char(lines)
    out: list[_Instruction] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first = i
        while _continues(lines[i], escape) and i + 1 < len(lines):
            i += 1
            # blank or comment lines inside a continuation belong to the instruction
            while i + 1 < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
        last = i
        m = re.match(r"^(\s*)(\S+)", lines[first])
        keyword = m.group(2).upper() if m else ""
        col = m.end() if m else 0
        args_parts = []
        for li in range(first, last + 1):
            part = lines[li].rstrip("\r\n")
            if li > first and part.lstrip().startswith("#"):
                continue
            if li == first:
                part = part[col:]
            part = part.rstrip()
            if part.endswith(escape) and li < last:
                part = part[:-1]
            args_parts.append(part.strip())
        tokens = _tokenize(lines, first, last, col, escape) if keyword == "LABEL" else []
        out.append(_Instruction(keyword, first, last, tokens, " ".join(p for p in args_parts if p)))
        i = last + 1
    return lines, out, escape


def _label_pairs(ins: _Instruction) -> list[tuple[str, str, list[_Token]]]:
    """(key, value, tokens) per label of a LABEL instruction; the legacy `LABEL key value` form
    is one pair whose tokens are all the words."""
    if not ins.tokens:
        return []
    if "=" not in ins.tokens[0].text:
        return [(ins.tokens[0].text, " ".join(t.text for t in ins.tokens[1:]), list(ins.tokens))]
    pairs = []
    for tok in ins.tokens:
        key, _, value = tok.text.partition("=")
        pairs.append((key, value, [tok]))
    return pairs


def _stages(instructions: Sequence[_Instruction]) -> list[tuple[int, str, str | None]]:
    """(index of the FROM instruction, base reference, stage name) per stage."""
    stages = []
    for idx, ins in enumerate(instructions):
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        base = words[0] if words else ""
        name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
        stages.append((idx, base, name))
    return stages


@dataclass
class Rewrite:
    text: str
    kept: dict[str, str]  # ai.backend labels already there and left as they are
    updated: dict[str, tuple[str, str]]  # key -> (old, new)
    added: dict[str, str]
    removed_duplicates: list[str]
    base_image: str | None  # the final stage's base (None when it is an earlier stage or unresolved)
    inherited: dict[str, str]  # ai.backend labels of earlier stages the final stage builds on


def final_stage_labels(text: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(labels set in the final stage, ai.backend labels inherited from earlier stages it builds
    on, the final stage's base image when it is not an earlier stage)."""
    _, instructions, _ = parse_instructions(text)
    stages = _stages(instructions)
    if not stages:
        raise UsageError("the Dockerfile has no FROM instruction", "a Dockerfile starts with FROM IMAGE")
    own: dict[str, str] = {}
    start = stages[-1][0]
    for ins in instructions[start + 1 :]:
        for key, value, _ in _label_pairs(ins) if ins.keyword == "LABEL" else []:
            own[key] = value
    inherited: dict[str, str] = {}
    base: str | None = stages[-1][1]
    seen = 0
    names = {name: pos for pos, (_, _, name) in enumerate(stages) if name}
    current = len(stages) - 1
    while base is not None and base.lower() in names and seen < len(stages):
        seen += 1
        pos = names[base.lower()]
        if pos >= current:
            break
        idx = stages[pos][0]
        end = stages[pos + 1][0] if pos + 1 < len(stages) else len(instructions)
        layer: dict[str, str] = {}
        for ins in instructions[idx + 1 : end]:
            for key, value, _ in _label_pairs(ins) if ins.keyword == "LABEL" else []:
                if key.startswith(PREFIX):
                    layer[key] = value
        inherited = {**layer, **inherited}
        base, current = stages[pos][1], pos
    if base is not None and base.lower() in names:
        base = None
    return own, inherited, base


def rewrite_dockerfile(text: str, updates: Mapping[str, str], additions: Mapping[str, str]) -> Rewrite:
    """Add the labels to the final stage. `updates` (values given by flags) replace existing
    labels in place; `additions` are added only when the final stage (or a stage it builds on)
    lacks them. Duplicated `ai.backend.*` labels in the final stage are reduced to the last one
    (the one Docker applies). New labels go into one LABEL block at the end of the file, so
    the build cache of every earlier step is kept."""
    lines, instructions, escape = parse_instructions(text)
    stages = _stages(instructions)
    if not stages:
        raise UsageError("the Dockerfile has no FROM instruction", "a Dockerfile starts with FROM IMAGE")
    own, inherited, base = final_stage_labels(text)
    start = stages[-1][0]
    occurrences: dict[str, list[tuple[_Instruction, list[_Token]]]] = {}
    for ins in instructions[start + 1 :]:
        if ins.keyword != "LABEL":
            continue
        for key, _value, toks in _label_pairs(ins):
            if key.startswith(PREFIX):
                occurrences.setdefault(key, []).append((ins, toks))

    kept: dict[str, str] = {}
    updated: dict[str, tuple[str, str]] = {}
    removed: list[str] = []
    edits: dict[int, list[tuple[int, int, str]]] = {}  # line -> [(start, end, replacement)]
    dropped_lines: set[int] = set()
    emptied: list[_Instruction] = []
    removed_tokens: dict[int, set[int]] = {}  # id(instruction) -> token indexes removed

    def remove_tokens(ins: _Instruction, toks: Sequence[_Token]) -> None:
        ids = removed_tokens.setdefault(id(ins), set())
        for tok in toks:
            ids.add(ins.tokens.index(tok))
        if len(ids) == len(ins.tokens):
            emptied.append(ins)
            return
        for tok in toks:
            line = lines[tok.line]
            begin = tok.start
            while begin > 0 and line[begin - 1] in " \t":
                begin -= 1
            edits.setdefault(tok.line, []).append((begin, tok.end, ""))

    for key, occ in occurrences.items():
        *earlier, (ins, toks) = occ
        for e_ins, e_toks in earlier:
            remove_tokens(e_ins, e_toks)
            removed.append(key)
        old = own[key]
        if key in updates and updates[key] != old:
            new = f"{key}={quote_value(updates[key])}"
            if len(toks) == 1:
                edits.setdefault(toks[0].line, []).append((toks[0].start, toks[0].end, new))
            else:  # legacy `LABEL key value words`: the first word becomes key="value", the rest go
                edits.setdefault(toks[0].line, []).append((toks[0].start, toks[0].end, new))
                remove_tokens(ins, toks[1:])
            updated[key] = (old, updates[key])
        else:
            kept[key] = old

    out = list(lines)
    for li, items in edits.items():
        line = out[li]
        for begin, end, repl in sorted(items, key=lambda t: t[0], reverse=True):
            line = line[:begin] + repl + line[end:]
        out[li] = line
    for ins in emptied:
        dropped_lines.update(range(ins.first, ins.last + 1))
    # a continued instruction whose last words went away must not continue into the next one
    for ins in instructions[start + 1 :]:
        if ins.keyword != "LABEL" or ins in emptied:
            continue
        content = [li for li in range(ins.first, ins.last + 1) if li not in dropped_lines]
        for li in list(content):
            body = out[li].rstrip("\r\n")
            rest = body.strip()
            if li != ins.first and (rest == escape or rest == ""):
                dropped_lines.add(li)
        alive = [li for li in content if li not in dropped_lines and (li == ins.first or not out[li].lstrip().startswith("#"))]
        if alive:
            tail = alive[-1]
            body = out[tail].rstrip("\r\n")
            ending = out[tail][len(body) :]
            if body.rstrip().endswith(escape):
                out[tail] = body.rstrip()[:-1].rstrip() + (ending or "\n")
            # comment lines after the new last line would now stand alone: that is fine in Docker
    result = [line for li, line in enumerate(out) if li not in dropped_lines]

    added: dict[str, str] = {}
    for key in ORDER:
        if key in occurrences:
            continue
        if key in updates and (key not in inherited or inherited[key] != updates[key]):
            added[key] = updates[key]
        elif key in additions and key not in inherited:
            added[key] = additions[key]
    for key in updates:  # flags for labels outside the known order (e.g. ai.backend.role)
        if key not in ORDER and key not in occurrences and key not in added:
            added[key] = updates[key]
    for key, value in inherited.items():
        if key not in occurrences and key not in added:
            kept[key] = value
    text_out = "".join(result)
    if added:
        if text_out and not text_out.endswith("\n"):
            text_out += "\n"
        text_out += "# Backend.AI kernel labels (cuberun export backendai)\n"
        text_out += label_block(list(added.items()), escape)
    return Rewrite(text_out, kept, updated, added, removed, base, inherited)
