"""Pure resolution: cube + task + overrides + workspace -> host paths, mounts and arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cuberun.errors import Issue, SpecError, UsageError
from cuberun.hints import did_you_mean
from cuberun.safeio import shown
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT, UNKNOWN, Cube, Task
from cuberun.valueclass import dataclass, field

CONTAINER_PREFIX = "/mlcube_io"


@dataclass(frozen=True)
class ResolvedParam:
    name: str
    io: str
    type: str  # FILE or DIRECTORY
    host_path: Path
    opts: str | None
    exists: bool
    mount_path: str | None = None  # container_config.yaml: the fixed path inside the container


@dataclass(frozen=True)
class Mount:
    host: str
    target: str
    readonly: bool


@dataclass(frozen=True)
class Layout:
    """Where each parameter lives inside a container: mounts and the task's arguments."""

    mounts: tuple[Mount, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedTask:
    cube: Cube
    task: Task
    workspace: Path
    params: tuple[ResolvedParam, ...]
    overrides: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def entrypoint(self) -> list[str] | None:
        from cuberun.errors import split_words

        what = f"the entrypoint of task '{self.task.name}'"
        run_args = self.task.run_args
        if run_args is not None:
            return split_words(run_args.entrypoint, what) if run_args.entrypoint else None
        return split_words(self.task.entrypoint, what) if self.task.entrypoint else None

    @property
    def environment(self) -> dict[str, str]:
        """The task's own environment (container_config.yaml run_args.environment)."""
        return dict(self.task.run_args.environment) if self.task.run_args else {}

    def host_args(self) -> list[str]:
        return [f"--{p.name}={p.host_path}" for p in self.params]

    def task_args(self, args: Sequence[str]) -> list[str]:
        """`[<task>] --p=...`: the task name first unless the task has an entrypoint. A
        container_config.yaml task gets its run_args.command only (it reads fixed mount paths)."""
        if self.task.run_args is not None:
            return list(self.task.run_args.command or ())
        return ([] if self.task.entrypoint else [self.task.name]) + list(args)

    def layout(self, prefix: str = CONTAINER_PREFIX, input_mode: str | None = None) -> Layout:
        """The reference's mount algorithm: inputs then outputs in YAML order; a directory is
        mounted itself, a file through its parent; each distinct dir gets prefix+N in order of
        first use. Inputs are read-only unless `opts: rw` (or input_mode 'rw'); when one dir
        serves a read-only and a writable parameter, writable wins."""
        order: list[str] = []
        targets: dict[str, str] = {}
        writable: dict[str, bool] = {}
        args: list[str] = []
        fixed: list[Mount] = []
        for p in self.params:
            if p.mount_path is not None:  # container_config.yaml: mounted itself at its fixed path, no argument
                rw = p.io == OUTPUT or (input_mode or p.opts or "ro") == "rw"
                fixed.append(Mount(str(p.host_path), p.mount_path, not rw))
                continue
            if p.type == DIRECTORY:
                host_dir, leaf = str(p.host_path), None
            else:
                host_dir, leaf = str(p.host_path.parent), p.host_path.name
            if host_dir not in targets:
                targets[host_dir] = f"{prefix}{len(order)}"
                order.append(host_dir)
                writable[host_dir] = False
            if p.io == OUTPUT:
                wants_rw = True
            else:
                mode = input_mode or p.opts or "ro"
                wants_rw = mode == "rw"
            writable[host_dir] = writable[host_dir] or wants_rw
            target = targets[host_dir]
            args.append(f"--{p.name}={target}" if leaf is None else f"--{p.name}={target}/{leaf}")
        mounts = tuple(Mount(h, targets[h], not writable[h]) for h in order) + tuple(fixed)
        return Layout(mounts, tuple(args))

    def prepare_outputs(self) -> None:
        """Create output directories and the parents of output files (never inputs)."""
        for p in self.params:
            if p.io != OUTPUT:
                continue
            target = p.host_path if p.type == DIRECTORY else p.host_path.parent
            target.mkdir(parents=True, exist_ok=True)
            if p.mount_path is not None and p.type == FILE and not os.path.lexists(p.host_path):
                # a file bind mount needs the file: created empty, never through a symlink or over anything
                os.close(os.open(p.host_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))


def parse_overrides(items: Sequence[str], tasks: Sequence[Task]) -> dict[str, str]:
    """`name=value` (or `--name=value`) parameter overrides, checked against the tasks' parameters."""
    known: dict[str, str] = {}
    for t in tasks:
        for p in t.params:
            known.setdefault(p.name, t.name)
    result: dict[str, str] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        key, sep, value = text.partition("=")
        if not sep:
            raise UsageError(f"unexpected argument '{item}'", "parameter overrides are written name=value")
        if not key:
            raise UsageError(f"'{item}' has no parameter name", "parameter overrides are written name=value")
        if key not in known:
            names = sorted(known)
            task_list = ", ".join(t.name for t in tasks)
            raise UsageError(f"unknown parameter '{key}' for task(s) {task_list}", did_you_mean(key, names, "parameter"))
        if value == "":
            raise UsageError(f"parameter '{key}' is given an empty path", f"write {key}=PATH")
        result[key] = value
    return result


def expand_path(value: str, workspace: Path) -> tuple[Path, bool]:
    """Expand `~` and `$VAR`, join relative paths to the workspace, normalise lexically.
    Returns the path and whether the user wrote it as absolute."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    absolute = os.path.isabs(expanded)
    joined = expanded if absolute else os.path.join(str(workspace), expanded)
    return Path(os.path.normpath(joined)), absolute


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _ancestors(path: str) -> list[str]:
    found = [path]
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return found
        found.append(parent)
        path = parent


MAX_PATH = 4096  # bytes: Linux's PATH_MAX
MAX_NAME = 255  # bytes of one path component


def path_problem(value: str) -> str | None:
    """Why a path written in the cube or on the command line cannot name a file, or None."""
    if "\x00" in value:
        visible = value.replace("\x00", "\\0")
        return f"the path {shown(visible)} contains a NUL byte"
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > MAX_PATH:
        return f"the path is {size} bytes long; the limit is {MAX_PATH}"
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in value.split("/")), default=0)
    if longest > MAX_NAME:
        return f"a file name in the path is {longest} bytes long; the limit is {MAX_NAME}"
    return None


def _probe(path: Path) -> tuple[str | None, str | None]:
    """(DIRECTORY, FILE, what else it is, or None when missing; a problem when it cannot be looked at)."""
    import errno
    import stat

    from cuberun.safeio import kind, os_problem

    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, None
        return None, os_problem(exc)
    except ValueError as exc:
        return None, os_problem(exc)
    if stat.S_ISDIR(st.st_mode):
        return DIRECTORY, None
    return (FILE if stat.S_ISREG(st.st_mode) else kind(st.st_mode)), None


NULL_DEFAULT = "null"


def is_resumable_checkpoint(input_path: str | os.PathLike[str], own_outputs: Sequence[str | os.PathLike[str]]) -> bool:
    """An input at (or inside) one of the same task's own outputs: a checkpoint the task resumes
    from and writes again (mnist_fl's model_in/model_dir). Legal, and special in three ways: it
    need not exist before the first run (the output directory is created), the task is never its
    own producer (graph.py), and its fingerprint is taken after the run (uptodate.py), so that a
    finished task is up to date until someone else changes the checkpoint."""
    path = os.path.normpath(os.fspath(input_path))
    return any(_inside(path, os.path.normpath(os.fspath(out))) for out in own_outputs)


def checkpoint_inputs(rt: ResolvedTask) -> list[ResolvedParam]:
    outputs = [p.host_path for p in rt.params if p.io == OUTPUT]
    return [p for p in rt.params if p.io == INPUT and is_resumable_checkpoint(p.host_path, outputs)]


def resolve_task(
    cube: Cube,
    task_name: str,
    overrides: Mapping[str, str] | None = None,
    *,
    allow_missing_inputs: bool = False,
    check_inputs: bool = True,
    produced: frozenset[str] = frozenset(),
) -> ResolvedTask:
    """Resolve a task's parameters. Inputs at or under a path in `produced` (outputs of
    tasks that run earlier in the same invocation) are not required to exist yet."""
    task = cube.tasks[task_name]
    overrides = overrides or {}
    ws = cube.workspace
    issues: list[Issue] = []
    warnings: list[str] = []
    params: list[ResolvedParam] = []
    real_ws = os.path.realpath(ws)
    own_outputs = [expand_path(overrides.get(o.name, o.default), ws)[0] for o in task.outputs]
    for p in task.params:
        value = overrides.get(p.name, p.default)
        where = f"task '{task.name}', {p.io} '{p.name}'"
        path, absolute = expand_path(value, ws)
        problem = path_problem(str(path))
        if problem:
            issues.append(Issue(f"{where}: {problem}", hint=f"use a shorter path, or override {p.name}=PATH"))
            continue
        ptype = p.type
        if p.name in overrides and ptype == UNKNOWN and value.endswith(("/", "\\")):
            ptype = DIRECTORY
        kind, problem = _probe(path)
        if problem:
            issues.append(Issue(f"{where}: {shown(path)} cannot be used: {problem}", hint=f"override {p.name}=PATH"))
            continue
        if kind is not None and kind not in (FILE, DIRECTORY):
            issues.append(Issue(f"{where}: {shown(path)} is {kind}: a task's {p.io}s are regular files and directories",
                                hint=f"override {p.name}=PATH"))
            continue
        exists = kind is not None
        if p.io == INPUT:
            if ptype == UNKNOWN:
                ptype = DIRECTORY if kind == DIRECTORY else FILE
            pending = bool(produced) and any(a in produced for a in _ancestors(str(path)))
            checkpoint = is_resumable_checkpoint(path, own_outputs)
            placeholder = p.name not in overrides and p.default.strip().lower() == NULL_DEFAULT
            if checkpoint and ptype == UNKNOWN:
                ptype = DIRECTORY
            if placeholder and not exists:
                warnings.append(
                    f'{where} is "{p.default}" (not given): it is passed as {path}, which does not exist, and the program is expected '
                    f"to use a default of its own; in a container that is often a path inside the image, which does not exist on the "
                    f"host: give one with {p.name}=PATH"
                )
            elif checkpoint and not exists:
                pass  # a checkpoint the task resumes from: created empty with its output on the first run
            elif check_inputs and not exists and not pending:
                message = f"{where}: {path} does not exist (workspace {ws})"
                hint = f"run the task that produces it, or override {p.name}=PATH"
                if allow_missing_inputs:
                    warnings.append(message)
                else:
                    issues.append(Issue(message, hint=hint))
            elif check_inputs and ptype == DIRECTORY and kind == FILE:
                issues.append(Issue(f"{where}: {path} is a file, but the parameter is a directory", hint=f"override {p.name}=DIR"))
            elif check_inputs and ptype == FILE and kind == DIRECTORY and p.name not in overrides:
                issues.append(Issue(f"{where}: {path} is a directory, but the parameter is a file",
                                    hint=f"give {p.name}={value} on the command line to pass a directory on purpose, or override {p.name}=FILE"))
        else:
            if not absolute:
                real = os.path.realpath(path)
                if not _inside(str(path), str(ws)) or not _inside(real, real_ws):
                    issues.append(
                        Issue(f"{where}: {value} resolves to {real}, outside the workspace {ws}", hint="write an absolute path to put outputs elsewhere")
                    )
            if ptype == DIRECTORY and kind == FILE:
                issues.append(Issue(f"{where}: {path} is a file, but the output is a directory", hint=f"remove it or override {p.name}=DIR"))
            elif ptype == FILE and p.mount_path is not None and (path.is_dir() or (os.path.lexists(path) and not path.is_file())):
                issues.append(Issue(f"{where}: {path} is not a regular file, but the volume is a file mounted at {p.mount_path}",
                                    hint=f"remove it or override {p.name}=FILE"))
        params.append(ResolvedParam(p.name, p.io, ptype, path, p.opts, exists, p.mount_path))
    if not issues:
        from cuberun.safety import output_issues

        issues = output_issues(cube, task, params, overrides)
    if issues:
        raise SpecError(issues)
    return ResolvedTask(cube, task, ws, tuple(params), dict(overrides), tuple(warnings))


def select_tasks(cube: Cube, spec: str | None) -> list[str]:
    """`--task=a,b` -> task names; none given -> the only task, or every task in order."""
    names = list(cube.tasks)
    if not spec:
        return names
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    if not chosen:
        raise UsageError("--task is empty", "name a task: " + ", ".join(names))
    for name in chosen:
        if name not in cube.tasks:
            raise UsageError(f"unknown task '{name}' in {cube.file}", did_you_mean(name, names, "task") + f" (tasks: {', '.join(names)})")
    return chosen
