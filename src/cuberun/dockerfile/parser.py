"""Parsing a Dockerfile: the final build stage's instructions followed in order, as `docker build`
would (ARG/ENV values, WORKDIR, COPY/ADD sources against the build context, ENTRYPOINT/CMD, LABEL,
RUN lines)."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from pathlib import Path

from cuberun.dockerfile.model import Copy, Dockerfile, Instruction
from cuberun.dockerfile.reading import _json_or_shell, _key_values, expand, instructions_of, read_text
from cuberun.dockerfile.runlines import _run


# -- parsing -------------------------------------------------------------------------------------
def parse(path: Path, context: Path) -> Dockerfile:
    """Parse a Dockerfile: everything taken from its final build stage."""
    return parse_text(read_text(path), path, context)


def parse_text(text: str, path: Path, context: Path) -> Dockerfile:
    instructions = instructions_of(text)
    df = Dockerfile(path, context, instructions)
    args: dict[str, str] = {}  # ARGs before the first FROM (usable in FROM lines)
    froms = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    df.stages = len(froms)
    for ins in instructions[: froms[0] if froms else 0]:
        if ins.keyword == "ARG":
            for key, value in _key_values(ins.args, args):
                args[key] = value
    start = 0
    stage_names: dict[str, str] = {}
    for idx in froms:
        tokens = expand(instructions[idx].args, args).split()
        flags = [t for t in tokens if t.startswith("--")]
        words = [t for t in tokens if not t.startswith("--")]
        image = words[0] if words else ""
        image = stage_names.get(image.lower(), image)  # FROM an earlier stage: its base image
        if len(words) >= 3 and words[1].lower() == "as":
            stage_names[words[2].lower()] = image
        df.base_image = image or None
        del flags
        start = idx + 1
    if df.stages > 1:
        df.notes.append(f"{path.name} has {df.stages} build stages: the host command comes from the last one")
    values: dict[str, str] = dict(args)
    for ins in instructions[start:]:
        _apply(df, ins, values)
    return df


def _apply(df: Dockerfile, ins: Instruction, values: dict[str, str]) -> None:
    kw = ins.keyword
    if kw == "ARG":
        for key, value in _key_values(ins.args, values):
            if value or key not in values:
                values[key] = value
    elif kw == "ENV":
        for key, value in _key_values(ins.args, values):
            values[key] = value
            df.env[key] = value
    elif kw == "WORKDIR":
        target = expand(ins.args.strip().strip('"').strip("'"), values)
        df.workdir = posixpath.normpath(posixpath.join(df.workdir, target))
    elif kw in ("COPY", "ADD"):
        _copy(df, ins, values)
    elif kw == "ENTRYPOINT":
        df.entrypoint, df.entrypoint_shell_form = _json_or_shell(ins.args)
        df.entrypoint_line = ins.line
        df.cmd = None  # an ENTRYPOINT resets the CMD inherited so far
    elif kw == "CMD":
        df.cmd, df.cmd_shell_form = _json_or_shell(ins.args)
        df.cmd_line = ins.line
    elif kw == "RUN":
        _run(df, ins, values)
    elif kw == "LABEL":
        for key, value in _key_values(ins.args, values):
            df.labels[key] = value


def _copy(df: Dockerfile, ins: Instruction, values: dict[str, str]) -> None:
    tokens, _ = _json_or_shell(ins.args)
    flags = [t for t in tokens if t.startswith("--")]
    words = [expand(t, values) for t in tokens if not t.startswith("--")]
    where = f"{df.path.name}:{ins.line}"
    if any(f.startswith("--from") for f in flags):
        stage = next(f.split("=", 1)[1] for f in flags if f.startswith("--from"))
        df.notes.append(f"{where}: {ins.keyword} --from={stage} copies from another build stage or image; not mapped to host files")
        return
    if len(words) < 2:
        return
    *sources, dest = words
    if ins.heredocs:  # COPY <<EOF /path: an inline file
        df.notes.append(f"{where}: {ins.keyword} of an inline document to {dest}: not mapped to a host file")
        sources = [s for s in sources if not s.startswith("<<")]
        if not sources:
            return
    dest_abs = posixpath.normpath(posixpath.join(df.workdir, dest))
    dest_is_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
    context = df.context
    for src in sources:
        if ins.keyword == "ADD" and re.match(r"^[a-z][a-z0-9+.-]*://", src):
            df.notes.append(f"{where}: ADD {src} downloads at build time; not mapped to a host file")
            continue
        if ins.keyword == "ADD" and re.search(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2|tar\.xz|txz)$", src):
            df.notes.append(f"{where}: ADD {src} unpacks an archive in the image; not mapped to host files")
            continue
        matches = _glob(context, src)
        if not matches:
            df.notes.append(f"{where}: {ins.keyword} source {src} does not exist in the build context {context}")
            continue
        many = len(matches) > 1 or dest_is_dir
        for host in matches:
            if host.is_dir():
                df.copies.append(Copy(dest_abs, host, True, ins.line))
            elif many:
                df.copies.append(Copy(posixpath.join(dest_abs, host.name), host, False, ins.line))
            else:
                df.copies.append(Copy(dest_abs, host, False, ins.line))


def _glob(context: Path, pattern: str) -> list[Path]:
    rel = posixpath.normpath(pattern.lstrip("/")) if pattern not in ("/",) else "."
    if rel.startswith(".."):
        return []
    if not any(ch in rel for ch in "*?["):
        path = (context / rel).resolve() if rel != "." else context.resolve()
        return [path] if path.exists() else []
    parent, _, leaf = rel.rpartition("/")
    base = context / parent if parent else context
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    return [(base / n).resolve() for n in names if fnmatch.fnmatchcase(n, leaf)]
