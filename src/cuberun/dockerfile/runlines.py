"""RUN lines: a script split into simple commands (`&&`, `||`, `;`, pipes, continuations, heredocs,
`cd`), each recognised as a pip install, a system package install or something else."""

from __future__ import annotations

import os
import posixpath
import re
import shlex

from cuberun.dockerfile.model import Dockerfile, Instruction, Requirement, RunCommand
from cuberun.dockerfile.reading import HEREDOC, _json_or_shell, expand

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
