"""What a cube's Dockerfile makes its image run, derived for the host.

The parser follows the Dockerfile instructions of the final build stage in order, the way
`docker build` would: ARG and ENV values as they evolve (and `${VAR}` expansion), WORKDIR
changes, COPY/ADD lines (several sources, directories, wildcards, `--chown`; `--from` stages
and URLs are noted, not mapped), ENTRYPOINT/CMD in both forms, and every RUN line split into
its shell commands (`&&`, `||`, `;`, pipes, line continuations, heredocs, `cd`), each
recognised for what it is: a pip install (`pip`, `pip3`, `python -m pip`), a system package
install (`apt-get`, `apt`, `yum`, `dnf`, `apk`, `conda`, `mamba`), or something else.

Only pip requirements ever become the host's managed environment (`-r` files are resolved
against the WORKDIR in effect at that RUN line, through the COPY lines seen so far); system
packages and other RUN commands are reported, never acted on.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shlex
from pathlib import Path

from cuberun.valueclass import dataclass, field

MAX_BYTES = 1 << 20  # a Dockerfile larger than this is not a Dockerfile

PIP_PROGRAMS = re.compile(r"^pip(\d+(\.\d+)?)?$")
PYTHON_PROGRAMS = re.compile(r"^python(\d+(\.\d+)?)?$")
SYSTEM_INSTALLERS = {
    "apt-get": ("install",), "apt": ("install",), "aptitude": ("install",), "yum": ("install",), "dnf": ("install",),
    "microdnf": ("install",), "zypper": ("install", "in"), "apk": ("add",), "conda": ("install", "create"),
    "mamba": ("install", "create"), "micromamba": ("install", "create"), "pacman": ("-S", "-Sy", "-Syu"),
}
# pip options that take a value as the next token (when not written --opt=value)
PIP_VALUE_OPTIONS = {
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint", "--trusted-host", "--timeout",
    "--default-timeout", "--progress-bar", "--root-user-action", "-t", "--target", "--prefix", "--root", "--src", "--platform",
    "--python-version", "--implementation", "--abi", "--only-binary", "--no-binary", "--upgrade-strategy", "--retries",
    "--cache-dir", "--log", "--proxy", "--cert", "--client-cert", "--config-settings", "-C", "--global-option", "--install-option",
    "--report", "--exists-action", "--keyring-provider",
}
# pip options the managed env keeps (where packages come from); everything else is the Dockerfile's business
PIP_SOURCE_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "--pre", "--no-index")
PIP_FLAGS = ("--pre", "--no-index")  # source options without a value
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
SHELL_KEYWORDS = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "}", "time", "exec"}
# Python versions of common base images (the image's `python3`), for hints about bit-rotted pins
BASE_PYTHONS = {
    "ubuntu:16.04": "3.5", "ubuntu:18.04": "3.6", "ubuntu:20.04": "3.8", "ubuntu:22.04": "3.10", "ubuntu:24.04": "3.12",
    "debian:stretch": "3.5", "debian:buster": "3.7", "debian:bullseye": "3.9", "debian:bookworm": "3.11", "debian:trixie": "3.13",
    "debian:9": "3.5", "debian:10": "3.7", "debian:11": "3.9", "debian:12": "3.11", "debian:13": "3.13",
}


@dataclass
class Copy:
    """One source of a COPY/ADD line: where it lands in the image and which host path it is."""

    dest: str  # absolute container path (a directory when `into` is true)
    host: Path
    into: bool  # the source's contents go under dest (a directory source, or dest is a directory)
    line: int


@dataclass
class Requirement:
    """A `pip install` argument: a requirement spec, a `-r`/`-c` file or a local project path."""

    kind: str  # "spec", "file", "constraint", "path"
    value: str  # the spec (`pandas==1.1.3`) or the container path as written
    line: int
    host: Path | None = None  # files and paths: the host file the COPY lines put there
    editable: bool = False


@dataclass
class RunCommand:
    line: int
    text: str
    kind: str  # "pip", "system", "other"
    workdir: str


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    heredocs: list[str] = field(default_factory=list)  # bodies of `<<EOF` documents


@dataclass
class Dockerfile:
    path: Path
    context: Path
    instructions: list[Instruction]
    entrypoint: list[str] | None = None
    entrypoint_shell_form: bool = False
    entrypoint_line: int = 0
    cmd: list[str] | None = None
    cmd_shell_form: bool = False
    cmd_line: int = 0
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)  # the final stage's ENV, in order
    copies: list[Copy] = field(default_factory=list)
    requirements: list[Requirement] = field(default_factory=list)
    pip_options: list[str] = field(default_factory=list)  # index/find-links options of the pip lines
    system_packages: list[str] = field(default_factory=list)
    runs: list[RunCommand] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    base_image: str | None = None
    stages: int = 0

    # -- what older callers read ----------------------------------------------------------
    @property
    def requirement_files(self) -> list[str]:
        return [r.value for r in self.requirements if r.kind == "file"]

    @property
    def pip_packages(self) -> list[str]:
        return [r.value for r in self.requirements if r.kind == "spec"]

    @property
    def other_runs(self) -> list[str]:
        return [r.text for r in self.runs if r.kind == "other"]

    def python_version(self) -> str | None:
        """The Python version the image's `python3` most likely is (from FROM), or None."""
        return base_python(self.base_image)

    def to_host(self, container_path: str, upto: int | None = None) -> Path | None:
        """The host path a container path comes from, through the COPY lines (those before line
        `upto` only, when given). The latest COPY that provides the path wins."""
        path = posixpath.normpath(posixpath.join(self.workdir, container_path))
        fallback: Path | None = None
        for copy in reversed(self.copies):
            if upto is not None and copy.line >= upto:
                continue
            if not copy.into:
                if path == copy.dest:
                    return copy.host
                continue
            if path == copy.dest:
                return copy.host
            prefix = copy.dest.rstrip("/") + "/"
            if path.startswith(prefix):
                candidate = copy.host / path[len(prefix) :]
                if candidate.exists():
                    return candidate
                if fallback is None:
                    fallback = candidate
        return fallback

    def covered(self, container_path: str) -> bool:
        """True when some COPY line puts something at or under this container path."""
        path = posixpath.normpath(container_path)
        return any(c.dest == path or c.dest.startswith(path.rstrip("/") + "/") or path.startswith(c.dest.rstrip("/") + "/") for c in self.copies)


def base_python(image: str | None) -> str | None:
    if not image:
        return None
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    match = re.match(r"^python:(\d+)\.(\d+)", last)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    match = re.search(r"[-_]py(\d)(\d+)\b", last)  # e.g. tensorflow:2.3.0-py37
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    tag_match = re.match(r"^([a-z0-9._-]+):([A-Za-z0-9._-]+)$", last)
    if tag_match:
        base, tag = tag_match.groups()
        for key, version in BASE_PYTHONS.items():
            kbase, ktag = key.split(":")
            if base == kbase and (tag == ktag or tag.startswith(ktag + "-") or tag.startswith(ktag + ".")):
                return version
    return None


# -- reading -------------------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """A Dockerfile's text: a regular file of bounded size (else OSError)."""
    import stat

    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(f"{path} is larger than {MAX_BYTES // 1024} KiB")
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


# -- RUN lines -----------------------------------------------------------------------------------
def shell_commands(script: str) -> list[list[str]]:
    """A shell script split into simple commands (words), at `&&`, `||`, `;`, `|`, `&`,
    parentheses and newlines; quotes respected; comments dropped."""
    commands: list[list[str]] = []
    for raw_line in _script_lines(script):
        lexer = shlex.shlex(raw_line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        try:
            for tok in lexer:
                if tok in SHELL_OPERATORS or set(tok) <= set(";&|()"):
                    if current:
                        commands.append(current)
                    current = []
                    continue
                current.append(tok)
        except ValueError:  # an unbalanced quote: fall back to whitespace
            current = raw_line.split()
        if current:
            commands.append(current)
    return commands


def _script_lines(script: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def _strip_prefix(words: list[str]) -> list[str]:
    """Drop what runs the real program: `sudo`, `env A=B`, `A=B` assignments, shell keywords."""
    i = 0
    while i < len(words):
        w = words[i]
        if w in SHELL_KEYWORDS or w in ("sudo", "env", "nohup", "command", "eatmydata"):
            i += 1
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            i += 1
            continue
        if words[i - 1 : i] == ["sudo"] and w.startswith("-"):
            i += 1
            continue
        break
    return words[i:]


def _run(df: Dockerfile, ins: Instruction, values: dict[str, str]) -> None:
    args = ins.args
    scripts: list[str] = []
    if args.lstrip().startswith("["):
        tokens, shell = _json_or_shell(args)
        if not shell:
            # exec form: one command, no shell (["sh", "-c", "..."] still holds a script)
            if len(tokens) >= 3 and os.path.basename(tokens[0]) in ("sh", "bash") and tokens[1] in ("-c", "-ec", "-ex", "-xe", "-e"):
                scripts.append(tokens[2])
            else:
                scripts.append(shlex.join(tokens))
        else:
            scripts.append(args)
    else:
        flags_removed = re.sub(r"^(\s*--(mount|network|security)=\S+)+", "", args)
        scripts.append(HEREDOC.sub("", flags_removed) if ins.heredocs else flags_removed)
    if ins.heredocs:
        head = shell_commands(scripts[0])
        if not head or (len(head) == 1 and os.path.basename(head[0][0]) in ("sh", "bash") and all(w.startswith("-") for w in head[0][1:])):
            scripts = list(ins.heredocs)  # RUN <<EOF: the documents are the script
    cwd = df.workdir
    for script in scripts:
        for words in shell_commands(script):
            words = [expand(w, values) for w in words]
            words = _strip_prefix(words)
            if not words:
                continue
            text = shlex.join(words)
            prog = os.path.basename(words[0])
            if prog == "cd" and len(words) > 1:
                cwd = posixpath.normpath(posixpath.join(cwd, words[1]))
                continue
            pip_args = _pip_install_args(words)
            if pip_args is not None:
                df.runs.append(RunCommand(ins.line, text, "pip", cwd))
                _pip(df, pip_args, ins.line, cwd)
                continue
            system = _system_packages(words)
            if system is not None:
                df.runs.append(RunCommand(ins.line, text, "system", cwd))
                for pkg in system:
                    if pkg not in df.system_packages:
                        df.system_packages.append(pkg)
                continue
            df.runs.append(RunCommand(ins.line, text, "other", cwd))


def _pip_install_args(words: list[str]) -> list[str] | None:
    """The arguments after `install` when the command is a pip install, else None."""
    prog = os.path.basename(words[0])
    rest: list[str]
    if PIP_PROGRAMS.match(prog):
        rest = words[1:]
    elif PYTHON_PROGRAMS.match(prog):
        i = 1
        while i < len(words) and words[i].startswith("-") and words[i] != "-m":
            i += 1  # python3 -u -m pip ...
        if words[i : i + 2] != ["-m", "pip"]:
            return None
        rest = words[i + 2 :]
    elif prog == "uv" and words[1:3] == ["pip", "install"]:
        return words[3:]
    else:
        return None
    while rest and rest[0].startswith("-"):  # global options before the subcommand
        rest = rest[2:] if rest[0] in PIP_VALUE_OPTIONS else rest[1:]
    if not rest or rest[0] != "install":
        return None
    return rest[1:]


def _pip(df: Dockerfile, args: list[str], line: int, cwd: str) -> None:
    i = 0
    while i < len(args):
        tok = args[i]
        opt, eq, inline = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        value: str | None = inline if eq else None
        takes_value = opt in PIP_VALUE_OPTIONS or opt in ("-r", "--requirement", "-e", "--editable")
        if takes_value and value is None:
            if tok.startswith("-") and len(tok) > 2 and not tok.startswith("--") and tok[:2] in ("-r", "-c", "-e", "-i", "-f"):
                opt, value = tok[:2], tok[2:]  # -rrequirements.txt
            else:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
        i += 1
        if opt in ("-r", "--requirement", "-c", "--constraint"):
            kind = "file" if opt in ("-r", "--requirement") else "constraint"
            container = posixpath.normpath(posixpath.join(cwd, value or ""))
            df.requirements.append(Requirement(kind, value or "", line, df.to_host(container, upto=line)))
        elif opt in ("-e", "--editable"):
            _pip_target(df, value or "", line, cwd, editable=True)
        elif opt in PIP_SOURCE_OPTIONS:
            df.pip_options += [opt] if opt in PIP_FLAGS else [opt, value or ""]
        elif tok.startswith("-"):
            continue
        else:
            _pip_target(df, tok, line, cwd)


def _pip_target(df: Dockerfile, tok: str, line: int, cwd: str, editable: bool = False) -> None:
    if tok.startswith((".", "/")) or tok.startswith("file:"):
        path = tok[5:] if tok.startswith("file:") else tok
        container = posixpath.normpath(posixpath.join(cwd, path))
        df.requirements.append(Requirement("path", tok, line, df.to_host(container, upto=line), editable))
    else:
        df.requirements.append(Requirement("spec", tok, line, None, editable))


def _system_packages(words: list[str]) -> list[str] | None:
    prog = os.path.basename(words[0])
    verbs = SYSTEM_INSTALLERS.get(prog)
    if verbs is None:
        return None
    rest = words[1:]
    verb_at = next((i for i, w in enumerate(rest) if w in verbs), None)
    if verb_at is None:
        return []  # apt-get update, yum clean all: system, but nothing installed
    packages = []
    skip = False
    for w in rest[verb_at + 1 :]:
        if skip:
            skip = False
            continue
        if w in ("-c", "--channel", "-n", "--name", "-p", "--prefix", "-o", "--option", "-t", "--target-release"):
            skip = True
            continue
        if w.startswith("-"):
            continue
        packages.append(w)
    return packages
