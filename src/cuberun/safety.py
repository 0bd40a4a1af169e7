"""Data-safety invariants, checked before anything runs, whatever the runner.

A task's output may never be (or contain, or lie inside) one of the task's inputs, the cube's
own files (mlcube.yaml, its programs), the workspace root, or cuberun's state folder
(`<workspace>/.cuberun`, or that of another workspace). The one exception is a resumable
checkpoint: an input declared in the cube on exactly the path of the task's own output
(`is_checkpoint`). Two tasks of one run that write the same path are ordered (graph.write_after).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from cuberun.errors import Issue
from cuberun.safeio import shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cuberun.resolve import ResolvedParam
    from cuberun.spec.model import Cube, Param, Task

STATE_FOLDER = ".cuberun"
VIRTUAL_ROOTS = ("/proc", "/sys")  # kernel file systems: never a workspace


def _inside(path: str, root: str) -> bool:
    """`path` is `root` or lies under it (both normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path)


def is_checkpoint(inp: Param, out: Param, workspace: Path) -> bool:
    """Whether an input at (or inside) an output of its own task is a resumable checkpoint the
    cube declares (mnist_fl's model_in/model_out; resolve.is_resumable_checkpoint): their defaults,
    as the cube writes them, already put the input there. The same relation reached through an
    override (hello `chat=names/alice.txt`) is not: the task would overwrite its input. The one
    place that decides which aliasing is legal."""
    from cuberun.resolve import expand_path, is_resumable_checkpoint

    declared_in, declared_out = expand_path(inp.default, workspace)[0], expand_path(out.default, workspace)[0]
    if declared_in == declared_out and inp.type not in (out.type, "unknown"):
        return False
    return is_resumable_checkpoint(declared_in, [declared_out])


def output_issues(cube: Cube, task: Task, params: Sequence[ResolvedParam], overrides: Mapping[str, str]) -> list[Issue]:
    """Every way an output of `task` would destroy data it must not touch, one Issue each."""
    outputs = [p for p in params if p.io == "output"]
    if not outputs:
        return []
    issues: list[Issue] = []
    ws = _real(cube.workspace)
    state = os.path.join(ws, STATE_FOLDER)
    cube_file = _real(cube.file)
    root = _real(cube.root)
    default_ws = _real(cube.root / "workspace")
    inputs = [(p, _real(p.host_path)) for p in params if p.io == "input"]
    for out in outputs:
        path = _real(out.host_path)
        where = f"task '{task.name}', output '{out.name}'"
        fix = f"give it another path ({out.name}=PATH)"

        def refuse(problem: str, hint: str = fix) -> None:
            issues.append(Issue(f"{where}: {shown(out.host_path)} {problem}", hint=hint))  # noqa: B023 - used at once

        if path == ws:
            refuse("is the workspace itself: the task could delete every file in it and cuberun's records")
            continue
        if _inside(ws, path):
            refuse(f"contains the workspace {shown(cube.workspace)}: the task could delete every file in it and cuberun's records")
            continue
        if _inside(path, state):
            refuse(f"is inside cuberun's state folder {shown(state)} (run records, locks, up-to-date state)")
            continue
        if _holds_state(path):
            refuse(f"holds the run records of another workspace ({shown(os.path.join(path, STATE_FOLDER))})")
            continue
        if path == cube_file or _inside(cube_file, path):
            refuse(f"{'is' if path == cube_file else 'contains'} the cube file {shown(cube.file)}",
                   f"{fix}, or choose another --workspace than the cube's folder")
            continue
        if _inside(path, root) and not _inside(path, default_ws) and not any(_inside(path, d) for d in _declared_outputs(cube)) and _occupied(path):
            refuse("is one of the cube's own files (outside its workspace)", f"{fix}, or choose another --workspace than the cube's folder")
            continue
        task_param = {p.name: p for p in task.params}
        for inp, inp_path in inputs:
            if _inside(inp_path, path) and is_checkpoint(task_param[inp.name], task_param[out.name], cube.workspace):
                continue  # a checkpoint the cube declares: the task resumes from its own output
            if path == inp_path:
                refuse(f"is the same path as its input '{inp.name}': the task would overwrite its own input")
            elif _inside(inp_path, path):
                refuse(f"contains its input '{inp.name}' ({shown(inp.host_path)}): the task could overwrite or delete it")
            elif _inside(path, inp_path):
                refuse(f"is inside its input '{inp.name}' ({shown(inp.host_path)}): the task would change its own input")
    return issues


_DECLARED: dict[int, tuple[object, list[str]]] = {}


def _declared_outputs(cube: Cube) -> list[str]:
    """The outputs every task declares by default (in the current workspace): with --workspace
    set to the cube's folder, these are where earlier runs wrote, not the cube's own files.
    Computed once per cube (only for outputs inside the cube's folder)."""
    from cuberun.resolve import expand_path

    known = _DECLARED.get(id(cube))
    if known is None or known[0] is not cube:
        known = (cube, [_real(expand_path(p.default, cube.workspace)[0]) for t in cube.tasks.values() for p in t.outputs])
        _DECLARED[id(cube)] = known
    return known[1]


def _holds_state(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(os.path.join(path, STATE_FOLDER)).st_mode)
    except (OSError, ValueError):
        return False


def _occupied(path: str) -> bool:
    """A file, or a folder with something in it."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    if not stat.S_ISDIR(st.st_mode):
        return True
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except OSError:
        return True


def workspace_issue(ws: Path) -> Issue | None:
    """Why `ws` cannot be a workspace (it may not exist yet: it is created when needed)."""
    text = str(ws)
    try:
        os.lstat(text)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        from cuberun.safeio import os_problem

        return Issue(f"the workspace {shown(ws)} cannot be used: {os_problem(exc)}", hint="pass --workspace=DIR with a directory")
    else:
        try:
            st = os.stat(text)
        except OSError as exc:
            from cuberun.safeio import os_problem

            target = os.readlink(text) if os.path.islink(text) else text
            problem = os_problem(exc) if exc.errno != 2 else f"it is a symbolic link to {shown(target)}, which does not exist"
            return Issue(f"the workspace {shown(ws)} cannot be used: {problem}",
                         hint="create the link's target, or pass --workspace=DIR with a directory")
        if not stat.S_ISDIR(st.st_mode):
            return Issue(f"the workspace {shown(ws)} is not a directory", hint="pass --workspace=DIR with a directory (it is created if missing)")
    real = _real(text)
    for virtual in VIRTUAL_ROOTS:
        if _inside(real, virtual):
            return Issue(f"the workspace {shown(ws)} is on the kernel's virtual file system {virtual}",
                         hint="pass --workspace=DIR with a directory on a real file system")
    return None


def prepare_workspace(ws: Path) -> None:
    """Before a run writes anything: the workspace and its state folder exist and are folders."""
    from cuberun.safeio import make_dirs

    hint = "pass --workspace=DIR with a directory you can write to"
    make_dirs(ws, what="the workspace", hint=hint)
    state = ws / STATE_FOLDER
    try:
        st = os.lstat(state)
    except FileNotFoundError:
        st = None
    except OSError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode) and not (stat.S_ISLNK(st.st_mode) and os.path.isdir(state)):
        from cuberun.errors import UsageError
        from cuberun.safeio import kind

        raise UsageError(f"{shown(state)} is {kind(st.st_mode)}, but cuberun keeps its run records and locks in a folder there",
                         "move it away (cuberun creates the folder)")
    make_dirs(state, what="cuberun's state folder", hint=hint)
    for sub in ("runs", "state", "locks"):
        path = state / sub
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            from cuberun.errors import UsageError
            from cuberun.safeio import os_problem

            raise UsageError(f"{shown(path)} cannot be used: {os_problem(exc)}", "move it away (cuberun creates the folder)") from None
        if not stat.S_ISDIR(mode):
            from cuberun.errors import UsageError
            from cuberun.safeio import kind

            raise UsageError(f"{shown(path)} is {kind(mode)}, but cuberun keeps its {sub} in a folder there", "move it away (cuberun creates the folder)")
    if not os.access(state, os.W_OK | os.X_OK):
        from cuberun.errors import UsageError

        raise UsageError(f"cannot write in {shown(state)}: permission denied", hint)
