"""What the container runners (docker/podman, singularity/apptainer, charliecloud) share.

`ContainerRunner` holds the pattern once: the engine executable from the config, the cube's
`docker:` section as a fallback source, the run options mapped onto config keys, the mount
layout (inputs read-only unless asked otherwise, outputs writable; `flag H:T[:ro]`, or a
`--mount` field list when the path holds a character the short form splits on), the task's
environment (secret-looking names never carry their value in argv: each engine gets the value
through the client's own environment), the invoking user, engine-error classification
(missing executable, daemon down, socket permission, sudo asking for a password) and the run
itself (stream, cancel hook, failure classification). A runner keeps only what its engine does
differently: the image (build, pull, SIF, directory image) and the flags of its command line.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cuberun.errors import SpecError
from cuberun.runners.argv import program_name
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from cuberun.gpus import GpuRequest
    from cuberun.process import Outcome
    from cuberun.resolve import Layout, ResolvedTask

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
DAEMON_DOWN = ("cannot connect to the docker daemon", "is the docker daemon running", "cannot connect to podman")


def is_secret(name: str) -> bool:
    """Whether a variable's value must stay out of argv, dry-run output and records (the one
    pattern the records use)."""
    from cuberun.secretid import SECRET_NAME

    return SECRET_NAME.search(name) is not None


# -- mounts ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BindSyntax:
    """How an engine spells a bind mount: `flag HOST:TARGET[:ro]`, or, when the host path holds
    one of `splits_on`, `mount_flag type=bind,SRC=HOST,DST=TARGET[,RO]` (fields CSV-quoted when
    `csv`); `mount_flag=None`: such a path cannot be bound (the caller reports it)."""

    flag: str
    splits_on: str = ":"
    mount_flag: str | None = "--mount"
    src: str = "source"
    dst: str = "target"
    ro: str = "readonly"
    ro_suffix: str = ":ro"
    csv: bool = True

    def can_bind(self, host: str) -> bool:
        return self.mount_flag is not None or not any(c in host for c in self.splits_on)

    def args(self, host: str, target: str, readonly: bool) -> list[str]:
        if not any(c in host for c in self.splits_on) or self.mount_flag is None:
            return [self.flag, f"{host}:{target}" + (self.ro_suffix if readonly else "")]
        fields = ["type=bind", f"{self.src}={host}", f"{self.dst}={target}"] + ([self.ro] if readonly else [])
        if self.csv:
            fields = [csv_field(f) for f in fields]
        return [self.mount_flag, ",".join(fields)]


def csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


# -- the task's environment -----------------------------------------------------------------------
@dataclass(frozen=True)
class EnvSyntax:
    """How an engine passes a variable: `flag K=V` (as one token when `joined`, e.g.
    `--set-env=K=V`, else two, e.g. `-e K=V`); a secret goes into the client's environment as
    `secret_prefix + K` (a name-only `flag K` when `name_only`, e.g. docker's `-e K`)."""

    flag: str
    joined: bool = False
    secret_prefix: str = ""
    name_only: bool = False

    def item(self, text: str) -> list[str]:
        return [f"{self.flag}={text}"] if self.joined else [self.flag, text]


def pass_env(items: Iterable[tuple[str, str]], syntax: EnvSyntax, *, via_env: bool = True) -> tuple[list[str], dict[str, str]]:
    """argv items and client-environment entries that give the task `items`. A secret-looking
    name's value never lands in argv unless `via_env` is False (sudo drops our environment)."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for key, value in items:
        if via_env and is_secret(key):
            env[syntax.secret_prefix + key] = value
            if syntax.name_only:
                argv += syntax.item(key)
        else:
            argv += syntax.item(f"{key}={value}")
    return argv, env


def proxy_env(already: Iterable[str]) -> list[tuple[str, str]]:
    """The host's proxy variables that are set and not already given."""
    known = set(already)
    return [(k, os.environ[k]) for k in PROXY_VARS if os.environ.get(k) and k not in known]


def user_spec() -> str:
    return f"{os.getuid()}:{os.getgid()}"


# -- engine messages ------------------------------------------------------------------------------
def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def last_error_line(text: str, looks_like_error: Callable[[str], bool] = lambda _line: False) -> str:
    """The last line that reads like an error (by `looks_like_error` or the word 'error'),
    else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if looks_like_error(line) or "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def engine_problem(text: str, engine: str, executable: Sequence[str]) -> str | None:
    """The engine (not the task) is unusable, told from its error text: the socket is not ours
    to use, the daemon is not running, or sudo asks for a password. None: something else."""
    low = text.lower()
    if "permission denied" in low and ("docker.sock" in low or "daemon socket" in low):
        return (
            f"permission denied on the {engine} socket ({first_line(text)}). "
            f"Hint: add your user to the docker group (sudo usermod -aG docker $USER, then log in again), or set docker: sudo {engine}"
        )
    if any(s in low for s in DAEMON_DOWN):
        host = os.environ.get("DOCKER_HOST")
        where = f" at {host}" if host else ""
        return (
            f"the {engine} daemon is not running{where}. "
            f"Hint: start it (e.g. sudo systemctl start docker, or dockerd), check DOCKER_HOST, or use --platform=local"
        )
    if "a password is required" in low or "a terminal is required" in low:
        return f"'{' '.join(executable)}' asks for a password. Hint: allow it without a password in sudoers, or use the docker group"
    return None


def stream_to_stderr(argv: Sequence[str], purpose: str, cwd: str | None = None) -> tuple[Outcome, str]:
    """Run a preparation step (build, pull, load) with its output on our stderr; returns the
    outcome and the last 8 KiB of the output (for the error message)."""
    from cuberun import progress
    from cuberun.process import stream

    tail = io.BytesIO()
    print(f"cuberun: {purpose}: {shlex.join(argv)}", file=sys.stderr, flush=True)
    echo = progress.shows_output()  # on a terminal the live line stands for the output (-v shows it)
    with progress.activity(purpose, unit="steps") as act:
        outcome = stream(argv, cwd=cwd, log=tail, echo=act.sink(progress.image_line, echo=echo))
    if outcome.exit_code != 0 and not echo:  # show the end of what was hidden
        sys.stderr.write(tail.getvalue()[-4096:].decode("utf-8", "replace"))
    return outcome, tail.getvalue()[-8192:].decode("utf-8", "replace")


@contextmanager
def _input_pipe(data: bytes | None) -> Iterator[int | None]:
    """None (stream()'s default stdin: /dev/null) for None, else the read end of a pipe that
    already holds `data` (less than a pipe's buffer, so writing never blocks), closed for writing."""
    if data is None:
        yield None
        return
    read, write = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write, view) :]
        os.close(write)
        write = -1
        yield read
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


class ContainerRunner(Runner):
    """A runner that starts the task in a container engine's client (one process per task)."""

    enforces_timeout = True  # stream(timeout=...): the container is stopped at the limit

    executable_key: ClassVar[str]  # the config key naming the engine's executable
    default_executable: ClassVar[str]
    bind_syntax: ClassVar[BindSyntax]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configured = False

    # -- the engine ---------------------------------------------------------------------------
    @property
    def executable(self) -> list[str]:
        return as_tokens(self.config.get(self.executable_key) or self.default_executable) or [self.default_executable]

    @property
    def program(self) -> str:
        """The executable's name for messages (skipping sudo and its options)."""
        return program_name(self.executable, self.default_executable)

    @property
    def uses_sudo(self) -> bool:
        return any(os.path.basename(t) == "sudo" for t in self.executable)

    def missing_executable(self, argv: Sequence[str] | None = None) -> str | None:
        """The first program of `argv` (default: the executable; sudo first when used) that is
        not on the PATH, or None."""
        from cuberun.process import which

        for tok in argv if argv is not None else self.executable:
            if tok.startswith("-"):
                continue
            if which(tok) is None:
                return tok
            if tok != "sudo":
                break
        return None

    # -- the cube -----------------------------------------------------------------------------
    def docker_section(self) -> dict[str, Any]:
        """The cube's `docker:` section (image, build context): the others build from it too."""
        try:
            return self.cube.section("docker")
        except SpecError:
            return {}

    def cube_path(self, value: str) -> Path:
        """A path from the config: ~ and $VARS expanded, relative to the cube root."""
        expanded = os.path.expanduser(os.path.expandvars(value))
        return Path(os.path.normpath(expanded if os.path.isabs(expanded) else self.cube.root / expanded))

    def option(self, cli: str | None, *keys: str) -> str | None:
        """A run option: the command line's value, else the first config key that is set."""
        if cli is not None and cli != "":
            return cli
        for key in keys:
            value = self.config.get(key)
            if value is not None and value != "" and value is not False:
                return str(value)
        return None

    def gpu_request(self, spec: str | None = None) -> GpuRequest:
        from cuberun.gpus import effective_gpus

        return effective_gpus(spec if spec is not None else self.options.gpus, self.cube.accelerator_count)

    def layout(self, task: ResolvedTask) -> Layout:
        """The task's mounts and arguments: inputs read-only unless `--mount=rw` / `--mount_opts`."""
        return task.layout(input_mode=self.options.mount or self.config.get("--mount_opts") or None)

    def bind_args(self, layout: Layout) -> list[str]:
        argv: list[str] = []
        for m in layout.mounts:
            argv += self.bind_syntax.args(m.host, m.target, m.readonly)
        return argv

    # -- steps (pure) ---------------------------------------------------------------------------
    def run_argv(self, task: ResolvedTask) -> tuple[list[str], dict[str, str]]:
        """The engine command that runs `task`, and the variables the client's environment must
        carry (secret values among them)."""
        raise NotImplementedError

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """One step: the engine command and the client environment it needs."""
        argv, env = self.run_argv(task)
        return TaskPlan(task, (Step(tuple(argv), "run", None, env),))

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return list(self.plan(task).steps)

    # -- run --------------------------------------------------------------------------------------
    def has_image_file(self) -> bool:
        """Whether the cube names an image file (a container_config.yaml archive or SIF: runners/imagefile.py,
        imported only then); imagefetch.source_of's test, without importing it."""
        config = getattr(self.cube, "config", None)
        return isinstance(config, dict) and isinstance(config.get("image_source"), dict)

    def release(self) -> None:
        if "_imagefile" in self.__dict__:  # set by runners/imagefile.py once it holds something
            from cuberun.runners import imagefile

            imagefile.release(self)  # a decrypted image does not outlive the invocation

    def before_run(self, plan: TaskPlan) -> None:
        """Last preparations before the engine starts (e.g. mount points in a directory image)."""

    def client_env(self, extra: Mapping[str, str]) -> dict[str, str] | None:
        """The environment of the engine's client: ours plus `extra` (None: ours as is)."""
        return {**os.environ, **extra} if extra else None

    def client_stdin(self, extra: Mapping[str, str]) -> bytes | None:
        """What the client reads on its stdin (None: nothing, /dev/null), e.g. secret variables."""
        return None

    def on_cancel(self, plan: TaskPlan) -> Callable[[], None] | None:
        """What stops the task besides signalling the client (e.g. `docker kill NAME`)."""
        return None

    def watchdog_cleanup(self, plan: TaskPlan) -> list[list[str]]:
        """Commands the task's watchdog runs when cuberun itself is killed (e.g. `docker rm -f NAME`)."""
        return []

    def after_run(self, plan: TaskPlan, outcome: Outcome) -> None:
        """Clean-up after the client ended (e.g. a container left by an interrupted client)."""

    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        """The engine's (not the task's) failure behind a non-zero outcome, as an error to raise."""
        return None

    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        from cuberun.process import stream
        from cuberun.retry import timeout_of

        if not self._configured:  # called without configure (cuberun configures first, then plans)
            self.configure()
            plan = self.plan(plan.task)  # the command may depend on the prepared image (its ENV, its entrypoint)
        step = plan.steps[-1]
        argv, extra_env = list(step.argv), dict(step.env)
        self.before_run(plan)
        data = self.client_stdin(extra_env)
        env, cancel, cleanup = self.client_env(extra_env), self.on_cancel(plan), self.watchdog_cleanup(plan)
        timeout = timeout_of(self.options, plan.task.task)  # --timeout, else the cube's tasks.<t>.timeout
        with open(log_path, "ab") as log, _input_pipe(data) as stdin:
            if stdin is None:
                outcome = stream(argv, env=env, log=log, on_cancel=cancel, cleanup=cleanup, timeout=timeout)
            else:
                outcome = stream(argv, env=env, log=log, on_cancel=cancel, stdin=stdin, cleanup=cleanup, timeout=timeout)
        self.after_run(plan, outcome)
        if outcome.interrupted or outcome.exit_code == 0:
            return outcome
        error = self.failure(plan, outcome, log_path)
        if error is not None:
            raise error
        return outcome

    @staticmethod
    def env_identity(env: Mapping[str, str], *, digest_all: bool = False) -> dict[str, str]:
        """The client-environment part of a fingerprint: secret values (or all, `digest_all`)
        as keyed digests."""
        from cuberun.secretid import secret_digest

        return {k: secret_digest(v) if digest_all or is_secret(k) else v for k, v in sorted(env.items())}
