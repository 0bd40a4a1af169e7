"""Hostile inputs for what the up-to-date check reads since it knows the code (issue 11): the
code cache and the code listings, the interpreter cache, the secret key, `run --explain` on a
damaged state, ignore files that are special or huge, and state files of other versions.

The harness is test_hostile_input.py's (tests/cli/hostile.py): exact `cuberun: error:` /
`cuberun: warning:` lines, the exit code, every other file byte-identical. The caches live in
the case tree (`{r}/cache`, CUBERUN_CACHE_DIR) so that their damage is checked like the rest.
A damaged cache is ignored and rebuilt (never trusted, never a crash, never a hang); one that
cannot be rebuilt (a FIFO, a device in its place) is left alone.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.hostile import CUBE, Case, Ctx, Result, Runner, check_case, damage, damage_state, each, fifo, link, scratch, sparse, write

RUN = ["run", "--task=hello"]
EXPLAIN = ["run", "--task=hello", "--explain"]
DONE = [RUN]
CACHE = {"CUBERUN_CACHE_DIR": "{r}/cache"}
SECRET_CUBE = {"cube/mlcube.yaml": CUBE.replace("env: current}", "env: current, env_vars: {API_TOKEN: abc}}", 1)}
RERUN = ("cube/workspace/chats*", "cube/workspace/.cuberun*", "cache*")
SKIP = ("cube/workspace/.cuberun*", "cache*")
CODE_FILES = "cache/code/*"
LISTINGS = "cube/workspace/.cuberun/state/code/*.json"
INTERPRETERS = "cache/interpreters.json"
SECRET = "cache/secret-key"
IGNORED = "; the files it would leave out count as code"
EARLIER = "the last run was recorded by an earlier cuberun version"
NOT_KEPT = "code changed (1 files now; the earlier listing is not kept)"
KEY_HINT = "; secret env vars look changed on every run (remove it, or fix its folder)"


def chat(times: int):  # type: ignore[no-untyped-def]
    """The hello task ran `times` times in all (skipped runs leave the chat as it was)."""

    def check(ctx: Ctx, result: Result) -> None:
        assert (ctx.ws / "chats" / "chat.txt").read_text() == "Hi, Alice\n" * times, result.stderr

    return check


def says(*parts: str, runs: int | None = None):  # type: ignore[no-untyped-def]
    """Every part appears in the standard error (the reason a task runs or is skipped)."""

    def check(ctx: Ctx, result: Result) -> None:
        for part in parts:
            assert ctx.fmt(part) in result.stderr, result.stderr
        if runs is not None:
            chat(runs)(ctx, result)

    return check


def explains(line: str):  # type: ignore[no-untyped-def]
    def check(ctx: Ctx, result: Result) -> None:
        assert result.stdout == f"task 'hello' {line}\n", result.stdout

    return check


def explains_json(run: bool):  # type: ignore[no-untyped-def]
    def check(ctx: Ctx, result: Result) -> None:
        [entry] = json.loads(result.stdout)
        assert entry["task"] == "hello" and entry["run"] is run and entry["reasons"], entry

    return check


def key_rebuilt(ctx: Ctx, result: Result) -> None:
    path = ctx.root / SECRET
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32


def edit_main(ctx: Ctx) -> None:
    with open(ctx.cube / "main.py", "a", encoding="utf-8") as fh:
        fh.write("# edited\n")


def poisoned_summary(data: dict[str, Any]) -> dict[str, Any]:
    """A .sum record whose stat digest still matches, with counts of the wrong types."""
    return {**data, "files": "many", "bytes": [1]} if "stat" in data else {**data, "files": {"main.py": [1], "x": "y"}}


def other_root(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "root": "/elsewhere", "sha256": "0" * 64}


def state_with(**fields: Any):  # type: ignore[no-untyped-def]
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        data = {**data, **fields}
        return {k: v for k, v in data.items() if v is not ...}

    return edit


def as_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """The state as cuberun wrote it before the identity covered code, env, interpreter, packages."""
    runner = {k: v for k, v in data["identity"]["runner"].items() if k not in ("code", "env", "program")}
    return {**data, "version": 1, "identity": {**data["identity"], "version": 1, "runner": runner}}


def wrong_types(data: dict[str, Any]) -> dict[str, Any]:
    """A version-2 state of the right outer shape with every identity field of a wrong type."""
    return {**data, "identity": {"parameters": {"name": 7}, "command": 5,
                                 "runner": {"program": "x", "env": [1], "code": {"sha256": 5}, "cwd": [], "image_id": None}},
            "far_end": [1], "hash_cache": [1, 2]}


CASES: list[Case] = [
    # -- the code cache (~/.cache/cuberun/code/) ----------------------------------------------------------------
    Case("code-cache-not-json", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, "{"), changes=SKIP, check=chat(1)),
    Case("code-cache-is-a-list", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, "[1, 2]"), changes=SKIP, check=chat(1)),
    Case("code-cache-binary", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, b"\xff\x00\xfe"), changes=SKIP, check=chat(1)),
    Case("code-cache-empty", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, ""), changes=SKIP, check=chat(1)),
    Case("code-cache-wrong-types", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, edit=poisoned_summary), changes=SKIP,
         check=chat(1)),
    Case("code-cache-of-another-folder", RUN, [], code=0, env=CACHE, prior=DONE, setup=each(damage(CODE_FILES, edit=other_root), edit_main),
         changes=RERUN, check=says("code changed: main.py", runs=2)),
    Case("code-cache-wrong-types-then-edit", RUN, [], code=0, env=CACHE, prior=DONE, setup=each(damage(CODE_FILES, edit=poisoned_summary), edit_main),
         changes=RERUN, check=says("code changed: main.py", runs=2)),
    Case("code-cache-fifo", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, fifo=True), changes=SKIP, check=chat(1)),
    Case("code-cache-fifo-then-edit", RUN, [], code=0, env=CACHE, prior=DONE, setup=each(damage(CODE_FILES, fifo=True), edit_main),
         changes=RERUN, check=says("code changed: main.py", runs=2)),
    Case("code-cache-links-to-dev-zero", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, link_to="/dev/zero"), changes=SKIP,
         check=chat(1)),
    Case("code-cache-dangling-links", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, link_to="{r}/nowhere/x"), changes=SKIP,
         check=chat(1)),
    Case("code-cache-folders", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, dir=True), changes=SKIP, check=chat(1)),
    Case("code-cache-huge", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, size=300_000_000), changes=SKIP, check=chat(1)),
    Case("code-cache-folder-is-a-file", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage("cache/code", "not a folder"), changes=SKIP,
         check=chat(1)),
    # -- the code listings a run keeps (.cuberun/state/code/) -----------------------------------------------------
    Case("code-listing-is-a-list", RUN, [], code=0, prior=DONE, setup=each(damage(LISTINGS, "[]"), edit_main), changes=RERUN,
         check=says(NOT_KEPT, runs=2)),
    Case("code-listing-members-wrong", RUN, [], code=0, prior=DONE, setup=each(damage(LISTINGS, edit=lambda d: {**d, "members": [1]}), edit_main),
         changes=RERUN, check=says(NOT_KEPT, runs=2)),
    Case("code-listing-fifo", RUN, [], code=0, prior=DONE, setup=each(damage(LISTINGS, fifo=True), edit_main), changes=RERUN,
         check=says(NOT_KEPT, runs=2)),
    Case("code-listing-links-to-dev-zero", RUN, [], code=0, prior=DONE, setup=each(damage(LISTINGS, link_to="/dev/zero"), edit_main),
         changes=RERUN, check=says(NOT_KEPT, runs=2)),
    Case("code-listing-folder-is-a-file", RUN, [], code=0, prior=DONE,
         setup=each(damage("cube/workspace/.cuberun/state/code", "mine"), edit_main), changes=RERUN, check=says(NOT_KEPT, runs=2)),
    Case("code-listing-folder-keeps-user-files", RUN, [], code=0, prior=DONE,
         setup=each(write("cube/workspace/.cuberun/state/code/notes.json", "mine"), fifo("cube/workspace/.cuberun/state/code/pipe.json"), edit_main),
         changes=RERUN, check=says("code changed: main.py", runs=2)),
    Case("state-code-digest-is-a-path", RUN, [], code=0, prior=DONE,
         setup=each(fifo("cube/evil.json"), damage("cube/workspace/.cuberun/state/hello.json", edit=lambda d: _code_digest(d, "../../../../evil"))),
         changes=RERUN, check=says(NOT_KEPT, runs=2)),
    # -- the interpreter cache (~/.cache/cuberun/interpreters.json) ------------------------------------------------
    Case("interpreters-cache-not-json", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, "{"), changes=SKIP, check=chat(1)),
    Case("interpreters-cache-is-a-list", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, "[1]"), changes=SKIP, check=chat(1)),
    Case("interpreters-cache-wrong-types", RUN, [], code=0, env=CACHE, prior=DONE,
         setup=damage(INTERPRETERS, edit=lambda d: {k: {"path": 5, "version": 3, "executable": [], "stat": "x"} for k in d} | {"x": [1]}),
         changes=SKIP, check=chat(1)),
    Case("interpreters-cache-deep", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, "[" * 100_000 + "]" * 100_000),
         changes=SKIP, check=chat(1)),
    Case("interpreters-cache-fifo", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, fifo=True), changes=SKIP, check=chat(1)),
    Case("interpreters-cache-links-to-dev-zero", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, link_to="/dev/zero"),
         changes=SKIP, check=chat(1)),
    Case("interpreters-cache-is-a-folder", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, dir=True), changes=SKIP,
         check=chat(1)),
    Case("interpreters-cache-huge", RUN, [], code=0, env=CACHE, prior=DONE, setup=damage(INTERPRETERS, size=9_000_000), changes=SKIP,
         check=chat(1)),
    Case("cache-folder-is-a-file", RUN, [], code=0, env={"CUBERUN_CACHE_DIR": "{r}/cachefile"}, files={"cachefile": "mine"}, prior=DONE,
         changes=SKIP, check=chat(1)),
    # -- the secret key (~/.cache/cuberun/secret-key) ----------------------------------------------------------------
    Case("secret-key-fifo", RUN, [f"cuberun: warning: cannot keep the secret key {{r}}/{SECRET}: it is a FIFO (named pipe), not a regular file{KEY_HINT}"],
         code=0, env=CACHE, files=SECRET_CUBE, prior=DONE, setup=damage(SECRET, fifo=True), changes=RERUN,
         check=says("env var API_TOKEN changed", runs=2)),
    Case("secret-key-links-to-dev-zero", RUN,
         [f"cuberun: warning: cannot keep the secret key {{r}}/{SECRET}: it is a character device, not a regular file{KEY_HINT}"],
         code=0, env=CACHE, files=SECRET_CUBE, prior=DONE, setup=damage(SECRET, link_to="/dev/zero"), changes=RERUN,
         check=says("env var API_TOKEN changed", runs=2)),
    Case("secret-key-is-a-folder", RUN,
         [f"cuberun: warning: cannot keep the secret key {{r}}/{SECRET}: it is a directory, not a regular file{KEY_HINT}"],
         code=0, env=CACHE, files=SECRET_CUBE, prior=DONE, setup=damage(SECRET, dir=True), changes=RERUN, check=chat(2)),
    Case("secret-key-short", RUN, [], code=0, env=CACHE, files=SECRET_CUBE, prior=DONE, setup=damage(SECRET, "short"),
         changes=(*RERUN, SECRET), check=lambda ctx, r: (key_rebuilt(ctx, r), says("env var API_TOKEN changed", runs=2)(ctx, r))),
    Case("secret-key-too-long", RUN, [], code=0, env=CACHE, files=SECRET_CUBE, prior=DONE, setup=damage(SECRET, "k" * 100),
         changes=(*RERUN, SECRET), check=key_rebuilt),
    Case("secret-key-folder-is-a-file", RUN,
         ["cuberun: warning: cannot keep the secret key {r}/cachefile/secret-key: cannot create cache folder {r}/cachefile: "
          f"this is a regular file, not a folder{KEY_HINT}"],
         code=0, env={"CUBERUN_CACHE_DIR": "{r}/cachefile"}, files={"cachefile": "mine", **SECRET_CUBE}, prior=DONE, changes=RERUN,
         check=chat(2)),
    Case("secret-key-kept-then-skipped", RUN, [], code=0, env=CACHE, files=SECRET_CUBE, prior=[RUN, RUN], changes=SKIP, check=chat(1)),
    # -- run --explain on damaged state ----------------------------------------------------------------------------
    Case("explain-state-is-a-list", EXPLAIN,
         ["cuberun: warning: ignoring the damaged up-to-date state {state}: expected a JSON object, found list; the task runs again"],
         code=0, prior=DONE, setup=damage_state("[]"), check=explains("would run: no previous successful run")),
    Case("explain-state-not-json", EXPLAIN, ["cuberun: warning: ignoring the damaged up-to-date state {state}: not valid JSON; the task runs again"],
         code=0, prior=DONE, setup=damage_state("{"), check=explains("would run: no previous successful run")),
    Case("explain-state-huge", EXPLAIN,
         ["cuberun: warning: ignoring the damaged up-to-date state {state}: state file is too large (300000000 bytes; the limit is 268435456); "
          "the task runs again"], code=0, prior=DONE, setup=damage_state(size=300_000_000), check=explains("would run: no previous successful run")),
    Case("explain-state-wrong-types", EXPLAIN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=wrong_types),
         check=lambda ctx, r: _starts(r.stdout, "task 'hello' would run: parameter name changed; parameter chat is new; command changed; ")),
    Case("explain-json-state-wrong-types", [*EXPLAIN, "--json"], [], code=0, prior=DONE,
         setup=damage("cube/workspace/.cuberun/state/hello.json", edit=wrong_types), check=explains_json(True)),
    Case("explain-json-state-is-a-list", [*EXPLAIN, "--json"],
         ["cuberun: warning: ignoring the damaged up-to-date state {state}: expected a JSON object, found list; the task runs again"],
         code=0, prior=DONE, setup=damage_state("[]"), check=explains_json(True)),
    Case("explain-state-fifo", EXPLAIN, ["cuberun: error: {state}: cannot write up-to-date state: it is a FIFO (named pipe). "
                                         "Hint: remove it; cuberun rewrites it after each successful run"],
         prior=DONE, setup=damage_state(fifo=True)),
    Case("explain-state-version-1", EXPLAIN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=as_version_1),
         check=explains(f"would run: {EARLIER}")),
    Case("explain-undamaged-is-skipped", EXPLAIN, [], code=0, prior=DONE,
         check=explains("would be skipped: up to date: code, environment, inputs, parameters and command unchanged, outputs intact")),
    Case("explain-code-cache-fifo", EXPLAIN, [], code=0, env=CACHE, prior=DONE, setup=damage(CODE_FILES, fifo=True),
         changes=("cache*",), check=explains("would be skipped: up to date: code, environment, inputs, parameters and command unchanged, outputs intact")),
    # -- ignore files that are special or huge ------------------------------------------------------------------------
    Case("cuberunignore-fifo", RUN, [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a FIFO (named pipe), not a regular file{IGNORED}"],
         code=0, setup=fifo("cube/.cuberunignore"), changes=RERUN, check=chat(1)),
    Case("cuberunignore-fifo-after-a-run", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a FIFO (named pipe), not a regular file{IGNORED}"],
         code=0, prior=DONE, setup=fifo("cube/.cuberunignore"), changes=SKIP, check=chat(1)),
    Case("cuberunignore-huge", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is too large (2000000 bytes; the limit is 1048576){IGNORED}"],
         code=0, setup=sparse("cube/.cuberunignore", 2_000_000), changes=RERUN, check=chat(1)),
    Case("cuberunignore-huge-keeps-every-file", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is too large (1048577 bytes; the limit is 1048576){IGNORED}"],
         code=0, prior=DONE, files={"cube/.cuberunignore": "notes.txt\n", "cube/notes.txt": "mine"},
         setup=each(write("cube/.cuberunignore", "notes.txt\n" + "#" * (1048577 - 10)), write("cube/notes.txt", "edited")),
         changes=RERUN, check=says("code changed: notes.txt (added)", runs=2)),
    Case("cuberunignore-is-a-folder", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a directory, not a regular file{IGNORED}"],
         code=0, setup=lambda ctx: (ctx.cube / ".cuberunignore").mkdir(), changes=RERUN, check=chat(1)),
    Case("cuberunignore-links-to-dev-zero", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a character device, not a regular file{IGNORED}"],
         code=0, setup=link("cube/.cuberunignore", "/dev/zero"), changes=RERUN, check=chat(1)),
    Case("cuberunignore-dangling-link", RUN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a symbolic link to {{r}}/gone, which does not exist{IGNORED}"],
         code=0, setup=link("cube/.cuberunignore", "{r}/gone"), changes=RERUN, check=chat(1)),
    Case("cuberunignore-binary", RUN, [], code=0, files={"cube/.cuberunignore": b"\xff\xfe\x00[\n**/\n!\n"}, changes=RERUN, check=chat(1)),
    Case("cuberunignore-fifo-explain", EXPLAIN,
         [f"cuberun: warning: ignoring {{c}}/.cuberunignore: it is a FIFO (named pipe), not a regular file{IGNORED}"],
         code=0, prior=DONE, setup=fifo("cube/.cuberunignore"),
         check=explains("would be skipped: up to date: code, environment, inputs, parameters and command unchanged, outputs intact")),
    Case("gitignore-fifo", RUN, [f"cuberun: warning: ignoring {{c}}/.gitignore: it is a FIFO (named pipe), not a regular file{IGNORED}"],
         code=0, setup=fifo("cube/.gitignore"), changes=RERUN, check=chat(1)),
    Case("dockerignore-fifo", RUN, [f"cuberun: warning: ignoring {{c}}/.dockerignore: it is a FIFO (named pipe), not a regular file{IGNORED}"],
         code=0, setup=fifo("cube/.dockerignore"), changes=RERUN, check=chat(1)),
    Case("nested-gitignore-fifo", RUN, [], code=0, setup=fifo("cube/lib/.gitignore"), changes=RERUN, check=chat(1)),
    Case("fifo-in-the-code-folder", RUN, [], code=0, prior=DONE, setup=fifo("cube/lib/pipe"), changes=SKIP, check=chat(1)),
    # -- state files of other versions -------------------------------------------------------------------------------
    Case("state-version-1", RUN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=as_version_1),
         changes=RERUN, check=says(f"will run: {EARLIER}", runs=2)),
    Case("state-version-1-then-up-to-date", RUN, [], code=0, prior=DONE,
         setup=lambda ctx: (damage("cube/workspace/.cuberun/state/hello.json", edit=as_version_1)(ctx), _run(ctx, RUN)),
         changes=SKIP, check=says("skipping task 'hello': up to date", runs=2)),
    Case("state-version-0", RUN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=state_with(version=0)),
         changes=RERUN, check=says(f"will run: {EARLIER}", runs=2)),
    Case("state-version-3", RUN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=state_with(version=3)),
         changes=RERUN, check=says("will run: the last run was recorded by a newer cuberun version (state version 3, this one reads 2)", runs=2)),
    Case("state-version-missing", RUN,
         ["cuberun: warning: ignoring the damaged up-to-date state {hit}: 'version' is missing or not a whole number; the task runs again"],
         code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=state_with(version=...)), changes=RERUN, check=chat(2)),
    Case("state-version-string", RUN,
         ["cuberun: warning: ignoring the damaged up-to-date state {hit}: 'version' is missing or not a whole number; the task runs again"],
         code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=state_with(version="2")), changes=RERUN, check=chat(2)),
    Case("state-version-true", RUN,
         ["cuberun: warning: ignoring the damaged up-to-date state {hit}: 'version' is missing or not a whole number; the task runs again"],
         code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=state_with(version=True)), changes=RERUN, check=chat(2)),
    Case("state-wrong-identity-types", RUN, [], code=0, prior=DONE, setup=damage("cube/workspace/.cuberun/state/hello.json", edit=wrong_types),
         changes=RERUN, check=says("parameter name changed", "command changed", runs=2)),
]


def _code_digest(data: dict[str, Any], digest: str) -> dict[str, Any]:
    runner = dict(data["identity"]["runner"])
    runner["code"] = {**runner["code"], "sha256": digest}
    return {**data, "identity": {**data["identity"], "runner": runner}}


def _starts(text: str, prefix: str) -> None:
    assert text.startswith(prefix), text


_RUNNER: list[Runner] = []


def _run(ctx: Ctx, argv: list[str]) -> None:
    """One more cuberun command as part of a case's setup (the run before the one checked)."""
    result = _RUNNER[0].run(ctx, Case("setup", argv, [], code=0))
    assert result.code == 0, result.stderr


@pytest.fixture(scope="module")
def runner_base() -> Iterator[Path]:
    yield from scratch()


@pytest.fixture
def runner(runner_base: Path, cli_env: dict[str, str]) -> Iterator[Runner]:
    runner = Runner(runner_base, cli_env)
    _RUNNER[:] = [runner]
    yield runner
    _RUNNER.clear()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_identity_input(runner: Runner, case: Case) -> None:
    check_case(runner, case)


def test_cases_are_named_once() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
