"""The contract every runner implements, and the values that flow through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask
    from cuberun.schema import Schema
    from cuberun.spec.model import Cube


@dataclass(frozen=True)
class RunOptions:
    """Options of one invocation that every runner honours (mapped per backend)."""

    gpus: str | None = None  # validated: "all", "N", "device=a,b"; None = from the cube's platform block
    network: str | None = None
    security: str | None = None
    memory: str | None = None
    cpus: str | None = None
    mount: str | None = None  # "ro" | "rw": input mount mode for every input
    allow_missing_inputs: bool = False
    relax_pins: bool = False  # local: relax ==/~= pins that have no build for the interpreter
    rebuild_env: bool = False  # local: build the managed env again (also after a remembered failure)
    strict_outputs: bool = False  # a task that exits 0 without writing a declared output fails
    allow_run_args: bool = False  # the cube's raw run arguments beyond the policy's allow-list (policy.py)
    timeout: float | None = None  # seconds per task; the task is stopped and exits 124 (docker/podman)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # the invocation's -P assignments to the cube config (runner.* excluded), for runners that run
    # cuberun again elsewhere (slurm jobs, ssh); set by execute.make_runner
    config_overrides: tuple[str, ...] = ()


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
        from cuberun.records import redact_env

        parts = []
        if self.cwd:
            parts.append(f"cd {shell_quote(self.cwd)} &&")
        parts.extend(f"{printable(k)}={shell_quote(v)}" for k, v in sorted(redact_env(self.env).items()))
        parts.append(" ".join(shell_quote(a) for a in self.argv))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "argv": list(self.argv), "cwd": self.cwd, "env": dict(self.env)}


class Runner(ABC):
    """A backend. Subclasses declare their config schema and implement the steps."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the cube section the runner reads (e.g. "docker")
    schema: ClassVar[Schema] = {}  # platform config keys (settings entry < cube section < -P)
    outputs_on_host: ClassVar[bool] = True  # False: outputs stay remote (a PVC), so cuberun cannot check them after a run

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

    @abstractmethod
    def run_steps(self, task: ResolvedTask) -> list[Step]:
        """The exact commands that run `task` (pure): the --dry-run output."""

    @abstractmethod
    def run(self, task: ResolvedTask, log_path: str) -> Outcome:
        """Run the task, stream its output (also into log_path), return the outcome."""

    # -- optional: several tasks as one submission ------------------------------------------
    supports_chain: ClassVar[bool] = False  # True: execute.run_tasks hands multi-task runs to run_chain

    def run_chain(self, tasks: Sequence[ResolvedTask], log_paths: Sequence[str]) -> list[Outcome]:
        """Run tasks that depend on each other in order, submitted together (e.g. Slurm jobs linked
        by afterok). Returns one Outcome per task that ran, in order, ending at the first non-zero
        one; the runner makes sure the tasks after it never run. Only called when supports_chain."""
        raise NotImplementedError(f"runner '{self.name}' does not run chains")

    # -- optional: independent tasks as one submission (sweeps) -----------------------------------
    supports_array: ClassVar[bool] = False  # True: execute hands a sweep's variants to run_array

    def run_array(self, tasks: Sequence[ResolvedTask], log_paths: Sequence[str]) -> list[Outcome]:
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

        from cuberun.resolve import expand_path
        from cuberun.runners.pyenv import cache_dir

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

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """What identifies how `task` runs, for up-to-date checks: the exact commands, plus
        anything else the result depends on (image digest, env). Must be stable across runs."""
        return {"runner": self.name, "command": [list(s.argv) for s in self.run_steps(task)]}

    def far_end(self, task: ResolvedTask) -> dict[str, Any] | None:
        """For runners that hand the task to another cuberun (a remote host): that side's identity
        of the task now (its runner fingerprint), asked only when everything known here is
        unchanged. None: nothing beyond this side's fingerprint (the default)."""
        return None

    def far_end_of(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        """The far end's identity as the run that just ended saw it (from the run's details)."""
        return None

    def describe_config(self) -> dict[str, Any]:
        return dict(self.config)
