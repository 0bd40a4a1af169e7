"""The local runner: a task as a host process, with host paths and a managed Python env.

How to start the program comes from the cube's `local:` section, or, for cubes that ship
only a Dockerfile, from what the image would run (dockerfile.py): its ENTRYPOINT/CMD and task
entrypoints with in-image paths mapped to the host files their COPY lines came from, the
WORKDIR, the ENV, and the pip requirements (the only RUN steps replicated, in a managed env).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from cuberun.errors import CuberunError, SpecError, UsageError
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from cuberun.codeid import CodeId
    from cuberun.dockerfile import Dockerfile
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask
    from cuberun.runners.pyenv import EnvSpec

PYTHON_NAMES = ("python", "python3")
# ENV keys of the image never applied to the host process
HOST_OWNED = {"HOME", "HOSTNAME", "PWD", "OLDPWD", "SHELL", "USER", "LOGNAME", "TERM", "SHLVL", "DEBIAN_FRONTEND", "VIRTUAL_ENV"}
PATH_LISTS = {"PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "MANPATH", "PKG_CONFIG_PATH"}

MANAGED_ENV = "<managed env>"  # stands for the managed env's folder in the task's identity


@dataclass
class Launch:
    command: list[str]
    workdir: Path
    env: EnvSpec | None
    notes: list[str]
    no_command: str | None = None  # why there is no command (tasks without an entrypoint cannot run)
    env_vars: dict[str, str] = field(default_factory=dict)  # the image's ENV, mapped to the host
    warnings: list[str] = field(default_factory=list)  # said once per run (system packages)
    derived_from: str | None = None  # the Dockerfile, when derived
    python: str | None = None  # "Python 3.8.18 (pyenv: /root/...)" when the env's interpreter was chosen
    image_python: str | None = None
    task_python: str | None = None  # local.python without a managed env: the interpreter that runs the task
    dockerfile: Dockerfile | None = None


class LocalRunner(Runner):
    enforces_timeout = True  # stream(timeout=...): the task's process group is stopped at the limit
    name = "local"
    section = "local"
    schema: ClassVar[dict[str, Field]] = {
        "command": Field((str, list), doc="how to start the program (the image ENTRYPOINT's host equivalent)"),
        "workdir": Field((str,), doc="working directory, relative to the cube root"),
        "requirements": Field((str, list), doc="requirements file(s), relative to the cube root"),
        "packages": Field((list,), default=[], doc="extra packages for the managed env"),
        "env": Field((str,), default="managed", choices=("managed", "current", "system")),
        "python": Field((str,), doc="interpreter of the managed env: a path, a program, a version (3.8) or 'image'"),
        "env_vars": Field((dict,), default={}, env=True, doc="environment variables for the task"),
        "relax_pins": Field((bool,), default=False, doc="relax ==/~= pins that have no build for the interpreter"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._launch: Launch | None = None
        self._code: CodeId | None = None

    # -- how to launch -------------------------------------------------------------------
    def launch(self) -> Launch:
        if self._launch is None:
            self._launch = self._plan_launch()
        return self._launch

    def _context(self) -> tuple[Path, dict[str, Any]]:
        docker = self.cube.raw_section("docker") or {}
        return Path(os.path.normpath(self.cube.root / str(docker.get("build_context") or "."))), docker

    def _plan_launch(self) -> Launch:
        root = self.cube.root
        cfg = self.config
        context, docker = self._context()
        command = cfg.get("command")
        packages = [str(p) for p in (cfg.get("packages") or [])]
        workdir = root / cfg["workdir"] if cfg.get("workdir") else None
        requirements: list[Path] = []
        if command:
            tokens = self._split_command(command) if isinstance(command, str) else [str(t) for t in command]
            launch = Launch(tokens, workdir or context, None, [])
        else:
            launch = self._from_dockerfile(context, docker)
            if workdir is not None:
                launch.workdir = workdir
        df = launch.dockerfile
        constraints: list[Path] = []
        editables: list[str] = []
        pip_options: list[str] = []
        if df is not None:
            for req in df.requirements:
                if req.kind in ("file", "constraint", "path") and req.host is None:
                    launch.notes.append(f"{df.path.name}:{req.line}: pip {'-r ' if req.kind == 'file' else ''}{req.value} is not a file the COPY lines put in the image; skipped")
                elif req.kind == "file" and req.host is not None:
                    requirements.append(req.host)
                elif req.kind == "constraint" and req.host is not None:
                    constraints.append(req.host)
                elif req.kind == "path" and req.host is not None:
                    (editables if req.editable else packages).append(str(req.host))
                elif req.kind == "spec":
                    packages.append(req.value)
            pip_options = list(df.pip_options)
        reqs = cfg.get("requirements")
        if reqs:  # the user's requirements replace the Dockerfile's pip steps
            requirements, constraints, editables = [], [], []
            packages = [str(p) for p in (cfg.get("packages") or [])]
            for r in [reqs] if isinstance(reqs, str) else reqs:
                path = root / str(r)
                if not path.is_file():
                    if os.path.lexists(path):
                        from cuberun.safeio import read_regular

                        read_regular(path, 0, what="requirements file")  # says what it is instead (a FIFO, a loop, ...)
                    raise SpecError([self.cube.doc.issue(("local", "requirements"), f"requirements file {path} does not exist", value=True)])
                requirements.append(path)
        mode = cfg.get("env") or "managed"
        if mode == "managed" and (requirements or packages or editables):
            from cuberun.runners import pythons
            from cuberun.runners.pyenv import EnvSpec

            wanted = cfg.get("python")
            if isinstance(wanted, str) and wanted.strip() == "image":
                if not launch.image_python:
                    raise UsageError("local.python=image: the Dockerfile does not say which Python its image runs", "give a version, e.g. -Plocal.python=3.8")
                wanted = launch.image_python
            interp = pythons.resolve(str(wanted) if wanted else None)
            if wanted:
                launch.python = interp.describe()
            launch.env = EnvSpec(
                interp.path, tuple(requirements), tuple(packages), tuple(constraints), tuple(pip_options), tuple(editables),
                relax=bool(self.options.relax_pins or cfg.get("relax_pins")), version=interp.version,
                image_python=launch.image_python, source=interp.source if wanted else "",
            )
        elif mode == "managed" and cfg.get("python"):  # no env to build: local.python runs the task itself
            from cuberun.runners import pythons

            wanted = str(cfg.get("python"))
            if wanted.strip() == "image" and launch.image_python:
                wanted = launch.image_python
            interp = pythons.resolve(wanted)
            launch.task_python = interp.path
            launch.notes.append(f"using {interp.describe()} to run the task (local.python; the cube has no requirements, so no managed env)")
        return launch

    def _split_command(self, command: str) -> list[str]:
        from cuberun.errors import quote_problem

        try:
            return shlex.split(command)
        except ValueError as exc:
            problem = quote_problem(command, exc)
        hint = "balance the quotes (or escape them with \\), or write the command as a list"
        given = [o.partition("=")[0] for o in self.options.config_overrides]
        written = self.cube.doc.data.get("local") if isinstance(self.cube.doc.data, dict) else None
        if "local.command" not in given and isinstance(written, dict) and written.get("command") == command:
            raise SpecError([self.cube.doc.issue(("local", "command"), problem, hint, value=True)])
        raise UsageError(f"{'-P: ' if 'local.command' in given else ''}local.command {problem}", hint)

    def _from_dockerfile(self, context: Path, docker: dict[str, Any]) -> Launch:
        from cuberun import dockerfile

        build_file = context / str(docker.get("build_file") or "Dockerfile")
        if not build_file.is_file() and not os.path.lexists(build_file):
            raise UsageError(
                f"cube '{self.cube.name}' does not say how to run on the host: no 'local:' section and no {build_file}",
                "add 'local: {command: python3 main.py}' to mlcube.yaml, or use --platform=docker",
            )
        try:
            df = dockerfile.parse(build_file, context)
        except OSError as exc:
            raise UsageError(f"cannot read {build_file}: {exc}", "fix the docker.build_file setting") from None
        launch = Launch([], context, None, [f"derived the host command from {build_file}"], derived_from=str(build_file), dockerfile=df,
                        image_python=df.python_version())
        launch.notes += df.notes
        # the working directory: the image's WORKDIR, through the COPY lines
        host_wd = df.to_host(df.workdir)
        if host_wd is not None and host_wd.is_dir():
            launch.workdir = host_wd
        elif df.workdir != "/":
            launch.notes.append(f"WORKDIR {df.workdir} holds no files from the build context: the host command runs in {context}")
        # the command: ENTRYPOINT (the task arguments replace CMD), else CMD
        entry, line, what = (df.entrypoint, df.entrypoint_line, "ENTRYPOINT") if df.entrypoint else (df.cmd, df.cmd_line, "CMD")
        if entry:
            shell_form = df.entrypoint_shell_form if df.entrypoint else df.cmd_shell_form
            if entry[:2] in (["/bin/sh", "-c"], ["sh", "-c"]) and len(entry) > 2:
                from cuberun.errors import split_words

                entry = split_words(entry[2], f"the {what} at {build_file.name}:{line}")
            if shell_form:
                launch.notes.append(f"{what} at {build_file.name}:{line} is in shell form: in a container it would ignore the task's arguments")
            if what == "CMD":
                launch.notes.append("the image has no ENTRYPOINT: its CMD is used (in a container the task's arguments would replace it)")
            tokens, error = self.map_command(list(entry), df, launch.workdir, f"{what} at {build_file.name}:{line}")
            launch.command = tokens
            if error:
                launch.no_command = error
        else:
            launch.no_command = f"{build_file} has no ENTRYPOINT or CMD to derive the host command from"
        launch.env_vars = self._map_env(df)
        if df.system_packages:
            launch.warnings.append(
                f"{build_file.name} installs system packages that cuberun does not install on the host (the task may need them): "
                + ", ".join(df.system_packages)
            )
        others = [r.text for r in df.runs if r.kind == "other"]
        if others:
            launch.notes.append(f"RUN steps of {build_file.name} not replicated on the host: " + _clip("; ".join(others), 300))
        return launch

    def map_command(self, tokens: list[str], df: Dockerfile, host_wd: Path, what: str) -> tuple[list[str], str | None]:
        """An in-image command line for the host: interpreters by name, in-image paths as the host
        files their COPY lines came from. Returns the tokens and, if a path cannot be mapped, why."""
        from cuberun.dockerfile import PYTHON_PROGRAMS

        out: list[str] = []
        script_at = None
        for i, tok in enumerate(tokens):
            base = os.path.basename(tok)
            if i == 0 and PYTHON_PROGRAMS.match(base):
                out.append("python3" if base.startswith("python3") else base if base in PYTHON_NAMES else "python")
                script_at = 1
                continue
            if script_at is not None and i == script_at and tok.startswith("-") and tok not in ("-m", "-c"):
                script_at += 1  # python3 -u script.py
            if tok.startswith("/"):
                host = df.to_host(tok)
                if host is not None and host.exists():
                    out.append(str(host))
                    continue
                if os.path.exists(tok) and not df.covered(tok):
                    out.append(tok)  # a host program such as /bin/bash
                    continue
                return tokens, f"{what} names {tok}, a path inside the image that no COPY line of {df.path.name} provides"
            if script_at is not None and i == script_at and tok not in ("-m", "-c") and not tok.startswith("-"):
                if not (host_wd / tok).exists():
                    import posixpath

                    host = df.to_host(posixpath.join(df.workdir, tok))
                    if host is None or not host.exists():
                        return tokens, f"{what} runs {tok} (in WORKDIR {df.workdir}), which no COPY line of {df.path.name} provides"
                    out.append(str(host))
                    continue
            out.append(tok)
        return out, None

    def _map_env(self, df: Dockerfile) -> dict[str, str]:
        env: dict[str, str] = {}
        for key, value in df.env.items():
            if key in HOST_OWNED:
                continue
            if key in PATH_LISTS:
                parts = []
                for part in value.split(":"):
                    host = df.to_host(part) if part.startswith("/") else None
                    if host is not None and host.exists():
                        parts.append(str(host))
                if key == "PATH":
                    continue  # the image's system dirs mean nothing here; the managed env's bin comes first
                current = os.environ.get(key)
                if parts or current:
                    env[key] = os.pathsep.join(parts + ([current] if current else []))
                continue
            if value.startswith("/"):
                host = df.to_host(value)
                if host is not None and host.exists():
                    value = str(host)
            env[key] = value
        return env

    # -- the runner contract -----------------------------------------------------------
    def configure_steps(self) -> list[Step]:
        env = self.launch().env
        if env is None or (env.ready() and not self.options.rebuild_env):
            return []
        return [Step(tuple(a), "env") for a in env.install_argvs()]

    def configure(self) -> None:
        from cuberun.console import say

        launch = self.launch()
        for note in launch.notes:
            if launch.no_command and note.startswith("derived the host command"):
                continue
            say(note)
        for warning in launch.warnings:
            say(f"warning: {warning}")
        if launch.python:
            say(f"using {launch.python} for the managed environment")
        if launch.env is not None:
            from cuberun.runners import pyenv

            pyenv.ensure(launch.env, rebuild=self.options.rebuild_env, cube=str(self.cube.root))
            for relaxed in launch.env.marker().get("relaxed") or []:
                say(f"relaxed pin: {relaxed.get('requirement')} -> {relaxed.get('relaxed_to')} (installed {relaxed.get('installed')}): {relaxed.get('reason')}")

    def _environment(self) -> dict[str, str]:
        from cuberun.gpus import effective_gpus

        launch = self.launch()
        extra: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
        extra.update(launch.env_vars)
        if launch.env is not None:
            extra["VIRTUAL_ENV"] = str(launch.env.path())
            extra["PATH"] = str(launch.env.bin_dir()) + os.pathsep + os.environ.get("PATH", "")
        elif (self.config.get("env") or "managed") == "current":
            extra["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        for key, value in (self.config.get("env_vars") or {}).items():
            extra[str(key)] = "" if value is None else str(value)
        extra.update(self.options.extra_env)
        cuda = effective_gpus(self.options.gpus, self.cube.accelerator_count).cuda_visible_devices()
        if cuda is not None and self.options.gpus is not None:
            extra["CUDA_VISIBLE_DEVICES"] = cuda
        return extra

    def _argv(self, task: ResolvedTask) -> list[str]:
        launch = self.launch()
        entry = task.entrypoint
        if entry is not None and launch.dockerfile is not None:
            entry, error = self.map_command(entry, launch.dockerfile, launch.workdir, f"task '{task.name}' entrypoint")
            if error:
                raise UsageError(error, "run this task with --platform=docker, or give it a host command with -Plocal.command=...")
        if entry is None and launch.no_command:
            raise UsageError(f"task '{task.name}' has no entrypoint and {launch.no_command}",
                             f"give task '{task.name}' an entrypoint, or add a 'local: {{command: ...}}' section (or -Plocal.command=...)")
        base = entry if entry is not None else list(launch.command)
        if base and base[0] in PYTHON_NAMES:
            mode = self.config.get("env") or "managed"
            if launch.env is not None:
                base = [str(launch.env.bin_dir() / "python"), *base[1:]]
            elif mode == "current":
                base = [sys.executable, *base[1:]]
            elif mode == "managed" and launch.task_python:  # no env to build: local.python runs the task itself
                base = [launch.task_python, *base[1:]]
        return base + task.task_args(task.host_args())

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        extra = {k: v for k, v in self._environment().items() if k not in ("PATH", "PYTHONUNBUFFERED")}
        return [Step(tuple(self._argv(task)), "run", str(self.launch().workdir), extra)]

    def sections(self) -> list[str] | None:
        return ["local"] if self.config.get("command") else ["local", "docker"]  # docker: the Dockerfile the command is derived from

    def code_roots(self) -> list[Path]:
        """Where the task's code lives beyond the cube folder: the folder the command runs in (the
        Dockerfile's context for a derived command), unless it is / or holds the home folder."""
        home = os.path.realpath(os.path.expanduser("~"))
        real = os.path.realpath(self.launch().workdir)
        if real == os.sep or real == home or home.startswith(real.rstrip(os.sep) + os.sep):
            return []
        return [Path(os.path.normpath(self.launch().workdir))]

    def code_identity(self) -> CodeId:
        """The code identity of the cube (see codeid.py), once per runner (one invocation)."""
        if self._code is None:
            self._code = self.cube_code(self.code_roots())
        return self._code

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The command, its working directory and environment variables (secret values as keyed
        digests), the program it starts (for Python: the interpreter's version and the packages
        installed where it imports from) and the code identity of the cube folder."""
        from cuberun import pyidentity
        from cuberun.secretid import SECRET_NAME

        def secret_digest(value: str) -> str:
            from cuberun.secretid import secret_digest

            return secret_digest(value)

        step = self.run_steps(task)[0]
        managed = self.launch().env
        where = str(managed.path()) if managed is not None else None

        def plain(value: str) -> str:  # the managed env's folder is named by its key: its packages say what it holds
            return MANAGED_ENV + value[len(where):] if where and (value == where or value.startswith(where + os.sep)) else value

        env = {k: (secret_digest(v) if SECRET_NAME.search(k) else plain(v)) for k, v in sorted(step.env.items())}
        fp: dict[str, Any] = {"runner": self.name, "command": [[plain(a) for a in step.argv]], "cwd": step.cwd, "env": env}
        if step.argv:
            program = pyidentity.identity(step.argv[0], self._environment(), step.cwd)
            fp["program"] = {k: plain(v) if isinstance(v, str) else v for k, v in program.items()}
        fp["code"] = self.code_identity().to_json()
        return fp

    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        from cuberun.process import stream
        from cuberun.retry import timeout_of
        from cuberun.valueclass import replace

        task = plan.task
        env = dict(os.environ)
        env.update(self._environment())
        argv = self._argv(task)
        with open(log_path, "ab") as log:
            outcome = stream(argv, cwd=str(self.launch().workdir), env=env, log=log, timeout=timeout_of(self.options, task.task))
        details = self.env_details()
        if details:
            outcome = replace(outcome, details={**dict(outcome.details or {}), **details})
        launch = self.launch()
        if outcome.exit_code != 0 and not outcome.interrupted and launch.env is not None and launch.image_python:
            mine = ".".join(launch.env.python_version().split(".")[:2])
            if mine != launch.image_python:
                outcome = replace(outcome, reason=(
                    f"failed with exit code {outcome.exit_code} (log {log_path}); its image runs Python {launch.image_python} and this env "
                    f"Python {mine}: releases of its unpinned dependencies made since may not fit its pinned ones. "
                    f"Hint: try -Plocal.python={launch.image_python}"))
        return outcome

    def env_details(self) -> dict[str, Any]:
        """What the run record keeps about the managed env: interpreter and relaxed pins."""
        launch = self.launch()
        if launch.env is None:
            return {}
        marker = launch.env.marker()
        details: dict[str, Any] = {"python": f"{marker.get('version') or launch.env.python_version()} ({launch.env.python})"}
        if marker.get("relaxed"):
            details["relaxed_pins"] = marker["relaxed"]
        return details

    def launch_problems(self, tasks: list[str]) -> list[str]:
        """Why tasks cannot be launched on the host (for validate), without running anything."""
        try:
            launch = self.launch()
        except CuberunError as exc:
            return [exc.lines()[0]]
        problems = []
        for name in tasks:
            task = self.cube.tasks[name]
            if task.entrypoint is None and launch.no_command:
                problems.append(f"task '{name}' cannot run on the host: {launch.no_command}")
            elif task.entrypoint is not None and launch.dockerfile is not None:
                _, error = self.map_command(shlex.split(task.entrypoint), launch.dockerfile, launch.workdir, f"task '{name}' entrypoint")
                if error:
                    problems.append(f"task '{name}' cannot run on the host: {error}")
        return problems

    def describe_config(self) -> dict[str, Any]:
        config = dict(self.config)
        try:
            launch = self.launch()
        except CuberunError as exc:
            config["derived"] = {"error": exc.lines()[0]}
            return config
        derived: dict[str, Any] = {
            "from": launch.derived_from or "local section",
            "command": launch.command if not launch.no_command else None,
            "workdir": str(launch.workdir),
            "env": dict(launch.env_vars),
        }
        if launch.no_command:
            derived["no_command"] = launch.no_command
        if launch.image_python:
            derived["image_python"] = launch.image_python
        if launch.env is not None:
            derived["python"] = f"{launch.env.python_version()} ({launch.env.python})"
            derived["requirements"] = [str(f) for f in launch.env.requirement_files]
            derived["packages"] = list(launch.env.packages)
            if launch.env.constraint_files:
                derived["constraints"] = [str(f) for f in launch.env.constraint_files]
            if launch.env.pip_options:
                derived["pip_options"] = list(launch.env.pip_options)
            derived["managed_env"] = str(launch.env.path())
        if launch.dockerfile is not None and launch.dockerfile.system_packages:
            derived["system_packages_not_installed"] = list(launch.dockerfile.system_packages)
        if launch.notes[1:]:
            derived["notes"] = launch.notes[1:]
        config["derived"] = derived
        return config

    def inspect(self) -> dict[str, Any]:
        launch = self.launch()
        info: dict[str, Any] = {"runner": self.name, "platform": self.platform, "command": launch.command, "workdir": str(launch.workdir)}
        if launch.env is not None:
            info["env"] = {"path": str(launch.env.path()), "ready": launch.env.ready(), "key": launch.env.key()}
        return info


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."
