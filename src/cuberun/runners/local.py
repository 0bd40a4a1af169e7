"""The local runner: a task as a host process, with host paths and a managed Python env.

How to start the program comes from the cube's `local:` section, or, for cubes that ship
only a Dockerfile, from its ENTRYPOINT and COPY lines (RUN steps are not replicated).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import SpecError, UsageError
from cuberun.runners.base import Runner, Step
from cuberun.schema import Field
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask
    from cuberun.runners.pyenv import EnvSpec

PYTHON_NAMES = ("python", "python3")


@dataclass
class Launch:
    command: list[str]
    workdir: Path
    env: EnvSpec | None
    notes: list[str]
    no_command: str | None = None  # why there is no command (tasks without an entrypoint cannot run)


class LocalRunner(Runner):
    name = "local"
    section = "local"
    schema: ClassVar[dict[str, Field]] = {
        "command": Field((str, list), doc="how to start the program (the image ENTRYPOINT's host equivalent)"),
        "workdir": Field((str,), doc="working directory, relative to the cube root"),
        "requirements": Field((str, list), doc="requirements file(s), relative to the cube root"),
        "packages": Field((list,), default=[], doc="extra packages for the managed env"),
        "env": Field((str,), default="managed", choices=("managed", "current", "system")),
        "python": Field((str,), doc="interpreter used to create the managed env"),
        "env_vars": Field((dict,), default={}, doc="environment variables for the task"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._launch: Launch | None = None

    # -- how to launch -------------------------------------------------------------------
    def launch(self) -> Launch:
        if self._launch is None:
            self._launch = self._plan_launch()
        return self._launch

    def _plan_launch(self) -> Launch:
        root = self.cube.root
        cfg = self.config
        notes: list[str] = []
        docker = self.cube.raw_section("docker") or {}
        context = Path(os.path.normpath(root / str(docker.get("build_context") or ".")))
        command = cfg.get("command")
        requirements: list[Path] = []
        packages = [str(p) for p in (cfg.get("packages") or [])]
        workdir = root / cfg["workdir"] if cfg.get("workdir") else None
        no_command = None
        if command:
            tokens = self._split_command(command) if isinstance(command, str) else [str(t) for t in command]
            workdir = workdir or context
        else:
            tokens, derived_workdir, req_files, pkgs, notes = self._from_dockerfile(context, docker)
            if not tokens:
                no_command = f"{context / str(docker.get('build_file') or 'Dockerfile')} has no ENTRYPOINT or CMD to derive the host command from"
            workdir = workdir or derived_workdir
            requirements.extend(req_files)
            packages.extend(pkgs)
        reqs = cfg.get("requirements")
        for r in [reqs] if isinstance(reqs, str) else (reqs or []):
            path = root / str(r)
            if not path.is_file():
                from cuberun.safeio import read_regular

                if os.path.lexists(path):
                    read_regular(path, 0, what="requirements file")  # says what it is instead (a FIFO, a loop, ...)
                raise SpecError([self.cube.doc.issue(("local", "requirements"), f"requirements file {path} does not exist", value=True)])
            requirements.append(path)
        mode = cfg.get("env") or "managed"
        env: EnvSpec | None = None
        if mode == "managed" and (requirements or packages):
            from cuberun.runners.pyenv import EnvSpec

            env = EnvSpec(str(cfg.get("python") or sys.executable), tuple(requirements), tuple(packages))
        return Launch(tokens, workdir, env, notes, no_command)

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

    def _from_dockerfile(self, context: Path, docker: dict[str, Any]) -> tuple[list[str], Path, list[Path], list[str], list[str]]:
        from cuberun.runners import dockerfile

        build_file = context / str(docker.get("build_file") or "Dockerfile")
        if not build_file.is_file() and not os.path.lexists(build_file):
            raise UsageError(
                f"cube '{self.cube.name}' does not say how to run on the host: no 'local:' section and no {build_file}",
                "add 'local: {command: python3 main.py}' to mlcube.yaml, or use --platform=docker",
            )
        df = dockerfile.parse(build_file, context)
        # no ENTRYPOINT/CMD is fine when every task brings its own entrypoint (checked in _argv)
        entry = (df.entrypoint or []) if df.entrypoint else list(df.cmd or [])
        if df.entrypoint_shell_form and entry[:2] == ["/bin/sh", "-c"]:
            entry = shlex.split(entry[2]) if len(entry) > 2 else []
        tokens = []
        for tok in entry:
            host = df.to_host(tok) if tok.startswith("/") else None
            tokens.append(str(host) if host is not None else tok)
        workdir = df.to_host(df.workdir) if df.workdir != "/" else None
        if workdir is None or not workdir.is_dir():
            workdir = context
        req_files: list[Path] = []
        for r in df.requirement_files:
            host = df.to_host(r) if r.startswith("/") else (df.to_host(r) or context / r)
            if host is not None and host.is_file():
                req_files.append(host)
        notes = [f"derived the host command from {build_file}"]
        if df.other_runs:
            notes.append(f"RUN steps of {build_file.name} are not replicated on the host: " + "; ".join(df.other_runs)[:300])
        return tokens, workdir, req_files, list(df.pip_packages), notes

    # -- the runner contract -----------------------------------------------------------
    def configure_steps(self) -> list[Step]:
        env = self.launch().env
        if env is None or env.ready():
            return []
        return [Step(tuple(a), "env") for a in env.install_argvs()]

    def configure(self) -> None:
        from cuberun.console import say

        launch = self.launch()
        for note in launch.notes:
            if launch.no_command and note.startswith("derived the host command"):
                continue
            say(note)
        if launch.env is not None:
            from cuberun.runners import pyenv

            pyenv.ensure(launch.env)

    def _environment(self) -> dict[str, str]:
        from cuberun.gpus import effective_gpus

        launch = self.launch()
        extra: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
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
        if entry is None and launch.no_command:
            raise UsageError(f"task '{task.name}' has no entrypoint and {launch.no_command}",
                             f"give task '{task.name}' an entrypoint, or add a 'local: {{command: ...}}' section")
        base = entry if entry is not None else list(launch.command)
        if base and base[0] in PYTHON_NAMES:
            if launch.env is not None:
                base = [str(launch.env.bin_dir() / "python"), *base[1:]]
            elif (self.config.get("env") or "managed") == "current":
                base = [sys.executable, *base[1:]]
        return base + task.task_args(task.host_args())

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        extra = {k: v for k, v in self._environment().items() if k not in ("PATH", "PYTHONUNBUFFERED")}
        return [Step(tuple(self._argv(task)), "run", str(self.launch().workdir), extra)]

    def run(self, task: ResolvedTask, log_path: str) -> Outcome:
        from cuberun.process import stream

        env = dict(os.environ)
        env.update(self._environment())
        argv = self._argv(task)
        with open(log_path, "ab") as log:
            return stream(argv, cwd=str(self.launch().workdir), env=env, log=log)

    def inspect(self) -> dict[str, Any]:
        launch = self.launch()
        info: dict[str, Any] = {"runner": self.name, "platform": self.platform, "command": launch.command, "workdir": str(launch.workdir)}
        if launch.env is not None:
            info["env"] = {"path": str(launch.env.path()), "ready": launch.env.ready(), "key": launch.env.key()}
        return info
