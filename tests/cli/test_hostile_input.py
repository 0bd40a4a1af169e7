"""Hostile inputs (issue 11), beyond test_bad_input.py's malformed cubes: special files, encodings,
symbolic links, outputs that alias what they must not, damaged state, permissions as a non-root
user, huge and deep documents, the locale, closed streams, signals to cuberun itself.

Each case asserts the exact `cuberun: error:` / `cuberun: warning:` lines, the exit code, and that
every file that existed before is byte-identical afterwards (see tests/cli/hostile.py). `{c}` is
the cube folder, `{f}` its mlcube.yaml, `{w}` its workspace, `{r}` the case's root; a line
ending in `*` is matched as a prefix (a run id, a pid).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.hostile import (
    CUBE,
    Case,
    Ctx,
    Result,
    Runner,
    check_case,
    chmod,
    damage_record,
    damage_state,
    each,
    fifo,
    kill_sleepers,
    link,
    remove,
    scratch,
    sparse,
    unix_socket,
    write,
)

RUN = ["run", "--task=hello"]
AFTER_CUBE = len(CUBE.splitlines()) + 1  # the first line after the base cube's text
VARS_WARNING = f"cuberun: warning: {{f}}:{AFTER_CUBE}:1: vars: unknown top-level key 'vars' is ignored"
DONE = [["run", "--task=hello"]]  # a successful run first
CUBE_FILE_HINT = "Hint: give the path of the cube file itself"
SETTINGS = {"CUBERUN_SETTINGS": "{r}/settings.yaml"}
STATE_HINT = "Hint: move it away (cuberun creates the folder)"
LOCK = "{w}/.cuberun/locks/"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 9)}]\n" for i in range(1, 10))
P_BOMB = "[" + ", ".join(f"&p{i} [" + ", ".join([f"*p{i - 1}" if i else "x"] * 9) + "]" for i in range(10)) + "]"
BOMB_MSG = "YAML aliases expand the document to {n} values ({d} written; at most 100000 more are allowed)"


def bomb_msg(text: str) -> str:
    """The expected alias-bomb message for a document (the count of values it would expand to)."""
    import yaml

    loader = yaml.SafeLoader(text)
    node = loader.get_single_node()
    sizes: dict[int, int] = {}

    def size(n: object) -> int:
        if id(n) not in sizes:
            kids = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else (
                list(n.value) if isinstance(n, yaml.SequenceNode) else [])
            sizes[id(n)] = 1 + sum(size(k) for k in kids)
        return sizes[id(n)]

    total = size(node)
    return BOMB_MSG.replace("{n}", str(total)).replace("{d}", str(len(sizes)))


def cube_with(extra: str) -> dict[str, str | bytes]:
    return {"cube/mlcube.yaml": CUBE + extra}


def chain(n: int) -> str:
    lines = ["name: chain", "local: {command: python3 main.py, env: current}", "tasks:"]
    for i in range(n):
        lines.append(f"  t{i}: {{parameters: {{inputs: {{i: {{type: directory, default: d{i}/}}}}, "
                     f"outputs: {{o: {{type: directory, default: d{i + 1}/}}}}}}}}")
    return "\n".join(lines) + "\n"


def interpolation_chain(n: int) -> str:
    refs = "".join(f"  v{i}: ${{vars.v{i + 1}}}\n" for i in range(n))
    return CUBE.replace("default: names/alice.txt", "default: '${vars.v0}'") + "vars:\n" + refs + f"  v{n}: names/alice.txt\n"


def lost_listing(ctx: Ctx, result: Result) -> None:
    [line] = [ln for ln in result.stdout.splitlines() if " hello " in ln]
    assert " lost " in line, result.stdout


def report_written(ctx: Ctx, result: Result) -> None:
    assert (ctx.ws / ".cuberun" / "report.html").read_text().startswith("<!DOCTYPE html>")


def chat_is(text: str):  # type: ignore[no-untyped-def]
    def check(ctx: Ctx, result: Result) -> None:
        assert (ctx.ws / "chats" / "chat.txt").read_text() == text

    return check


def still_a_link(rel: str, target: str):  # type: ignore[no-untyped-def]
    def check(ctx: Ctx, result: Result) -> None:
        path = ctx.root / rel
        assert path.is_symlink() and os.readlink(path) == ctx.fmt(target), rel

    return check


CASES: list[Case] = [
    # -- special files where cuberun reads -------------------------------------------------------------------
    Case("mlcube-dev-zero", ["describe", "--mlcube=/dev/zero"],
         [f"cuberun: error: /dev/zero: cube file is a character device, not a regular file. {CUBE_FILE_HINT}"]),
    Case("mlcube-dev-null", ["describe", "--mlcube=/dev/null"],
         [f"cuberun: error: /dev/null: cube file is a character device, not a regular file. {CUBE_FILE_HINT}"]),
    Case("mlcube-fifo-path", ["describe", "--mlcube={r}/cube.fifo"],
         [f"cuberun: error: {{r}}/cube.fifo: cube file is a FIFO (named pipe), not a regular file. {CUBE_FILE_HINT}"], setup=fifo("cube.fifo")),
    Case("mlcube-yaml-is-fifo", ["describe"],
         [f"cuberun: error: {{f}}: cube file is a FIFO (named pipe), not a regular file. {CUBE_FILE_HINT}"], setup=fifo("cube/mlcube.yaml")),
    Case("mlcube-yaml-links-to-dev-zero", ["describe"],
         [f"cuberun: error: {{f}}: cube file is a character device, not a regular file. {CUBE_FILE_HINT}"],
         setup=link("cube/mlcube.yaml", "/dev/zero")),
    Case("mlcube-yaml-is-socket", ["describe"],
         [f"cuberun: error: {{f}}: cube file is a socket, not a regular file. {CUBE_FILE_HINT}"], setup=unix_socket("cube/mlcube.yaml")),
    Case("mlcube-yaml-is-directory", ["describe"], ["cuberun: error: {f}: cube file is a directory, not a file"],
         setup=each(remove("cube/mlcube.yaml"), write("cube/mlcube.yaml/x", "x"))),
    Case("mlcube-yaml-dangling-link", ["describe"],
         ["cuberun: error: {f}: cube file is a symbolic link to {c}/gone.yaml, which does not exist"], setup=link("cube/mlcube.yaml", "{c}/gone.yaml")),
    Case("mlcube-yaml-link-loop", ["describe"],
         ["cuberun: error: {f}: cannot read cube file: too many levels of symbolic links (a symbolic link loop?)"],
         setup=link("cube/mlcube.yaml", "{c}/mlcube.yaml")),
    Case("mlcube-yaml-sparse-huge", ["describe"], ["cuberun: error: {f}: cube file is too large (1073741824 bytes; the limit is 8388608)"],
         setup=sparse("cube/mlcube.yaml", 1 << 30)),
    Case("mlcube-dir-is-fifo", ["describe", "--mlcube={r}/fifo-dir"],
         [f"cuberun: error: {{r}}/fifo-dir: cube file is a FIFO (named pipe), not a regular file. {CUBE_FILE_HINT}"], setup=fifo("fifo-dir")),
    Case("settings-fifo", ["run", "--task=hello"],
         ["cuberun: error: {r}/settings.yaml: settings file is a FIFO (named pipe), not a regular file. Hint: give the path of the settings file itself"],
         env=SETTINGS, setup=fifo("settings.yaml")),
    Case("settings-dev-zero", ["run", "--task=hello"],
         ["cuberun: error: {r}/settings.yaml: settings file is a character device, not a regular file. "
          "Hint: give the path of the settings file itself"], env=SETTINGS, setup=link("settings.yaml", "/dev/zero")),
    Case("settings-directory", ["run", "--task=hello"], ["cuberun: error: {r}/settings.yaml: settings file is a directory, not a file"],
         env=SETTINGS, setup=write("settings.yaml/x", "x")),
    Case("settings-link-loop", ["run", "--task=hello"],
         ["cuberun: error: {r}/settings.yaml: cannot read settings file: too many levels of symbolic links (a symbolic link loop?)"],
         env=SETTINGS, setup=link("settings.yaml", "{r}/settings.yaml")),
    Case("settings-dangling-link-is-no-settings", ["run", "--task=hello"], [], code=0, env=SETTINGS,
         setup=link("settings.yaml", "{r}/nowhere.yaml"), changes=("cube/workspace/chats*", "cube/workspace/.cuberun*")),
    Case("settings-huge", ["run", "--task=hello"], ["cuberun: error: {r}/settings.yaml: settings file is too large (9000000 bytes; the limit is 8388608)"],
         env=SETTINGS, setup=sparse("settings.yaml", 9_000_000)),
    Case("settings-alias-bomb", ["run", "--task=hello"], [f"cuberun: error: {{r}}/settings.yaml: {bomb_msg(BOMB)}. "
                                                          "Hint: use fewer or smaller aliases (*name) of anchors (&name)"],
         env=SETTINGS, files={"settings.yaml": BOMB}),
    Case("sweep-parameter-file-fifo", ["run", "--task=copy", "--sweep=config:lr=1,2"],
         ["cuberun: error: task 'copy', input 'config': {w}/config.yaml is a FIFO (named pipe): a task's inputs are regular files and directories. "
          "Hint: override config=PATH"], setup=fifo("cube/workspace/config.yaml")),
    Case("sweep-parameter-file-alias-bomb", ["run", "--task=copy", "--sweep=config:lr=1,2"],
         [f"cuberun: error: {{w}}/config.yaml: {bomb_msg(BOMB + 'lr: 1')}. Hint: use fewer or smaller aliases (*name) of anchors (&name)"],
         files={"cube/workspace/config.yaml": BOMB + "lr: 1\n"}),
    Case("sweep-parameter-file-huge", ["run", "--task=copy", "--sweep=config:lr=1,2"],
         ["cuberun: error: {w}/config.yaml: parameter file is too large (9000000 bytes; the limit is 8388608)"],
         setup=sparse("cube/workspace/config.yaml", 9_000_000)),
    Case("requirements-fifo", ["run", "--task=hello"],
         ["cuberun: error: {c}/req.txt: requirements file is a FIFO (named pipe), not a regular file"],
         files={"cube/mlcube.yaml": CUBE.replace("env: current}", "env: current, requirements: req.txt}")}, setup=fifo("cube/req.txt")),
    Case("dockerfile-fifo", ["run", "--task=hello"], ["cuberun: error: cannot read {c}/Dockerfile: the Dockerfile is a FIFO (named pipe), not a regular file. "
                                                      "Hint: fix the docker.build_file setting"],
         files={"cube/mlcube.yaml": CUBE.replace("local: {command: python3 main.py, env: current}\n", "")}, setup=fifo("cube/Dockerfile")),
    Case("dockerfile-unbalanced-quote", ["run", "--task=hello"],
         ["cuberun: error: task 'hello' has no entrypoint and ENTRYPOINT at Dockerfile:2 runs \"main.py (in WORKDIR /), which no COPY line of "
          "Dockerfile provides. Hint: give task 'hello' an entrypoint, or add a 'local: {command: ...}' section (or -Plocal.command=...)"],
         files={"cube/mlcube.yaml": CUBE.replace("local: {command: python3 main.py, env: current}\n", ""),
                "cube/Dockerfile": "FROM python:3.11\nENTRYPOINT python3 \"main.py\n"}),
    Case("input-file-is-fifo", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', input 'name': {w}/names/alice.txt is a FIFO (named pipe): a task's inputs are regular files and directories. "
          "Hint: override name=PATH"], setup=fifo("cube/workspace/names/alice.txt")),
    Case("input-file-links-to-dev-zero", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', input 'name': {w}/names/alice.txt is a character device: a task's inputs are regular files and directories. "
          "Hint: override name=PATH"], setup=link("cube/workspace/names/alice.txt", "/dev/zero")),
    Case("input-file-is-socket", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', input 'name': {w}/names/alice.txt is a socket: a task's inputs are regular files and directories. "
          "Hint: override name=PATH"], setup=unix_socket("cube/workspace/names/alice.txt")),
    Case("input-override-dev-null", ["run", "--task=hello", "name=/dev/null"],
         ["cuberun: error: task 'hello', input 'name': /dev/null is a character device: a task's inputs are regular files and directories. "
          "Hint: override name=PATH"]),
    Case("input-link-loop", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', input 'name': {w}/names/alice.txt cannot be used: too many levels of symbolic links (a symbolic link loop?). "
          "Hint: override name=PATH"], setup=link("cube/workspace/names/alice.txt", "{w}/names/alice.txt")),
    Case("parse-cache-entry-fifo-is-ignored", ["describe", "--json"], [], code=0, env={"CUBERUN_CACHE_DIR": "{r}/cache"},
         setup=lambda ctx: fifo(f"cache/parsed/{_cache_name(ctx)}.json")(ctx)),
    Case("parse-cache-entry-garbage-is-ignored", ["describe", "--json"], [], code=0, env={"CUBERUN_CACHE_DIR": "{r}/cache"}, changes=("cache/parsed/*",),
         setup=lambda ctx: write(f"cache/parsed/{_cache_name(ctx)}.json", b"\xff{not json")(ctx)),
    # -- special files where cuberun writes ------------------------------------------------------------------
    Case("report-to-dev-null", ["report", "-o", "/dev/null"], prior=DONE,
         expect=["cuberun: error: /dev/null: cannot write report: it is a character device. Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("report-to-fifo", ["report", "-o", "{r}/out.fifo"], prior=DONE, setup=fifo("out.fifo"),
         expect=["cuberun: error: {r}/out.fifo: cannot write report: it is a FIFO (named pipe). Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("report-to-directory", ["report", "-o", "{r}/outdir"], prior=DONE, setup=write("outdir/keep.txt", "mine"),
         expect=["cuberun: error: {r}/outdir: cannot write report: it is a directory. Hint: give the path of an HTML file, e.g. -o {r}/outdir/report.html"]),
    Case("report-to-socket", ["report", "-o", "{r}/out.sock"], prior=DONE, setup=unix_socket("out.sock"),
         expect=["cuberun: error: {r}/out.sock: cannot write report: it is a socket. Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("report-through-link-to-dev-null", ["report", "-o", "{r}/r.html"], prior=DONE, setup=link("r.html", "/dev/null"),
         expect=["cuberun: error: {r}/r.html: cannot write report: it is a symbolic link to a character device (/dev/null). "
                 "Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("report-through-link-to-file", ["report", "-o", "{r}/r.html"], [], code=0, prior=DONE,
         setup=each(write("real/old.html", "old"), link("r.html", "{r}/real/old.html")), changes=("real/old.html", "real/.*.tmp"),
         check=still_a_link("r.html", "{r}/real/old.html")),
    Case("report-through-dangling-link", ["report", "-o", "{r}/r.html"], [], code=0, prior=DONE,
         setup=each(write("real/keep", "x"), link("r.html", "{r}/real/new.html")), changes=("real/new.html",),
         check=still_a_link("r.html", "{r}/real/new.html")),
    Case("report-link-loop", ["report", "-o", "{r}/r.html"], prior=DONE, setup=link("r.html", "{r}/r.html"),
         expect=["cuberun: error: {r}/r.html: cannot write report: too many levels of symbolic links (a symbolic link loop?). "
                 "Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("report-parent-is-a-file", ["report", "-o", "{r}/afile/r.html"], prior=DONE, setup=write("afile", "x"),
         expect=["cuberun: error: {r}/afile: cannot write report {r}/afile/r.html: this is a regular file, not a folder. Hint: move it away"]),
    Case("report-default-state-folder-is-file", ["report"], prior=DONE,
         setup=each(remove("cube/workspace/.cuberun"), write("cube/workspace/.cuberun", "x")),
         expect=["cuberun: error: {w}/.cuberun: cannot write report {w}/.cuberun/report.html: this is a regular file, not a folder. Hint: move it away"]),
    Case("inspect-output-fifo", ["inspect", "--output-file={r}/i.fifo"], setup=fifo("i.fifo"),
         expect=["cuberun: error: {r}/i.fifo: cannot write output file: it is a FIFO (named pipe). "
                 "Hint: give the path of a new or regular file, e.g. --output-file inspect.json"]),
    Case("inspect-output-dev-full", ["inspect", "--output-file=/dev/full"],
         ["cuberun: error: /dev/full: cannot write output file: it is a character device. "
          "Hint: give the path of a new or regular file, e.g. --output-file inspect.json"]),
    Case("inspect-output-directory", ["inspect", "--output-file={r}"],
         ["cuberun: error: {r}: cannot write output file: it is a directory. Hint: give the path of a new or regular file, e.g. --output-file inspect.json"]),
    Case("inspect-output-through-link", ["inspect", "--output-file={r}/i.json"], [], code=0,
         setup=each(write("real/i.json", "old"), link("i.json", "{r}/real/i.json")), changes=("real/i.json",), check=still_a_link("i.json", "{r}/real/i.json")),
    Case("export-to-fifo", ["export-provenance", "{run}", "-o", "{r}/crate"], prior=DONE, setup=fifo("crate"),
         expect=["cuberun: error: {r}/crate exists and is not an empty directory. Hint: export into a new directory"]),
    Case("export-into-someone-elses-folder", ["export-provenance", "{run}", "-o", "{r}/crate"], prior=DONE, setup=write("crate/notes.txt", "mine"),
         expect=["cuberun: error: {r}/crate exists and is not an empty directory. Hint: export into a new directory"]),
    Case("export-metadata-fifo-is-not-ours", ["export-provenance", "{run}", "-o", "{r}/crate"], prior=DONE, setup=fifo("crate/ro-crate-metadata.json"),
         expect=["cuberun: error: {r}/crate exists and is not an empty directory. Hint: export into a new directory"]),
    Case("export-again-keeps-the-users-files", ["export-provenance", "{run}", "-o", "{r}/crate"], [], code=0,
         prior=[*DONE, ["export-provenance", "{run}", "-o", "{r}/crate"]], setup=write("crate/notes.txt", "mine"),
         changes=("crate/*", "crate")),
    Case("create-over-a-file", ["create", "x", "--dir={r}"], ["cuberun: error: {r}/x already exists and is a regular file. Hint: choose another name or --dir"],
         setup=write("x", "mine")),
    Case("create-over-a-link", ["create", "x", "--dir={r}"], ["cuberun: error: {r}/x already exists and is a symbolic link. Hint: choose another name or --dir"],
         setup=link("x", "/tmp")),
    Case("create-over-a-fifo", ["create", "x", "--dir={r}"], ["cuberun: error: {r}/x already exists and is a FIFO (named pipe). Hint: choose another name or --dir"],
         setup=fifo("x")),
    Case("create-in-a-file", ["create", "x", "--dir={r}/afile"],
         ["cuberun: error: cannot create the cube in {r}/afile/x: Not a directory ({r}/afile/x). Hint: choose another --dir"],
         setup=write("afile", "mine")),
    Case("config-set-settings-fifo", ["config", "set", "default_platform", "local"], env=SETTINGS, setup=fifo("settings.yaml"),
         expect=["cuberun: error: {r}/settings.yaml: settings file is a FIFO (named pipe), not a regular file. Hint: give the path of the settings file itself"]),
    Case("config-set-settings-link-to-dev-null", ["config", "set", "default_platform", "local"], env=SETTINGS, setup=link("settings.yaml", "/dev/null"),
         expect=["cuberun: error: {r}/settings.yaml: settings file is a character device, not a regular file. Hint: give the path of the settings file itself"]),
    Case("config-set-writes-through-a-link", ["config", "set", "platforms.mine.env", "current"], [], code=0, env=SETTINGS,
         setup=each(write("real/s.yaml", "# mine\nplatforms:\n  mine: {runner: local}  # for me\n"), link("settings.yaml", "{r}/real/s.yaml")),
         changes=("real/s.yaml",), check=lambda ctx, r: (still_a_link("settings.yaml", "{r}/real/s.yaml")(ctx, r),
                                                         _equal(ctx.root / "real/s.yaml", "# mine\nplatforms:\n  mine: {runner: local, env: current} # for me\n"))),
    Case("config-set-keeps-comments-and-layout", ["config", "set", "default_platform", "gpu"], [], code=0, env=SETTINGS,
         files={"settings.yaml": "# my platforms\nplatforms:\n  gpu:   # the big box\n    runner: docker\n    docker: nvidia-docker\n\n"
                                 "# keep this\ndefault_platform: local  # for now\n"},
         changes=("settings.yaml",), check=lambda ctx, r: _equal(
             ctx.root / "settings.yaml", "# my platforms\nplatforms:\n  gpu:   # the big box\n    runner: docker\n    docker: nvidia-docker\n\n"
                                         "# keep this\ndefault_platform: gpu    # for now\n")),
    Case("config-set-value-alias-bomb", ["config", "set", "platforms.local.packages", "[&a [x,x,x,x,x,x,x,x,x,x], " + ", ".join(["*a"] * 9) + "]"],
         [], code=0, env=SETTINGS, changes=("settings.yaml",)),
    Case("sweep-file-target-is-fifo", ["run", "--task=copy", "--sweep=config:lr=1,2"], setup=fifo("cube/workspace/sweeps/lr=1/config.yaml"),
         expect=["cuberun: error: task 'copy', input 'config': {w}/sweeps/lr=1/config.yaml is a FIFO (named pipe): a task's inputs are regular files "
                 "and directories. Hint: override config=PATH"]),
    Case("state-folder-is-a-file", RUN, [f"cuberun: error: {{w}}/.cuberun is a regular file, but cuberun keeps its run records and locks in a folder there. {STATE_HINT}"],
         setup=write("cube/workspace/.cuberun", "mine")),
    Case("state-folder-is-a-fifo", RUN, [f"cuberun: error: {{w}}/.cuberun is a FIFO (named pipe), but cuberun keeps its run records and locks in a folder there. {STATE_HINT}"],
         setup=fifo("cube/workspace/.cuberun")),
    Case("state-folder-dangling-link", RUN, [f"cuberun: error: {{w}}/.cuberun is a symbolic link, but cuberun keeps its run records and locks in a folder there. {STATE_HINT}"],
         setup=link("cube/workspace/.cuberun", "{r}/nowhere")),
    Case("state-folder-links-elsewhere", RUN, [], code=0, setup=each(write("elsewhere/keep", "x"), link("cube/workspace/.cuberun", "{r}/elsewhere")),
         changes=("elsewhere/*", "cube/workspace/chats*")),
    Case("runs-folder-is-a-file", RUN, [f"cuberun: error: {{w}}/.cuberun/runs is a regular file, but cuberun keeps its runs in a folder there. {STATE_HINT}"],
         setup=write("cube/workspace/.cuberun/runs", "x")),
    Case("state-subfolder-is-a-file", RUN, [f"cuberun: error: {{w}}/.cuberun/state is a regular file, but cuberun keeps its state in a folder there. {STATE_HINT}"],
         setup=write("cube/workspace/.cuberun/state", "x")),
    Case("locks-folder-is-a-fifo", RUN, [f"cuberun: error: {{w}}/.cuberun/locks is a FIFO (named pipe), but cuberun keeps its locks in a folder there. {STATE_HINT}"],
         setup=fifo("cube/workspace/.cuberun/locks")),
    Case("lock-file-is-a-fifo", RUN, ["cuberun: error: {lock}: the lock file is a FIFO (named pipe). Hint: remove it; cuberun creates its lock files itself"],
         setup=lambda ctx: _lock(ctx, "fifo")),
    Case("lock-file-links-to-dev-null", RUN, ["cuberun: error: {lock}: the lock file is a symbolic link. Hint: remove it; cuberun creates its lock files itself"],
         setup=lambda ctx: _lock(ctx, "link")),
    Case("lock-file-garbage-is-replaced", RUN, [], code=0, setup=lambda ctx: _lock(ctx, "garbage"),
         changes=("cube/workspace/chats*", "cube/workspace/.cuberun*")),
    # -- outputs that alias what they must not ---------------------------------------------------------------
    Case("output-is-the-input", ["run", "--task=hello", "chat=names/alice.txt"],
         ["cuberun: error: task 'hello', output 'chat': {w}/names/alice.txt is the same path as its input 'name': the task would overwrite its own input. "
          "Hint: give it another path (chat=PATH)"]),
    Case("output-is-the-input-absolute", ["run", "--task=hello", "chat={w}/names/alice.txt"],
         ["cuberun: error: task 'hello', output 'chat': {w}/names/alice.txt is the same path as its input 'name': the task would overwrite its own input. "
          "Hint: give it another path (chat=PATH)"]),
    Case("output-links-to-the-input", ["run", "--task=hello", "chat=alias.txt"], setup=link("cube/workspace/alias.txt", "{w}/names/alice.txt"),
         expect=["cuberun: error: task 'hello', output 'chat': {w}/alias.txt is the same path as its input 'name': the task would overwrite its own input. "
                 "Hint: give it another path (chat=PATH)"]),
    Case("output-contains-the-input", ["run", "--task=copy", "out=data/.."],
         ["cuberun: error: task 'copy', output 'out': {w} is the workspace itself: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-dir-contains-the-input", ["run", "--task=hello", "chat=names"],
         ["cuberun: error: task 'hello', output 'chat': {w}/names contains its input 'name' ({w}/names/alice.txt): the task could overwrite or delete it. "
          "Hint: give it another path (chat=PATH)"]),
    Case("output-inside-the-input", ["run", "--task=copy", "out=data/sub/"],
         ["cuberun: error: task 'copy', output 'out': {w}/data/sub is inside its input 'data' ({w}/data): the task would change its own input. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-dir-links-into-the-input", ["run", "--task=copy", "out=inlink/"], setup=link("cube/workspace/inlink", "{w}/data"),
         expect=["cuberun: error: task 'copy', output 'out': {w}/inlink is the same path as its input 'data': the task would overwrite its own input. "
                 "Hint: give it another path (out=PATH)"]),
    Case("input-moved-onto-the-output", ["run", "--task=copy", "data=out/"], setup=write("cube/workspace/out/x", "x"),
         expect=["cuberun: error: task 'copy', output 'out': {w}/out is the same path as its input 'data': the task would overwrite its own input. "
                 "Hint: give it another path (out=PATH)"]),
    Case("output-is-the-workspace", ["run", "--task=copy", "out=./"],
         ["cuberun: error: task 'copy', output 'out': {w} is the workspace itself: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-is-the-workspace-absolute", ["run", "--task=copy", "out={w}"],
         ["cuberun: error: task 'copy', output 'out': {w} is the workspace itself: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-contains-the-workspace", ["run", "--task=copy", "out={r}"],
         ["cuberun: error: task 'copy', output 'out': {r} contains the workspace {w}: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-is-the-root", ["run", "--task=copy", "out=/"],
         ["cuberun: error: task 'copy', output 'out': / contains the workspace {w}: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-is-the-state-folder", ["run", "--task=copy", "out=.cuberun/"],
         ["cuberun: error: task 'copy', output 'out': {w}/.cuberun is inside cuberun's state folder {w}/.cuberun (run records, locks, up-to-date state). "
          "Hint: give it another path (out=PATH)"]),
    Case("output-inside-the-records", ["run", "--task=hello", "chat=.cuberun/runs/x.txt"],
         ["cuberun: error: task 'hello', output 'chat': {w}/.cuberun/runs/x.txt is inside cuberun's state folder {w}/.cuberun "
          "(run records, locks, up-to-date state). Hint: give it another path (chat=PATH)"]),
    Case("output-holds-another-workspace", ["run", "--task=copy", "out={r}/other/"], setup=write("other/.cuberun/runs/keep", "x"),
         expect=["cuberun: error: task 'copy', output 'out': {r}/other holds the run records of another workspace ({r}/other/.cuberun). "
                 "Hint: give it another path (out=PATH)"]),
    Case("output-is-the-cube-file", ["run", "--task=hello", "chat={f}"],
         ["cuberun: error: task 'hello', output 'chat': {f} is the cube file {f}. Hint: give it another path (chat=PATH), "
          "or choose another --workspace than the cube's folder"]),
    Case("output-is-the-cube-program", ["run", "--task=hello", "chat={c}/main.py"],
         ["cuberun: error: task 'hello', output 'chat': {c}/main.py is one of the cube's own files (outside its workspace). "
          "Hint: give it another path (chat=PATH), or choose another --workspace than the cube's folder"]),
    Case("output-contains-the-cube", ["run", "--task=copy", "out={c}", "--workspace={r}/ws"],
         ["cuberun: error: task 'copy', output 'out': {c} contains the cube file {f}. Hint: give it another path (out=PATH), "
          "or choose another --workspace than the cube's folder"]),
    Case("workspace-dot-output-on-program", ["run", "--task=hello", "--workspace=.", "chat=main.py"],
         ["cuberun: error: task 'hello', output 'chat': {c}/main.py is one of the cube's own files (outside its workspace). "
          "Hint: give it another path (chat=PATH), or choose another --workspace than the cube's folder"]),
    Case("workspace-dot-output-on-cube-file", ["run", "--task=hello", "--workspace=.", "chat=mlcube.yaml"],
         ["cuberun: error: task 'hello', output 'chat': {f} is the cube file {f}. Hint: give it another path (chat=PATH), "
          "or choose another --workspace than the cube's folder"]),
    Case("workspace-dot-output-on-root", ["run", "--task=copy", "--workspace=.", "out=./"],
         ["cuberun: error: task 'copy', output 'out': {c} is the workspace itself: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("output-is-a-fifo", ["run", "--task=hello"], setup=fifo("cube/workspace/chats/chat.txt"),
         expect=["cuberun: error: task 'hello', output 'chat': {w}/chats/chat.txt is a FIFO (named pipe): a task's outputs are regular files and directories. "
                 "Hint: override chat=PATH"]),
    Case("output-is-dev-null", ["run", "--task=hello", "chat=/dev/null"],
         ["cuberun: error: task 'hello', output 'chat': /dev/null is a character device: a task's outputs are regular files and directories. "
          "Hint: override chat=PATH"]),
    Case("output-links-to-dev-full", ["run", "--task=hello"], setup=link("cube/workspace/chats/chat.txt", "/dev/full"),
         expect=["cuberun: error: task 'hello', output 'chat': {w}/chats/chat.txt is a character device: a task's outputs are regular files and directories. "
                 "Hint: override chat=PATH"]),
    Case("sweep-variants-checked-first", ["run", "--task=copy", "--sweep=config:lr=1,2", "out={w}"],
         ["cuberun: error: task 'copy', output 'out': {w} is the workspace itself: the task could delete every file in it and cuberun's records. "
          "Hint: give it another path (out=PATH)"]),
    Case("checkpoint-declared-by-the-cube", ["run", "--task=train"], [], code=0, changes=("cube/workspace/model/steps", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: _equal(ctx.ws / "model" / "steps", "2")),
    Case("checkpoint-inside-the-output-declared-by-the-cube", ["run", "--task=resume", "--force"], [], code=0, prior=[["run", "--task=resume"]],
         changes=("cube/workspace/ckpt/last.txt", "cube/workspace/.cuberun*"), check=lambda ctx, r: _equal(ctx.ws / "ckpt" / "last.txt", "2")),
    Case("input-moved-inside-the-output-is-refused", ["run", "--task=copy", "config=out/config.yaml"], setup=write("cube/workspace/out/config.yaml", "lr: 1\n"),
         expect=["cuberun: error: task 'copy', output 'out': {w}/out contains its input 'config' ({w}/out/config.yaml): the task could overwrite or "
                 "delete it. Hint: give it another path (out=PATH)"]),
    Case("checkpoint-made-by-an-override-is-refused", ["run", "--task=copy", "data=out/", "out=out/"], setup=write("cube/workspace/out/x", "x"),
         expect=["cuberun: error: task 'copy', output 'out': {w}/out is the same path as its input 'data': the task would overwrite its own input. "
                 "Hint: give it another path (out=PATH)"]),
    Case("two-tasks-one-output-are-ordered", ["run", "--task=hello,bye", "--jobs=2"], [], code=0,
         changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"), check=chat_is("Hi, Alice\nBye, Alice\n")),
    Case("two-tasks-one-output-no-deps", ["run", "--task=bye,hello", "--jobs=2", "--no-deps"], [], code=0,
         changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"), check=chat_is("Bye, Alice\nHi, Alice\n")),
    Case("nothing-written-before-the-check", ["run", "--task=hello", "--workspace={r}/ws2", "chat={c}/main.py"],
         ["cuberun: error: task 'hello', output 'chat': {c}/main.py is one of the cube's own files (outside its workspace). "
          "Hint: give it another path (chat=PATH), or choose another --workspace than the cube's folder"]),
    # -- damaged records and state ---------------------------------------------------------------------------
    Case("record-is-a-list", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: expected a JSON object, found list"], code=0,
         prior=DONE, setup=damage_record("[1, 2]"), stdout="no runs in {w}\n"),
    Case("record-is-a-string", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: expected a JSON object, found str"], code=0,
         prior=DONE, setup=damage_record('"run"')),
    Case("record-is-not-json", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: not valid JSON (Expecting property name enclosed in double quotes)"], code=0,
         prior=DONE, setup=damage_record("{{{")),
    Case("record-is-empty", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: not valid JSON (Expecting value)"], code=0,
         prior=DONE, setup=damage_record("")),
    Case("record-is-binary", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: not valid JSON ('utf-8' codec can't decode byte 0xff in position 0)"],
         code=0, prior=DONE, setup=damage_record(b"\xff\xfe\x00garbage")),
    Case("record-without-run-id", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: it has no run_id"], code=0,
         prior=DONE, setup=damage_record('{"task": "hello"}')),
    Case("record-run-id-number", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: it has no run_id"], code=0,
         prior=DONE, setup=damage_record('{"run_id": 5}')),
    Case("record-parameters-string", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: 'parameters' is str, not an object"], code=0,
         prior=DONE, setup=damage_record('{"run_id": "x", "parameters": "p"}')),
    Case("record-start-number", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: 'start' is int, not a string"], code=0,
         prior=DONE, setup=damage_record('{"run_id": "x", "start": 5}')),
    Case("record-is-fifo", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: run record is a FIFO (named pipe), not a regular file"],
         code=0, prior=DONE, setup=damage_record(fifo=True)),
    Case("record-links-to-dev-zero", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: run record is a character device, not a regular file"],
         code=0, prior=DONE, setup=damage_record(link_to="/dev/zero")),
    Case("record-is-a-directory", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: run record is a directory, not a regular file"],
         code=0, prior=DONE, setup=damage_record(dir=True)),
    Case("record-huge", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: run record is too large (17000000 bytes; the limit is 16777216)"],
         code=0, prior=DONE, setup=lambda ctx: (damage_record("")(ctx), sparse(str(Path(ctx.vars["rec"]).relative_to(ctx.root)), 17_000_000)(ctx))),
    Case("stray-file-in-runs", ["runs", "--json"], [], code=0, prior=DONE, setup=write("cube/workspace/.cuberun/runs/notes.txt", "mine"),
         check=lambda ctx, r: _equal_len(json.loads(r.stdout), 1)),
    Case("damaged-record-then-show", ["show", "{run}"], ["cuberun: warning: ignoring the damaged run record {rec}: expected a JSON object, found list",
                                                         "cuberun: error: no run '{run}' in {w}. Hint: no runs recorded yet"],
         prior=DONE, setup=damage_record("[]")),
    Case("damaged-record-beside-a-good-one-show", ["show", "{run_hello}", "--json"], ["cuberun: warning: ignoring the damaged run record {rec}: it has no run_id"],
         code=0, prior=[*DONE, ["run", "--task=bye"]], setup=lambda ctx: _damage_one(ctx, "bye", "{}")),
    Case("damaged-record-then-report", ["report"], ["cuberun: warning: ignoring the damaged run record {rec}: expected a JSON object, found int"], code=0,
         prior=DONE, setup=damage_record("3"), changes=("cube/workspace/.cuberun/report.html",), check=report_written),
    Case("damaged-record-then-export", ["export-provenance", "{run_hello}", "--invocation", "-o", "{r}/crate"],
         ["cuberun: warning: ignoring the damaged run record {rec}: expected a JSON object, found list"], code=0,
         prior=[["run", "--task=hello,bye"]], setup=lambda ctx: _damage_one(ctx, "bye", "[]"), changes=("crate", "crate/*")),
    Case("record-wrong-types-inside", ["show", "{run}"], [], code=0, prior=DONE,
         setup=lambda ctx: _edit_record(ctx, command=[1, None, "x"], inputs={"name": "not-a-dict"})),
    Case("record-of-a-dead-cuberun-is-lost", ["runs"], [], code=0, prior=DONE, setup=lambda ctx: _edit_record(ctx, status="running", pid=_dead_pid()),
         check=lost_listing),
    Case("record-of-a-reused-pid-is-lost", ["runs", "--status=lost", "--json"], [], code=0, prior=DONE,
         setup=lambda ctx: _edit_record(ctx, status="running", pid=os.getpid(), pid_start=1), check=lambda ctx, r: _equal_len(json.loads(r.stdout), 1)),
    Case("state-is-a-list", RUN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: expected a JSON object, found list; the task runs again"],
         code=0, prior=DONE, setup=damage_state("[]"), changes=("cube/workspace/chats/chat.txt", "cube/workspace/.cuberun*"), check=chat_is("Hi, Alice\nHi, Alice\n")),
    Case("state-identity-list", RUN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: 'identity' is list, not an object; the task runs again"],
         code=0, prior=DONE, setup=damage_state('{"version": 1, "identity": []}'), changes=("cube/workspace/chats/chat.txt", "cube/workspace/.cuberun*")),
    Case("state-inputs-wrong", RUN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: 'inputs.name' is not an object with 'members'; the task runs again"],
         code=0, prior=DONE, setup=damage_state('{"version": 1, "identity": {}, "inputs": {"name": 5}}'),
         changes=("cube/workspace/chats/chat.txt", "cube/workspace/.cuberun*")),
    Case("state-not-json", RUN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: not valid JSON; the task runs again"],
         code=0, prior=DONE, setup=damage_state("{"), changes=("cube/workspace/chats/chat.txt", "cube/workspace/.cuberun*")),
    Case("state-is-fifo", RUN, ["cuberun: error: {state}: cannot write up-to-date state: it is a FIFO (named pipe). "
                                "Hint: remove it; cuberun rewrites it after each successful run"],
         prior=DONE, setup=damage_state(fifo=True), changes=("cube/workspace/.cuberun/locks/*",)),
    Case("state-is-a-directory", RUN, ["cuberun: error: {state}: cannot write up-to-date state: it is a directory. "
                                       "Hint: remove it; cuberun rewrites it after each successful run"],
         prior=DONE, setup=lambda ctx: (damage_state("")(ctx), os.unlink(ctx.vars["state"]), os.mkdir(ctx.vars["state"])),
         changes=("cube/workspace/.cuberun/locks/*",)),
    Case("state-huge", RUN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: state file is too large (300000000 bytes; the limit is 268435456); "
                             "the task runs again"],
         code=0, prior=DONE, setup=damage_state(size=300_000_000), changes=("cube/workspace/chats/chat.txt", "cube/workspace/.cuberun*")),
    Case("state-members-escape", ["run", "--task=copy"], [], code=0, prior=[["run", "--task=copy"]],
         setup=lambda ctx: _edit_state(ctx, "copy", members={"../../../../etc/passwd": "0" * 64, "/dev/zero": "0" * 64}),
         changes=("cube/workspace/out*", "cube/workspace/.cuberun*")),
    # -- permissions, as nobody ------------------------------------------------------------------------------
    Case("nobody-cube-folder-unreadable", ["describe", "--mlcube={c}"], user="nobody", cwd="{r}", setup=chmod("cube", 0o700),
         expect=["cuberun: error: cannot read the cube folder {c}: permission denied. Hint: check its permissions (ls -ld), or run as a user who can read it"]),
    Case("nobody-cube-folder-no-access", ["describe", "--mlcube={c}"], user="nobody", cwd="{r}", setup=chmod("cube", 0o000),
         expect=["cuberun: error: cannot read the cube folder {c}: permission denied. Hint: check its permissions (ls -ld), or run as a user who can read it"]),
    Case("nobody-cube-folder-execute-only-works", ["describe", "--json", "--mlcube={c}"], [], code=0, user="nobody", cwd="{r}", setup=chmod("cube", 0o711)),
    Case("nobody-cube-file-unreadable", ["describe"], user="nobody", setup=chmod("cube/mlcube.yaml", 0o600),
         expect=["cuberun: error: {f}: cannot read cube file: permission denied. Hint: check its permissions (ls -l), or run as a user who can read it"]),
    Case("nobody-workspace-unwritable", RUN, user="nobody",
         expect=["cuberun: error: {w}/.cuberun: cannot create cuberun's state folder: permission denied. Hint: pass --workspace=DIR with a directory you can write to"]),
    Case("nobody-workspace-parent-unwritable", ["run", "--task=hello", "--workspace={r}/locked/ws"], user="nobody", setup=write("locked/keep", "x"),
         expect=["cuberun: error: {r}/locked/ws: cannot create the workspace: permission denied. Hint: pass --workspace=DIR with a directory you can write to"]),
    Case("nobody-state-folder-unwritable", RUN, user="nobody", setup=lambda ctx: _chown_tree(ctx.ws, skip=".cuberun", then=lambda: (ctx.ws / ".cuberun").mkdir()),
         expect=["cuberun: error: cannot write in {w}/.cuberun: permission denied. Hint: pass --workspace=DIR with a directory you can write to"]),
    Case("nobody-locks-unwritable", RUN, user="nobody",
         setup=lambda ctx: ((ctx.ws / ".cuberun" / "locks").mkdir(parents=True), _chown_tree(ctx.ws, skip="locks"),
                            ctx.vars.update(lock=str(ctx.lock_name(ctx.ws / "chats" / "chat.txt")))),
         expect=["cuberun: error: {lock}: the lock file cannot be opened: permission denied. Hint: make its folder writable for you, or use another --workspace"]),
    Case("nobody-settings-unreadable", RUN, user="nobody", env=SETTINGS, files={"settings.yaml": "platforms: {}\n"}, setup=chmod("settings.yaml", 0o600),
         expect=["cuberun: error: {r}/settings.yaml: cannot read settings file: permission denied. Hint: check its permissions (ls -l), or run as a user who can read it"]),
    Case("nobody-input-unreadable", RUN, user="nobody", setup=lambda ctx: _chown_tree(ctx.ws, then=lambda: os.chmod(ctx.ws / "names", 0o700)) or _root_owns(ctx.ws / "names"),
         expect=["cuberun: error: task 'hello', input 'name': {w}/names/alice.txt cannot be used: permission denied. Hint: override name=PATH"]),
    Case("nobody-bundled-input-unreadable", ["run", "--task=hello", "--workspace={r}/mine"], user="nobody",
         setup=lambda ctx: (_mkdir_for_nobody(ctx.root / "mine"), os.chmod(ctx.ws / "names", 0o700)),
         expect=["cuberun: error: cannot copy the cube's bundled input {w}/names/alice.txt into the workspace: permission denied. Hint: make it readable, or override name=PATH"]),
    Case("nobody-report-unwritable", ["report", "-o", "{r}/locked/r.html"], user="nobody", prior=DONE, setup=write("locked/keep", "x"),
         expect=["cuberun: error: {r}/locked/r.html: cannot write report: permission denied. Hint: give the path of an HTML file, e.g. -o report.html"]),
    Case("nobody-config-set-read-only-file", ["config", "set", "default_platform", "local"], user="nobody", env=SETTINGS, files={"settings.yaml": "platforms: {}\n"},
         setup=chmod("settings.yaml", 0o444),
         expect=["cuberun: error: {r}/settings.yaml: cannot write settings file: permission denied. Hint: point $CUBERUN_SETTINGS at a regular file"]),
    Case("nobody-config-set-file-writable-folder-not", ["config", "set", "default_platform", "local"], [], code=0, user="nobody", env=SETTINGS,
         files={"settings.yaml": "# mine\nplatforms: {}\n"}, setup=lambda ctx: os.chown(ctx.root / "settings.yaml", 65534, 65534),
         changes=("settings.yaml",), check=lambda ctx, r: _equal(ctx.root / "settings.yaml", "# mine\nplatforms: {}\ndefault_platform: local\n")),
    Case("nobody-create-unwritable", ["create", "x", "--dir={r}"], user="nobody",
         expect=["cuberun: error: cannot create the cube in {r}/x: Permission denied ({r}/x). Hint: choose another --dir"]),
    Case("nobody-export-unwritable", ["export-provenance", "{run}", "-o", "{r}/locked/crate"], user="nobody", prior=DONE, setup=write("locked/keep", "x"),
         expect=["cuberun: error: {r}/locked/crate: cannot create crate directory: permission denied. Hint: export into a new directory"]),
    Case("nobody-runs-unreadable-records", ["runs"], ["cuberun: warning: ignoring the damaged run record {rec}: cannot read run record: permission denied"],
         code=0, user="nobody", prior=DONE, setup=lambda ctx: (damage_record('{"run_id": "x"}')(ctx), os.chmod(ctx.vars["rec"], 0o600))),
    # -- huge and deep documents -----------------------------------------------------------------------------
    Case("alias-bomb-cube", ["describe"], [f"cuberun: error: {{f}}: {bomb_msg(BOMB + CUBE)}. Hint: use fewer or smaller aliases (*name) of anchors (&name)"],
         files={"cube/mlcube.yaml": BOMB + CUBE}),
    Case("alias-bomb-mappings", ["describe"],
         [f"cuberun: error: {{f}}: {bomb_msg((_MAP_BOMB := 'm0: &m0 {a: 1, b: 2}' + chr(10) + ''.join(f'm{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}}}' + chr(10) for i in range(1, 12))) + CUBE)}. "
          "Hint: use fewer or smaller aliases (*name) of anchors (&name)"], files={"cube/mlcube.yaml": _MAP_BOMB + CUBE}),
    Case("alias-bomb-merge-keys", ["describe"],
         [f"cuberun: error: {{f}}: {bomb_msg((_MERGE_BOMB := 'k0: &k0 {a: 1}' + chr(10) + ''.join(f'k{i}: &k{i} {{<<: [*k{i - 1}, *k{i - 1}, *k{i - 1}], x{i}: [*k{i - 1}, *k{i - 1}]}}' + chr(10) for i in range(1, 14))) + CUBE)}. "
          "Hint: use fewer or smaller aliases (*name) of anchors (&name)"], files={"cube/mlcube.yaml": _MERGE_BOMB + CUBE}),
    Case("alias-recursive", ["describe"], ["cuberun: error: {f}:1:4: a YAML alias refers to the node that contains it (a recursive structure). "
                                           "Hint: remove the alias, or point it at another anchor"], files={"cube/mlcube.yaml": "a: &a [1, *a]\n" + CUBE}),
    Case("alias-modest-use-is-fine", ["describe", "--json"], [], code=0,
         files={"cube/mlcube.yaml": CUBE + "docker: &d {image: x/y:1}\nsingularity: {image: y.sif}\n"}),
    Case("p-value-small-aliases-fine", ["describe", "-Plocal.packages=[&a x, *a, *a]"], [], code=0),
    Case("p-value-alias-bomb", ["describe", "-Pcuberun.x=" + P_BOMB], [f"cuberun: error: -P: {bomb_msg(P_BOMB)}. Hint: use fewer or smaller aliases (*name) of anchors (&name)"]),
    Case("config-set-alias-bomb", ["config", "set", "platforms.local.packages", P_BOMB], env=SETTINGS,
         expect=[f"cuberun: error: value: {bomb_msg(P_BOMB)}. Hint: use fewer or smaller aliases (*name) of anchors (&name)"]),
    Case("deep-flow-nesting", ["describe"], ["cuberun: error: {f}:1:1003: invalid YAML: exceeded maximum nesting depth. Hint: check the brackets, quotes and indentation"],
         files={"cube/mlcube.yaml": "a: " + "[" * 20000 + "]" * 20000 + "\n" + CUBE}),
    Case("deep-block-nesting", ["describe"], ["cuberun: error: {f}:66:131: a.k.k...: nesting is deeper than 64 levels"],
         files={"cube/mlcube.yaml": "a:\n" + "".join("  " * i + "k:\n" for i in range(1, 70)) + "  " * 70 + "v\n" + CUBE}),
    Case("long-line-ok", ["describe", "--json"], [], code=0, files={"cube/mlcube.yaml": CUBE.replace("name: demo", "name: demo\ndescription: " + "x" * 2_000_000)}),
    Case("ten-thousand-tasks", ["graph"], [], code=0, files={"cube/mlcube.yaml": chain(10_000)},
         check=lambda ctx, r: _equal_len(r.stdout.splitlines(), 10_000)),
    Case("chain-of-four-thousand-dry-run", ["run", "--task=t3999", "--dry-run"], [], code=0,
         files={"cube/mlcube.yaml": chain(4000), "cube/workspace/d0/x": "x"},
         check=lambda ctx, r: _equal_len([ln for ln in r.stdout.splitlines() if "main.py" in ln], 4000)),
    Case("interpolation-chain-200", ["describe"],
         [*(f"cuberun: error: {{f}}:{line}:44: tasks.{t}.parameters.inputs.name.default: interpolation chain longer than 50 references: "
                          "vars.v0 -> vars.v1 -> ... -> vars.v50. Hint: reference the final value directly" for line, t in ((6, "hello"), (10, "bye")))],
         files={"cube/mlcube.yaml": interpolation_chain(200)}),
    Case("interpolation-chain-40-works", ["describe", "--json"], [VARS_WARNING], code=0, files={"cube/mlcube.yaml": interpolation_chain(40)}),
    Case("interpolation-self", ["describe"], [*(
        f"cuberun: error: {{f}}:{line}:44: tasks.{t}.parameters.inputs.name.default: interpolation cycle: vars.a -> vars.a" for line, t in ((6, "hello"), (10, "bye")))],
         files={"cube/mlcube.yaml": CUBE.replace("default: names/alice.txt", "default: '${vars.a}'") + "vars: {a: '${vars.a}'}\n"}),
    Case("path-too-long", ["run", "--task=hello", "name=/" + "/".join(["d" * 200] * 25)],
         ["cuberun: error: task 'hello', input 'name': the path is 5025 bytes long; the limit is 4096. Hint: use a shorter path, or override name=PATH"]),
    Case("file-name-too-long", ["run", "--task=hello", "name=" + "n" * 300],
         ["cuberun: error: task 'hello', input 'name': a file name in the path is 300 bytes long; the limit is 255. Hint: use a shorter path, or override name=PATH"]),
    Case("output-path-too-long-in-cube", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', output 'chat': a file name in the path is 256 bytes long; the limit is 255. Hint: use a shorter path, or override chat=PATH"],
         files={"cube/mlcube.yaml": CUBE.replace("default: chats/chat.txt", "default: chats/" + "c" * 256)}),
    # -- encodings and odd characters ------------------------------------------------------------------------
    Case("utf16-cube-file", ["describe"], ["cuberun: error: {f}: cube file is binary, not YAML text. Hint: point to the mlcube.yaml text file"],
         files={"cube/mlcube.yaml": CUBE.encode("utf-16")}),
    Case("utf8-bom-works", ["describe", "--json"], [], code=0, files={"cube/mlcube.yaml": b"\xef\xbb\xbf" + CUBE.encode()}),
    Case("latin1-cube-file", ["describe"], ["cuberun: error: {f}:1: not valid UTF-8 text. Hint: save the file as UTF-8"],
         files={"cube/mlcube.yaml": CUBE.replace("name: demo", "name: d\u00e9mo").encode("latin-1")}),
    Case("nul-in-a-yaml-path", ["run", "--task=hello"],
         ["cuberun: error: task 'hello', input 'name': the path {w}/a\\0b contains a NUL byte. Hint: use a shorter path, or override name=PATH"],
         files={"cube/mlcube.yaml": CUBE.replace("default: names/alice.txt", 'default: "a\\0b"')}),
    Case("nul-in-an-env-value", RUN, ["cuberun: error: task 'hello' cannot be started: environment variable X contains a NUL byte. "
                                      "Hint: fix it in the cube, the settings or the -P values"],
         files={"cube/mlcube.yaml": CUBE.replace("env: current}", 'env: current, env_vars: {X: "a\\0b"}}')}),
    Case("nul-in-an-env-name", RUN, ["cuberun: error: local.env_vars.A\\x00B: 'A\\x00B' cannot be an environment variable name (it is empty, or has '=' "
                                     "or a NUL in it). Hint: use letters, digits and '_', e.g. MY_SETTING"],
         files={"cube/mlcube.yaml": CUBE.replace("env: current}", 'env: current, env_vars: {"A\\0B": x}}')}),
    Case("equals-in-an-env-name", RUN, ["cuberun: error: local.env_vars.A=B: 'A=B' cannot be an environment variable name (it is empty, or has '=' "
                                        "or a NUL in it). Hint: use letters, digits and '_', e.g. MY_SETTING"],
         files={"cube/mlcube.yaml": CUBE.replace("env: current}", 'env: current, env_vars: {"A=B": x}}')}),
    Case("empty-env-name", RUN, ["cuberun: error: local.env_vars.: '' cannot be an environment variable name (it is empty, or has '=' "
                                 "or a NUL in it). Hint: use letters, digits and '_', e.g. MY_SETTING"],
         files={"cube/mlcube.yaml": CUBE.replace("env: current}", 'env: current, env_vars: {"": x}}')}),
    Case("p-env-name-with-equals", ["run", "--task=hello", "-Plocal.env_vars.A=B=C"], [], code=0, changes=("cube/workspace/chats*", "cube/workspace/.cuberun*")),
    Case("unbalanced-quote-local-command", RUN, ["cuberun: error: {f}:2:18: local.command: has a quote that is never closed: 'python3 \"main.py'. "
                                                 "Hint: balance the quotes (or escape them with \\), or write the command as a list"],
         files={"cube/mlcube.yaml": CUBE.replace("command: python3 main.py", "command: 'python3 \"main.py'")}),
    Case("unbalanced-quote-p-command", ["run", "--task=hello", "-Plocal.command=python3 'main.py"],
         ["cuberun: error: -P: local.command has a quote that is never closed: \"python3 'main.py\". "
          "Hint: balance the quotes (or escape them with \\), or write the command as a list"]),
    Case("unbalanced-quote-entrypoint", ["describe"], ["cuberun: error: {f}:5:17: tasks.hello.entrypoint: has a quote that is never closed: \"python3 'x\". "
                                                       "Hint: balance the quotes (or escape them with \\)"],
         files={"cube/mlcube.yaml": CUBE.replace("  hello:\n", "  hello:\n    entrypoint: \"python3 'x\"\n")}),
    Case("trailing-backslash-command", RUN, ["cuberun: error: {f}:2:18: local.command: cannot be split into arguments (no escaped character): "
                                             "'python3 main.py \\\\'. Hint: balance the quotes (or escape them with \\), or write the command as a list"],
         files={"cube/mlcube.yaml": CUBE.replace("command: python3 main.py", "command: 'python3 main.py \\'")}),
    Case("newline-in-a-task-name", ["describe"], [f"cuberun: error: {{f}}:{AFTER_CUBE}:12: tasks.a\\nb.parameter: unknown key 'parameter' in task 'a\\nb'. "
                                                  "Hint: did you mean 'parameters'?"],
         files={"cube/mlcube.yaml": CUBE + "  \"a\\nb\": {parameter: {}}\n"}),
    Case("control-chars-in-override", ["run", "--task=hello", "name=a\x1b[31mred"],
         ["cuberun: error: task 'hello', input 'name': {w}/a\\x1b[31mred does not exist (workspace {w}). Hint: run the task that produces it, or override name=PATH"]),
    Case("non-utf8-cube-folder", ["describe", "--json"], [], code=0, cwd="{r}/caf\udce9", bare=True,
         files={"caf\udce9/mlcube.yaml": CUBE, "caf\udce9/main.py": "", "caf\udce9/workspace/names/alice.txt": "A"}),
    Case("non-utf8-override-path", ["run", "--task=hello", "name=caf\udce9.txt"],
         ["cuberun: error: task 'hello', input 'name': {w}/caf\\udce9.txt does not exist (workspace {w}). Hint: run the task that produces it, or override name=PATH"]),
    Case("non-utf8-input-file-runs", ["run", "--task=hello", "name=caf\udce9.txt"], [], code=0, files={"cube/workspace/caf\udce9.txt": "Cafe\n"},
         changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"), check=chat_is("Hi, Cafe\n")),
    Case("ascii-locale-describe", ["describe"], [], code=0, env={"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
         files={"cube/mlcube.yaml": CUBE.replace("name: demo", "name: d\u00e9mo\ndescription: caf\u00e9 \u2615")},
         check=lambda ctx, r: _contains(r.stdout, "d\\xe9mo:latest\n  caf\\xe9 \\u2615\n")),
    Case("ascii-locale-non-ascii-path", ["run", "--task=hello"], env={"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
         files={"cube/mlcube.yaml": CUBE.replace("default: names/alice.txt", "default: na\u00efve.txt"), "cube/workspace/na\u00efve.txt": "N"},
         expect=["cuberun: error: task 'hello', input 'name': {w}/na\\xefve.txt cannot be used: the name is not ASCII, but the locale is ASCII-only "
                 "(use a UTF-8 locale: export LC_ALL=C.UTF-8, or PYTHONUTF8=1). Hint: override name=PATH"]),
    Case("c-locale-non-ascii-works", ["run", "--task=hello"], [], code=0, env={"LC_ALL": "C", "LANG": "C"},
         files={"cube/mlcube.yaml": CUBE.replace("default: names/alice.txt", "default: na\u00efve.txt"), "cube/workspace/na\u00efve.txt": "Na\u00efve\n"},
         changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"), check=chat_is("Hi, Na\u00efve\n")),
    # -- closed and full streams -----------------------------------------------------------------------------
    Case("describe-stdout-closed", ["describe"], ["cuberun: error: cannot write the output: standard output is closed. "
                                                  "Hint: redirect it (> FILE or > /dev/null) instead of closing it"], output="closed"),
    Case("runs-stdout-closed", ["runs"], ["cuberun: error: cannot write the output: standard output is closed. "
                                          "Hint: redirect it (> FILE or > /dev/null) instead of closing it"], output="closed", prior=DONE),
    Case("graph-stdout-closed", ["graph"], ["cuberun: error: cannot write the output: standard output is closed. "
                                            "Hint: redirect it (> FILE or > /dev/null) instead of closing it"], output="closed"),
    Case("config-list-stdout-closed", ["config", "list"], ["cuberun: error: cannot write the output: standard output is closed. "
                                                           "Hint: redirect it (> FILE or > /dev/null) instead of closing it"], output="closed"),
    Case("run-stdout-closed-still-runs", RUN, [], code=0, output="closed", changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: _contains(next((ctx.ws / ".cuberun" / "runs").glob("*/output.log")).read_text(), "task hello ran")),
    Case("run-stdin-closed", RUN, [], code=0, stdin="closed", changes=("cube/workspace/chats*", "cube/workspace/.cuberun*"), check=chat_is("Hi, Alice\n")),
    Case("error-with-stderr-closed", ["describe", "--mlcube=/dev/zero"], [], code=2, stderr_closed=True),
    Case("describe-to-dev-full", ["describe"], ["cuberun: error: cannot write the output: No space left on device. Hint: check where the output goes"], output="full"),
    Case("runs-to-dev-full", ["runs", "--json"], ["cuberun: error: cannot write the output: No space left on device. Hint: check where the output goes"],
         output="full", prior=DONE),
    # -- signals to cuberun itself ---------------------------------------------------------------------------
    Case("sigterm-to-cuberun", ["run", "--task=sleep"], ["cuberun: error: task 'sleep' was interrupted (run *"], code=143, signal=signal.SIGTERM,
         env={"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}, changes=("cube/workspace/slept*", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: _record_status(ctx, "interrupted")),
    Case("sigint-to-cuberun", ["run", "--task=sleep"], ["cuberun: error: task 'sleep' was interrupted (run *"], code=130, signal=signal.SIGINT,
         env={"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}, changes=("cube/workspace/slept*", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: _record_status(ctx, "interrupted")),
    Case("sighup-to-cuberun", ["run", "--task=sleep"], ["cuberun: error: task 'sleep' was interrupted (run *"], code=129, signal=signal.SIGHUP,
         env={"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}, changes=("cube/workspace/slept*", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: _record_status(ctx, "interrupted")),
    Case("sigkill-to-cuberun", ["run", "--task=sleep"], [], code=-9, signal=signal.SIGKILL,
         env={"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}, changes=("cube/workspace/slept*", "cube/workspace/.cuberun*"),
         check=lambda ctx, r: (_sleeper_gone(ctx), _record_status(ctx, "lost"))),
    Case("sigterm-during-parallel-sweep", ["run", "--task=sleep", "--sweep=P:local.env_vars.X=1,2", "--jobs=2"],
         ["cuberun: error: task 'sleep [P:local.env_vars.X=*"], code=143, signal=signal.SIGTERM,  # the variant is named
         env={"CUBERUN_GRACE_INTERRUPT": "1", "CUBERUN_GRACE_TERMINATE": "1"}, changes=("cube/workspace/slept*", "cube/workspace/sweeps*", "cube/workspace/.cuberun*")),
    # -- paths that are not what they seem ------------------------------------------------------------------
    Case("workspace-link-loop", ["run", "--task=hello", "--workspace={r}/loop"], setup=link("loop", "{r}/loop"),
         expect=["cuberun: error: the workspace {r}/loop cannot be used: too many levels of symbolic links (a symbolic link loop?). "
                 "Hint: create the link's target, or pass --workspace=DIR with a directory"]),
    Case("workspace-dangling-link", ["run", "--task=hello", "--workspace={r}/dangling"], setup=link("dangling", "{r}/nowhere"),
         expect=["cuberun: error: the workspace {r}/dangling cannot be used: it is a symbolic link to {r}/nowhere, which does not exist. "
                 "Hint: create the link's target, or pass --workspace=DIR with a directory"]),
    Case("workspace-under-proc", ["run", "--task=hello", "--workspace=/proc/self/ws"],
         ["cuberun: error: the workspace /proc/self/ws is on the kernel's virtual file system /proc. Hint: pass --workspace=DIR with a directory on a real file system"]),
    Case("workspace-is-proc", ["describe", "--workspace=/proc"],
         ["cuberun: error: the workspace /proc is on the kernel's virtual file system /proc. Hint: pass --workspace=DIR with a directory on a real file system"]),
    Case("workspace-under-sys", ["run", "--task=hello", "--workspace=/sys/kernel/ws"],
         ["cuberun: error: the workspace /sys/kernel/ws is on the kernel's virtual file system /sys. Hint: pass --workspace=DIR with a directory on a real file system"]),
    Case("workspace-is-a-fifo", ["run", "--task=hello", "--workspace={r}/ws.fifo"], setup=fifo("ws.fifo"),
         expect=["cuberun: error: the workspace {r}/ws.fifo is not a directory. Hint: pass --workspace=DIR with a directory (it is created if missing)"]),
    Case("workspace-is-dev-null", ["run", "--task=hello", "--workspace=/dev/null"],
         ["cuberun: error: the workspace /dev/null is not a directory. Hint: pass --workspace=DIR with a directory (it is created if missing)"]),
    Case("workspace-through-a-file", ["run", "--task=hello", "--workspace={r}/afile/ws"], setup=write("afile", "x"),
         expect=["cuberun: error: the workspace {r}/afile/ws cannot be used: not a directory. Hint: pass --workspace=DIR with a directory"]),
    Case("workspace-link-to-a-folder-works", ["run", "--task=hello", "--workspace={r}/wslink"], [], code=0,
         setup=each(write("realws/names/alice.txt", "Linked\n"), link("wslink", "{r}/realws")), changes=("realws/*",)),
    Case("cwd-deleted", ["describe"], ["cuberun: error: the current directory {r}/gone no longer exists. Hint: cd to an existing directory, or give absolute paths"],
         cwd="{r}/gone", cwd_deleted=True, env={"PWD": "{r}/gone"}),
    Case("report-workspace-link-loop", ["report", "--workspace={r}/loop"], setup=link("loop", "{r}/loop"),
         expect=["cuberun: error: the workspace {r}/loop does not exist. Hint: pass the --workspace (or --mlcube) whose runs to report"]),
    Case("runs-workspace-is-a-file", ["runs", "--workspace={f}"], [], code=0, stdout="no runs in {f}\n"),
    Case("mlcube-path-through-a-file", ["describe", "--mlcube={f}/x"],
         ["cuberun: error: {f}/x does not exist. Hint: pass --mlcube=DIR with the cube's directory, or its mlcube.yaml"]),
]


# -- helpers used by the table -------------------------------------------------------------------------------------
def _equal(path: Path, text: str) -> None:
    assert path.read_text(encoding="utf-8") == text, path.read_text(encoding="utf-8")


def _equal_len(items: list[object], n: int) -> None:
    assert len(items) == n, items[:5]


def _contains(text: str, part: str) -> None:
    assert part in text, text


def _cache_name(ctx: Ctx) -> str:
    import hashlib

    return hashlib.sha256(os.path.abspath(ctx.cube / "mlcube.yaml").encode()).hexdigest()[:32]


def _lock(ctx: Ctx, how: str) -> None:
    lock = ctx.lock_name(ctx.ws / "chats" / "chat.txt")
    ctx.vars["lock"] = str(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    if how == "fifo":
        os.mkfifo(lock)
    elif how == "link":
        os.symlink("/dev/null", lock)
    else:
        lock.write_bytes(b"\x00\xffnot json")


def _records(ctx: Ctx) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in ctx.records()]


def _damage_one(ctx: Ctx, task: str, content: str) -> None:
    for path in ctx.records():
        if json.loads(path.read_text()).get("task") == task:
            ctx.vars["rec"] = str(path)
            path.write_text(content)
            return
    raise AssertionError(f"no record of {task}")


def _edit_record(ctx: Ctx, **fields: object) -> None:
    [path] = ctx.records()
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _edit_state(ctx: Ctx, key: str, members: dict[str, str]) -> None:
    path = ctx.ws / ".cuberun" / "state" / f"{key}.json"
    data = json.loads(path.read_text())
    for out in data["outputs"].values():
        out["members"].update(members)
    path.write_text(json.dumps(data))


def _dead_pid() -> int:
    """A pid no process has now (the highest possible one is never given out at random here)."""
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(limit - 1, limit - 1000, -1):
        if not Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError("no free pid")


def _record_status(ctx: Ctx, status: str) -> None:
    from cuberun.records import list_runs

    [record] = list_runs(ctx.ws, warn=False)
    assert record["status"] == status, record


def _sleeper_gone(ctx: Ctx) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _sleepers(ctx):
            return
        time.sleep(0.1)
    raise AssertionError(f"the task outlived cuberun: {_sleepers(ctx)}")


def _sleepers(ctx: Ctx) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"main.py\0sleep" in cmd and str(ctx.ws).encode() in cmd and state != "Z":
                found.append(int(entry))
    return found


def _chown_tree(root: Path, skip: str | None = None, then: object = None) -> None:
    """Give the workspace to nobody (a new folder made by `then` stays root's)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if name != skip:
                os.lchown(os.path.join(dirpath, name), 65534, 65534)
    os.chown(root, 65534, 65534)
    if callable(then):
        then()


def _root_owns(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), 0, 0)
    os.chown(path, 0, 0)


def _mkdir_for_nobody(path: Path) -> None:
    path.mkdir()
    os.chown(path, 65534, 65534)


@pytest.fixture(scope="module")
def runner_base() -> Iterator[Path]:
    yield from scratch()


@pytest.fixture
def runner(runner_base: Path, cli_env: dict[str, str]) -> Runner:
    return Runner(runner_base, cli_env)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(runner: Runner, case: Case) -> None:
    if case.user == "nobody" and os.geteuid() != 0:
        pytest.skip("dropping to the user nobody needs root (the cases check permissions, which root ignores)")
    try:
        check_case(runner, case)
    finally:
        kill_sleepers(runner.base / case.id)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)
