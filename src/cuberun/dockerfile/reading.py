"""Reading a Dockerfile: bounded size, logical instructions (continuations, comments, the `escape`
directive, heredoc bodies), exec or shell form, `${VAR}` expansion, `K=V` lists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from cuberun.dockerfile.model import Instruction

MAX_BYTES = 1 << 20  # a Dockerfile larger than this is not a Dockerfile


def read_text(path: Path) -> str:
    """A Dockerfile's text: a regular file of bounded size (else OSError), opened so that a FIFO
    never blocks (safeio.read_regular)."""
    from cuberun.safeio import FileProblem, read_regular

    try:
        data = read_regular(path, MAX_BYTES, what="the Dockerfile")
    except FileProblem as exc:
        raise OSError(exc.problem) from None
    return data.decode("utf-8", errors="replace")


HEREDOC = re.compile(r"<<(-?)\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")


def instructions_of(text: str) -> list[Instruction]:
    """Logical instructions: continuations joined, comments and blank lines dropped, heredoc
    bodies attached to their instruction. Honours the `# escape=` parser directive."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:  # parser directives come first, before any instruction or comment
        directive = re.match(r"^\s*#\s*escape\s*=\s*(\S)\s*$", raw)
        if directive:
            escape = directive.group(1)
            break
        if not re.match(r"^\s*#\s*\w+\s*=", raw):
            break
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts: list[str] = []
        while i < len(lines):
            part = lines[i].strip()
            i += 1
            if parts and (not part or part.startswith("#")):
                continue  # comments and empty lines inside a continued instruction
            if part.endswith(escape):
                parts.append(part[: -len(escape)].rstrip())
                continue
            parts.append(part)
            break
        buf = " ".join(p for p in parts if p)
        keyword, _, args = buf.strip().partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        for match in HEREDOC.finditer(args) if ins.keyword in ("RUN", "COPY", "ADD") else ():
            strip_tabs, word = match.group(1) == "-", match.group(3)
            body: list[str] = []
            while i < len(lines):
                line = lines[i]
                i += 1
                if (line.lstrip("\t") if strip_tabs else line).strip() == word:
                    break
                body.append(line.lstrip("\t") if strip_tabs else line)
            ins.heredocs.append("\n".join(body))
        out.append(ins)
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
    try:
        return shlex.split(text), True
    except ValueError:
        return text.split(), True


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, values: dict[str, str]) -> str:
    """Dockerfile variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative}."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name)
        op, word = match.group(2), match.group(3)
        if op == "-":
            return value if value else (word or "")
        if op == "+":
            return (word or "") if value else ""
        return value if value is not None else ""

    return _VAR.sub(sub, text.replace("\\$", "\0")).replace("\0", "$")


def _key_values(args: str, values: dict[str, str]) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` or the legacy `K value with spaces` of ENV, ARG and LABEL."""
    try:
        tokens = shlex.split(args)
    except ValueError:
        tokens = args.split()
    if not tokens:
        return []
    if "=" not in tokens[0]:
        rest = args.strip()[len(args.strip().split(None, 1)[0]) :].strip()
        try:
            rest = " ".join(shlex.split(rest))
        except ValueError:
            pass
        return [(tokens[0], expand(rest, values))]
    pairs = []
    for tok in tokens:
        key, sep, value = tok.partition("=")
        pairs.append((key, expand(value, values) if sep else ""))
    return pairs
