"""The library API for platforms that embed cuberun: typed results, typed exceptions, no printing
unless asked. See docs/api.md.

    from cuberun import api

    result = api.run("path/to/cube", task="prepare", platform="docker", volumes={"data_path": "/data/raw"})
    if result.ok:
        print(result.tasks[0].record_path, result.tasks[0].image)

Every function raises a subclass of `cuberun.api.Error` with the same one-line message the CLI
prints (`str(exc)`, and `exc.lines()` for every problem of an invalid file); `exc.exit_code` is
the CLI's exit code. `run` and `plan` capture everything cuberun and the task would print unless
`echo=True` (cuberun's messages are in `RunResult.messages`, each task's output in the file
`TaskRun.log_path`): stdout/stderr are redirected for the duration of the call, so call them from
one thread at a time. `cancel()` (from another thread or
a signal handler) stops the running task like Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cuberun.errors import BackendError, BusyError, RunnerUnavailable, SpecError, TaskFailed, UsageError
from cuberun.errors import CuberunError as Error
from cuberun.valueclass import dataclass, field

__all__ = [
    "BackendError", "BusyError", "Error", "LockResult", "Plan", "RunResult", "RunnerUnavailable", "SpecError", "TaskFailed", "TaskRun", "UsageError",
    "Validation", "cancel", "describe", "load", "lock", "plan", "run", "validate",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Validation:
    file: str
    format: str  # "2.0", "container_config", or a legacy format
    tasks: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    platform: str
    runner: str
    tasks: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]  # the exact argv of every step, in order
    policy: Mapping[str, Any] = field(default_factory=dict)  # task -> the run policy (policy.py), where the runner maps one


@dataclass(frozen=True)
class TaskRun:
    task: str
    status: str  # succeeded, succeeded-with-warnings, up-to-date, failed, interrupted, cancelled, ...
    exit_code: int
    run_id: str | None
    record_path: str | None
    log_path: str | None  # the task's own output (stdout and stderr)
    outputs: Mapping[str, str]  # output name -> host path
    image: Mapping[str, Any] | None = None  # {ref, id, repo_digests} of the image that ran
    policy: Mapping[str, Any] | None = None
    attempt: int = 1  # the attempt that ended the run (retries)
    attempts: tuple[Mapping[str, Any], ...] = ()  # each attempt's {attempt, exit_code, elapsed_s, ...} when the task was retried


@dataclass(frozen=True)
class RunResult:
    tasks: tuple[TaskRun, ...]
    messages: str = ""  # what cuberun and the tasks printed (echo=False)

    @property
    def ok(self) -> bool:
        return all(t.exit_code == 0 for t in self.tasks)

    @property
    def exit_code(self) -> int:
        return next((t.exit_code for t in self.tasks if t.exit_code != 0), 0)


def load(mlcube: PathLike, *, workspace: PathLike | None = None, params: Sequence[str] = ()) -> Any:
    """The cube (cuberun.spec.Cube) of an mlcube.yaml or container_config.yaml (a directory or the file)."""
    from cuberun.spec import load_cube

    return load_cube(mlcube, workspace=workspace, overrides=params)


def validate(mlcube: PathLike, *, workspace: PathLike | None = None, params: Sequence[str] = ()) -> Validation:
    """Check a cube file; raises SpecError (every problem in `exc.lines()`)."""
    cube = load(mlcube, workspace=workspace, params=params)
    return Validation(str(cube.file), cube.format, tuple(cube.tasks), tuple(w.render() for w in cube.warnings))


def describe(mlcube: PathLike, *, workspace: PathLike | None = None, params: Sequence[str] = ()) -> dict[str, Any]:
    """What `cuberun describe --json` prints, as a dict."""
    from cuberun.describe import describe_data

    return describe_data(load(mlcube, workspace=workspace, params=params))


def _options(gpus: str | None, network: str | None, allow_run_args: bool, timeout: float | None = None, image_sha256: str | None = None,
             decryption_key: PathLike | None = None, retries: int | None = None, retry_delay: float | None = None,
             no_lock: bool = False) -> Any:
    from cuberun.gpus import parse_gpus
    from cuberun.retry import MAX_RETRIES
    from cuberun.runners.base import RunOptions

    parse_gpus(gpus)
    if timeout is not None and not timeout > 0:
        raise UsageError(f"timeout {timeout!r} is not a positive number of seconds", "e.g. timeout=3600")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES):
        raise UsageError(f"retries {retries!r} is not a whole number from 0 to {MAX_RETRIES}", "e.g. retries=2")
    if retry_delay is not None and not retry_delay >= 0:
        raise UsageError(f"retry_delay {retry_delay!r} is not a number of seconds (0 or more)", "e.g. retry_delay=5")
    return RunOptions(gpus=gpus, network=network, allow_run_args=allow_run_args, timeout=timeout, image_sha256=image_sha256,
                      decryption_key=os.fspath(decryption_key) if decryption_key is not None else None, retries=retries,
                      retry_delay=retry_delay, ignore_lock=no_lock)


def _prepare(mlcube: PathLike, task: str | Sequence[str] | None, platform: str | None, volumes: Mapping[str, PathLike] | None,
             workspace: PathLike | None, params: Sequence[str], options: Any) -> tuple[Any, Any, list[str], dict[str, str]]:
    from cuberun import graph
    from cuberun.execute import make_runner
    from cuberun.resolve import parse_overrides, select_tasks

    cube = load(mlcube, workspace=workspace, params=params)
    names = select_tasks(cube, task if task is None or isinstance(task, str) else ",".join(task))
    involved = graph.order(cube, names, with_deps=True)
    items = [f"{k}={os.fspath(v)}" for k, v in (volumes or {}).items()]
    overrides = parse_overrides(items, [cube.tasks[n] for n in involved])
    return cube, make_runner(cube, platform, options, params), names, overrides


@contextlib.contextmanager
def _captured(echo: bool) -> Iterator[io.StringIO]:
    sink = io.StringIO()
    if echo:
        yield sink
        return
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


def plan(mlcube: PathLike, task: str | Sequence[str] | None = None, *, platform: str | None = None,
         volumes: Mapping[str, PathLike] | None = None, workspace: PathLike | None = None, params: Sequence[str] = (),
         gpus: str | None = None, network: str | None = None, allow_run_args: bool = False, image_sha256: str | None = None,
         decryption_key: PathLike | None = None) -> Plan:
    """The exact commands `run` would execute (the --dry-run), and the policy of each task; runs nothing."""
    import json

    from cuberun.execute import run_tasks

    cube, runner, names, overrides = _prepare(mlcube, task, platform, volumes, workspace, params,
                                              _options(gpus, network, allow_run_args, None, image_sha256, decryption_key))
    with _captured(False) as sink:
        run_tasks(cube, runner, names, overrides, dry_run=True, as_json=True)
    text = sink.getvalue()
    data = json.loads(text[text.index("{"):])
    return Plan(runner.platform, runner.name, tuple(data["tasks"]), tuple(tuple(s["argv"]) for s in data["steps"]), data.get("policy") or {})


def run(mlcube: PathLike, task: str | Sequence[str] | None = None, *, platform: str | None = None,
        volumes: Mapping[str, PathLike] | None = None, workspace: PathLike | None = None, params: Sequence[str] = (),
        gpus: str | None = None, network: str | None = None, allow_run_args: bool = False, force: bool = False,
        timeout: float | None = None, echo: bool = False, image_sha256: str | None = None,
        decryption_key: PathLike | None = None, retries: int | None = None, retry_delay: float | None = None,
        no_lock: bool = False) -> RunResult:
    """Run task(s) (default: every task, in order). A task that fails is a result with its exit
    code, not an exception; invalid input, an unusable backend or a busy output raise.
    `image_sha256` checks a container_config.yaml archive or SIF (a URL needs one);
    `decryption_key` is the file holding the passphrase of an Encrypted* image; `no_lock` skips
    the check of the image against cuberun.lock (docker/podman, see `lock`)."""
    from cuberun.execute import run_tasks

    cube, runner, names, overrides = _prepare(mlcube, task, platform, volumes, workspace, params,
                                              _options(gpus, network, allow_run_args, timeout, image_sha256, decryption_key, retries,
                                                       retry_delay, no_lock))
    with _captured(echo) as sink:
        try:
            results = run_tasks(cube, runner, names, overrides, force=force)
        except TaskFailed as exc:  # a task that ran and failed is a result, not an error
            if not getattr(exc, "results", None):
                raise
            results = list(exc.results)  # type: ignore[attr-defined]
    return RunResult(tuple(_task_run(cube, r) for r in results), sink.getvalue())


def _task_run(cube: Any, result: Any) -> TaskRun:
    import json

    record_path = log_path = None
    data: dict[str, Any] = {}
    if result.run_id:
        path = Path(cube.workspace) / ".cuberun" / "runs" / result.run_id / "record.json"
        if path.is_file():
            record_path = str(path)
            log_path = str(path.with_name("output.log")) if path.with_name("output.log").is_file() else None
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text(encoding="utf-8"))
    params = data.get("parameters") or {}
    outputs = {str(k): str(v.get("path")) for k, v in params.items() if isinstance(v, dict) and v.get("io") == "output"}
    attempts = tuple(a for a in data.get("attempts") or () if isinstance(a, dict))
    return TaskRun(result.task, result.status, result.exit_code, result.run_id, record_path, log_path, outputs, data.get("image"),
                   data.get("policy"), int(data.get("attempt") or 1), attempts)


def cancel() -> None:
    """Stop the running task(s) like Ctrl-C: the container is stopped and removed, the record says interrupted."""
    import signal

    from cuberun.process import CANCEL

    CANCEL.handler(signal.SIGINT, None)


@dataclass(frozen=True)
class LockResult:
    path: str  # the lock file written (cuberun.lock next to the cube file)
    images: Mapping[str, Mapping[str, str]]  # image reference -> {"digest": ...} or, without a registry digest, {"id": ...}


def lock(mlcube: PathLike, *, platform: str | None = None, workspace: PathLike | None = None, params: Sequence[str] = (),
         pull: bool = False, echo: bool = False) -> LockResult:
    """Resolve the digest of the image the cube's tasks use (docker/podman: pulled or built first
    when missing; with `pull`, pulled again to take the registry's current image) and write it to
    cuberun.lock next to the cube file (other entries kept). Later runs verify against it."""
    from cuberun.execute import make_runner
    from cuberun.runners.base import Runner, RunOptions

    cube = load(mlcube, workspace=workspace, params=params)
    runner = make_runner(cube, platform, RunOptions(ignore_lock=True), params)
    if platform is None and type(runner).lock_images is Runner.lock_images:
        runner = make_runner(cube, "docker", RunOptions(ignore_lock=True), params)
    if type(runner).lock_images is Runner.lock_images:
        raise UsageError(f"cuberun lock locks the images of the docker and podman platforms, not '{runner.platform}'",
                         "use --platform=docker or --platform=podman")
    with _captured(echo):
        reason = runner.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        done = runner.lock_images(pull)
    if done is None:
        raise UsageError(f"platform '{runner.platform}' has no images to lock", "use --platform=docker or --platform=podman")
    path, entries = done
    return LockResult(path, entries)
