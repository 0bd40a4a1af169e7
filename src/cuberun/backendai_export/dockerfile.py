"""Dockerfiles: one `FROM <cube image>` with the label block, and the labels added to the final stage of any Dockerfile."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cuberun.backendai_export.choose import Choice
from cuberun.backendai_export.labels import ORDER, PREFIX, label_block, quote_value
from cuberun.errors import UsageError
from cuberun.valueclass import dataclass


def render_dockerfile(image: str, choices: Sequence[Choice], notes: Sequence[str] = ()) -> str:
    """`FROM <image>` plus the LABEL block; notes become comments above."""
    head = [
        f"# Backend.AI kernel image of the MLCube image {image}.",
        "# Written by `cuberun export backendai`. The agent ignores ENTRYPOINT/CMD: the cuberun",
        "# backendai runner passes each task's full command line as the batch startup command.",
    ]
    head += [f"# note: {n}" for n in notes]
    return "\n".join(head) + f"\nFROM {image}\n" + label_block([(c.key, c.value) for c in choices])


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
