"""Just enough Dockerfile understanding to run a cube's image contract on the host.

From the last build stage we take ENTRYPOINT/CMD, WORKDIR, the COPY/ADD lines (which host
files land where in the image), and the `pip install` RUN steps. Everything else in RUN is
reported, because it is not replicated on the host.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from pathlib import Path

from cuberun.valueclass import dataclass, field


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Dockerfile:
    path: Path
    context: Path
    instructions: list[Instruction]
    entrypoint: list[str] | None = None
    entrypoint_shell_form: bool = False
    cmd: list[str] | None = None
    workdir: str = "/"
    copies: list[tuple[str, Path]] = field(default_factory=list)  # (container path, host path)
    requirement_files: list[str] = field(default_factory=list)  # container or context-relative paths
    pip_packages: list[str] = field(default_factory=list)
    other_runs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    base_image: str | None = None

    def to_host(self, container_path: str) -> Path | None:
        """The host file that a container path comes from, via the COPY lines."""
        path = posixpath.normpath(posixpath.join(self.workdir, container_path))
        best: tuple[int, Path] | None = None
        for dest, src in self.copies:
            dest = dest.rstrip("/") or "/"
            if path == dest:
                return src
            prefix = dest if dest.endswith("/") else dest + "/"
            if path.startswith(prefix) and src.is_dir():
                candidate = src / path[len(prefix) :]
                if best is None or len(dest) > best[0]:
                    best = (len(dest), candidate)
        return best[1] if best else None


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comments and blank lines."""
    out: list[tuple[int, str]] = []
    buf = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        out.append((start, buf))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _json_or_shell(args: str) -> tuple[list[str], bool]:
    text = args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value, False
        except ValueError:
            pass
    return shlex.split(text), True


def _strip_flags(tokens: list[str]) -> list[str]:
    return [t for t in tokens if not t.startswith("--")]


def parse(path: Path, context: Path) -> Dockerfile:
    """The Dockerfile's instructions; a line whose quotes do not balance is a one-line error."""
    try:
        return _parse(path, context)
    except ValueError as exc:
        from cuberun.errors import UsageError

        raise UsageError(f"{path}: cannot read an instruction: {str(exc).lower()}", "balance the quotes in the Dockerfile") from None


def _parse(path: Path, context: Path) -> Dockerfile:
    from cuberun.safeio import read_regular

    text = read_regular(path, 8 << 20, what="Dockerfile").decode("utf-8", errors="replace")
    instructions = []
    for line, content in logical_lines(text):
        keyword, _, args = content.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), line))
    # the last stage only
    last_from = max((i for i, ins in enumerate(instructions) if ins.keyword == "FROM"), default=-1)
    df = Dockerfile(path, context, instructions)
    if last_from >= 0:
        df.base_image = instructions[last_from].args.split()[0] if instructions[last_from].args else None
    for ins in instructions[last_from + 1 :]:
        if ins.keyword == "WORKDIR":
            df.workdir = posixpath.normpath(posixpath.join(df.workdir, ins.args.strip().strip('"')))
        elif ins.keyword in ("COPY", "ADD"):
            tokens, _ = _json_or_shell(ins.args)
            if any(t.startswith("--from") for t in tokens):
                continue
            tokens = _strip_flags(tokens)
            if len(tokens) < 2:
                continue
            *sources, dest = tokens
            dest_abs = posixpath.normpath(posixpath.join(df.workdir, dest)) + ("/" if dest.endswith("/") else "")
            for src in sources:
                host = (context / src).resolve() if src not in (".", "./") else context.resolve()
                if len(sources) > 1 or dest.endswith("/"):
                    if host.is_dir():
                        df.copies.append((dest_abs.rstrip("/") or "/", host))
                    else:
                        df.copies.append((posixpath.join(dest_abs, posixpath.basename(src)), host))
                else:
                    df.copies.append((dest_abs, host))
        elif ins.keyword == "ENTRYPOINT":
            df.entrypoint, df.entrypoint_shell_form = _json_or_shell(ins.args)
        elif ins.keyword == "CMD":
            df.cmd, _ = _json_or_shell(ins.args)
        elif ins.keyword == "RUN":
            _scan_run(df, ins.args)
        elif ins.keyword == "LABEL":
            _scan_labels(df, ins.args)
    return df


def _scan_run(df: Dockerfile, args: str) -> None:
    for command in _split_commands(args):
        tokens = command.split()
        if "pip" in " ".join(tokens[:4]) and "install" in tokens:
            rest = tokens[tokens.index("install") + 1 :]
            i = 0
            while i < len(rest):
                tok = rest[i]
                if tok in ("-r", "--requirement") and i + 1 < len(rest):
                    df.requirement_files.append(rest[i + 1])
                    i += 2
                    continue
                if tok.startswith("--requirement="):
                    df.requirement_files.append(tok.split("=", 1)[1])
                elif not tok.startswith("-"):
                    df.pip_packages.append(tok.strip("'\""))
                elif tok in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint"):
                    i += 1
                i += 1
        elif command.strip():
            df.other_runs.append(command.strip())


def _split_commands(args: str) -> list[str]:
    text = args
    if text.strip().startswith("["):
        tokens, _ = _json_or_shell(text)
        text = " ".join(tokens)
    parts: list[str] = []
    for chunk in text.replace("||", "&&").replace(";", "&&").split("&&"):
        parts.append(chunk.strip())
    return [p for p in parts if p]


def _scan_labels(df: Dockerfile, args: str) -> None:
    try:
        tokens = shlex.split(args)
    except ValueError:
        return
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if "=" in tok:
            key, _, value = tok.partition("=")
            df.labels[key] = value
            i += 1
        elif i + 1 < len(tokens):  # legacy `LABEL key value`
            df.labels[tok] = " ".join(tokens[i + 1 :])
            break
        else:
            i += 1
