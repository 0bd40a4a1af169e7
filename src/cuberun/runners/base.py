"""The contract every runner implements, and the values that flow through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, TypeVar

    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask
    from cuberun.schema import Schema
    from cuberun.spec.model import Cube


@dataclass(frozen=True)
class Resources:
    """What a task asks of the machine, in backend-free terms; each runner maps them (docker
    --cpus/--memory/--gpus, sbatch --cpus-per-task/--mem/--time, a Kubernetes resource limit)."""

    cpus: str | None = None  # a count ("2", "0.5") or a CPU list ("0-3"), as the user gave it
    memory: str | None = None  # a size: "512m", "4g"
    gpus: str | None = None  # "all", "N", "device=a,b"; None: from the cube's platform block
    time: str | None = None  # a wall-clock limit: "30", "1:00:00", "2-00:00:00"

    @property
    def empty(self) -> bool:
        return self.cpus is None and self.memory is None and self.gpus is None and self.time is None


@dataclass(frozen=True)
class RunOptions:
    """Options of one invocation that every runner honours, in backend-free terms (each runner
    maps them to its backend, or says in one line that it cannot)."""

    gpus: str | None = None  # validated: "all", "N", "device=a,b"; None = from the cube's platform block
    network: str | None = None  # a network policy: "none", "host", or a network the backend knows
    security: str | None = None  # a confinement option the backend understands (container runners)
    memory: str | None = None  # a memory limit: "512m", "4g"
    cpus: str | None = None  # a CPU count or list
    mount: str | None = None  # "ro" | "rw": input mount mode for every input
    allow_missing_inputs: bool = False
    relax_pins: bool = False  # local: relax ==/~= pins that have no build for the interpreter
    rebuild_env: bool = False  # local: build the managed env again (also after a remembered failure)
    strict_outputs: bool = False  # a task that exits 0 without writing a declared output fails
    allow_run_args: bool = False  # the cube's raw run arguments beyond the policy's allow-list (policy.py)
    timeout: float | None = None  # seconds per attempt of each task, over the cube's tasks.<t>.timeout (retry.py); exit 124
    retries: int | None = None  # attempts after a failed first one, over the cube's tasks.<t>.retries (retry.py)
    retry_delay: float | None = None  # the back-off's base in seconds (doubling per attempt, bounded; retry.py)
    ignore_lock: bool = False  # docker/podman: do not verify the image against cuberun.lock (--no-lock)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # the invocation's -P assignments to the cube config (runner.* excluded), for runners that run
    # cuberun again elsewhere (slurm jobs, ssh); set by runners.factory.make_runner
    config_overrides: tuple[str, ...] = ()
    time: str | None = None  # a wall-clock limit (batch runners)
    image_sha256: str | None = None  # the sha256 of a container_config.yaml archive / SIF (imagefetch.py)
    decryption_key: str | None = None  # the passphrase FILE of an encrypted archive / SIF (decrypt.py); never the passphrase

    @property
    def resources(self) -> Resources:
        """The resource requests of the invocation, in one value."""
        return Resources(cpus=self.cpus, memory=self.memory, gpus=self.gpus, time=self.time)


@dataclass(frozen=True)
class Step:
    """One command a runner executes: what --dry-run prints and golden tests pin."""

    argv: tuple[str, ...]
    purpose: str = "run"
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def display(self) -> str:
        """The command as one shell-quoted line, for people (never executed); secrets redacted;
        control characters escaped ($'...'), never printed raw."""
        from cuberun.console import printable, shell_quote
        from cuberun.secretid import redact_env

        parts = []
        if self.cwd:
            parts.append(f"cd {shell_quote(self.cwd)} &&")
        parts.extend(f"{printable(k)}={shell_quote(v)}" for k, v in sorted(redact_env(self.env).items()))
        parts.append(" ".join(shell_quote(a) for a in self.argv))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The step as `--dry-run --json` and the run record show it: secret values redacted."""
        from cuberun.secretid import redact_env

        return {"purpose": self.purpose, "argv": list(self.argv), "cwd": self.cwd, "env": redact_env(self.env)}


@dataclass(frozen=True)
class TaskPlan:
    """How a runner will run one resolved task, computed once (`Runner.plan`, after `configure`)
    and consumed by the run record, the up-to-date identity and the run itself, so that all of
    them see the same commands and names. Making a plan starts nothing.

    `values` holds what the runner decided for this run and must not decide again (a container
    or session name with a random part, the mounts), read back with `value(key)`."""

    task: ResolvedTask
    steps: tuple[Step, ...]
    values: Mapping[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        return self.values[key]


def _takes_tasks(fn: Any) -> bool:
    """A runner method of the first contract: its first parameter is `task` or `tasks`."""
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_argcount > 1 and code.co_varnames[1] in ("task", "tasks")


def _task_of(item: Any) -> Any:
    return item.task if isinstance(item, TaskPlan) else item


def _from_plans(fn: Any, many: bool) -> Any:
    """Wrap a method of the first contract (`run(task, log_path)`, `run_chain(tasks, ...)`) so
    that it accepts plans: it is given each plan's task."""
    import functools

    @functools.wraps(fn)
    def wrapper(self: Runner, items: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self, [_task_of(i) for i in items] if many else _task_of(items), *args, **kwargs)

    return wrapper


class Runner(ABC):
    """A backend. Subclasses declare their config schema and implement the steps.

    The run of a task: `plan(task)` once (pure: the steps and what the runner decided, see
    TaskPlan), then `identity(plan)` for the up-to-date check, the plan's steps into the run
    record, and `run(plan, log_path)`. A runner written for the first contract, whose `run`,
    `run_chain` or `run_array` take `task`/`tasks`, still works: it is given the plans' tasks.
    """

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the cube section the runner reads (e.g. "docker")
    schema: ClassVar[Schema] = {}  # platform config keys (settings entry < cube section < -P)
    enforces_timeout: ClassVar[bool] = False  # True: a task's time limit (retry.py) is applied (else a warning says it is ignored)
    native_retries: ClassVar[bool] = False  # True: the backend retries a failed task itself (k8s backoffLimit) and reports the attempts
    outputs_on_host: ClassVar[bool] = True  # False: outputs stay remote (a PVC), so cuberun cannot check them after a run
    # what the runner contributes to the core, which reads no backend's keys itself:
    identity_labels: ClassVar[Mapping[str, str]] = {}  # fingerprint key -> what it is, for "will run: <label> changed"
    image_keys: ClassVar[tuple[str, str | None] | None] = None  # fingerprint keys of (image reference, image digest)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, many in (("run", False), ("run_chain", True), ("run_array", True)):
            fn = cls.__dict__.get(name)
            if fn is not None and _takes_tasks(fn):
                setattr(cls, name, _from_plans(fn, many))

    def __init__(self, cube: Cube, config: dict[str, Any], platform: str, options: RunOptions) -> None:
        self.cube = cube
        self.config = config
        self.platform = platform
        self.options = options

    @classmethod
    def section_schema(cls) -> Schema:
        return cls.schema

    def unavailable_reason(self) -> str | None:
        """Why this runner cannot work here (None when it can)."""
        return None

    def configure_steps(self) -> list[Step]:
        """What `configure` would run (pure)."""
        return []

    def configure(self) -> None:  # noqa: B027 - a no-op is the right default
        """Prepare the platform (env, image, remote). Idempotent and quiet when nothing changed."""

    def release(self) -> None:  # noqa: B027 - a no-op is the right default
        """The invocation ended (done, failed or interrupted): drop what configure made that must
        not outlive it (a decrypted image). Idempotent."""

    @abstractmethod
    def run_steps(self, task: ResolvedTask) -> list[Step]:
        """The exact commands that run `task` (pure): the --dry-run output."""

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """How `task` runs (pure, once per run of a task): by default its `run_steps`."""
        return TaskPlan(task, tuple(self.run_steps(task)))

    @abstractmethod
    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        """Run the planned task, stream its output (also into log_path), return the outcome."""

    def task_graph(self, overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """The cube's task graph: task -> the tasks it runs after (the producers of its inputs, by
        path, and `cuberun.depends_on`), for a runner that submits tasks as one workflow (kubeflow).
        The contract hands it over: a runner never imports the orchestration (`graph`, `execute`)."""
        from cuberun import graph

        return graph.dependencies(self.cube, overrides)

    # -- optional: several tasks as one submission ------------------------------------------
    supports_chain: ClassVar[bool] = False  # True: execute.run_tasks hands multi-task runs to run_chain

    def run_chain(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        """Run tasks that depend on each other in order, submitted together (e.g. Slurm jobs linked
        by afterok). Returns one Outcome per task that ran, in order, ending at the first non-zero
        one; the runner makes sure the tasks after it never run. Only called when supports_chain."""
        raise NotImplementedError(f"runner '{self.name}' does not run chains")

    # -- optional: independent tasks as one submission (sweeps) -----------------------------------
    supports_array: ClassVar[bool] = False  # True: execute hands a sweep's variants to run_array

    def run_array(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        """Run independent tasks (the variants of a sweep) as one submission, e.g. a Slurm job
        array. Returns one Outcome per task, in order (interrupted ones included). Only called
        when supports_array, with tasks of one runner configuration."""
        raise NotImplementedError(f"runner '{self.name}' does not run arrays")

    def array_steps(self, tasks: Sequence[ResolvedTask]) -> list[Step]:
        """What run_array would run (pure): the --dry-run output of a sweep."""
        return [step for task in tasks for step in self.run_steps(task)]

    def inspect(self) -> dict[str, Any]:
        return {"runner": self.name, "platform": self.platform}

    def image_identity(self) -> dict[str, Any] | None:
        """The image that runs, by digest, for the run record (after configure); None: no image."""
        return None

    def lock_images(self, pull: bool = False) -> tuple[str, dict[str, dict[str, str]]] | None:
        """`cuberun lock`: make the runner's images present (with `pull`: the registry's current
        ones), write their digests into the lock file next to the cube file and return (its path,
        every entry: reference -> {"digest"} or {"id"}). None: this runner locks no images."""
        return None

    def policy(self, task: ResolvedTask) -> Policy | None:
        """The run policy this runner applies to `task` (policy.py); None: the runner maps none."""
        return None

    def launch_problems(self, tasks: list[str]) -> list[str]:
        """Why these tasks cannot be started on this platform (validate), without running anything."""
        return []

    def _code_scope(self, extra_roots: Sequence[Any] = ()) -> tuple[list[Any], list[str]]:
        """The folders of the cube's code and what to leave out: the workspace, the cube file,
        cuberun's caches and every task's outputs."""
        from pathlib import Path

        from cuberun.paths import cache_dir
        from cuberun.resolve import expand_path

        ws = self.cube.workspace
        exclude = [str(ws), str(self.cube.root / "workspace"), str(self.cube.file), str(cache_dir())]
        exclude += [str(expand_path(p.default, ws)[0]) for t in self.cube.tasks.values() for p in t.outputs]
        return [Path(self.cube.root), *extra_roots], exclude

    def cube_code(self, extra_roots: Sequence[Any] = ()) -> Any:
        """The code identity (codeid.CodeId) of the cube folder (plus `extra_roots`)."""
        from cuberun import codeid

        memo: dict[tuple[str, ...], Any] = self.__dict__.setdefault("_cube_code_memo", {})  # once per runner: one invocation
        key = tuple(str(r) for r in extra_roots)
        if key not in memo:
            roots, exclude = self._code_scope(extra_roots)
            memo[key] = codeid.identity(roots, "code", exclude)
        return memo[key]

    def sections(self) -> list[str] | None:
        """The cube sections whose keys change how this platform runs a task (a swept config key
        must be in one); None when it cannot be told here (a remote platform decides)."""
        own = [self.section] if self.section else []
        return own if "docker" in own else [*own, "docker"]  # the others take the image (or the host command) from docker:

    def identity(self, plan: TaskPlan) -> dict[str, Any]:
        """What identifies how the planned task runs, for up-to-date checks: the exact commands,
        plus anything else the result depends on (image digest, env). Must be stable across runs
        (leave out what the plan chose at random). Default: `fingerprint(task)` when the runner
        defines one, else the plan's commands."""
        if type(self).fingerprint is not Runner.fingerprint:
            return self.fingerprint(plan.task)
        return {"runner": self.name, "command": [list(s.argv) for s in plan.steps]}

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The identity of `task` planned afresh (runners may override this instead of `identity`)."""
        if type(self).identity is not Runner.identity:
            return self.identity(self.plan(task))
        return {"runner": self.name, "command": [list(s.argv) for s in self.run_steps(task)]}

    def far_end(self, task: ResolvedTask) -> dict[str, Any] | None:
        """For runners that hand the task to another cuberun (a remote host): that side's identity
        of the task now (its runner fingerprint), asked only when everything known here is
        unchanged. None: nothing beyond this side's fingerprint (the default)."""
        return None

    def far_end_of(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        """The far end's identity as the run that just ended saw it (from the run's details)."""
        return None

    @classmethod
    def container_image(cls, fingerprint: Mapping[str, Any]) -> tuple[str, str] | None:
        """The container image (reference, digest or "") a run used, read from the runner's own
        fingerprint (provenance says it); None: the runner runs no image."""
        if cls.image_keys is None:
            return None
        ref_key, digest_key = cls.image_keys
        ref = fingerprint.get(ref_key)
        if not ref:
            return None
        digest = fingerprint.get(digest_key) if digest_key else None
        return str(ref), str(digest or "")

    def describe_config(self) -> dict[str, Any]:
        return dict(self.config)


if TYPE_CHECKING:
    _F = TypeVar("_F", bound=Callable[..., Any])


def releasing(fn: _F) -> _F:
    """Wrap a function of (cube, runner, ...) so that `runner.release()` runs however it ends."""
    import functools

    @functools.wraps(fn)
    def wrapper(cube: Any, runner: Runner, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(cube, runner, *args, **kwargs)
        finally:
            runner.release()

    return wrapper  # type: ignore[return-value]
