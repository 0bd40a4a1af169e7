"""The singularity runner (the Runner contract): the build and run commands, availability,
configure (building the SIF), failures, the fingerprint and inspect. The layer below: image.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, SpecError, TaskFailed, UsageError
from cuberun.records import log_tail
from cuberun.runners.argv import env_value
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container import EnvSyntax, last_error_line, pass_env, stream_to_stderr
from cuberun.runners.singularity.image import FATAL, SCHEMA, SINGULARITY_BIND, SingularityImage, Source
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask


class SingularityRunner(SingularityImage):
    name = "singularity"
    section = "singularity"
    executable_key = "singularity"
    default_executable = "singularity"
    bind_syntax = SINGULARITY_BIND
    schema: ClassVar[dict[str, Field]] = SCHEMA

    # -- steps (pure, apart from the cached probes) -------------------------------------------------
    def build_argv(self, source: Source, force: bool = False) -> list[str]:
        argv = [*self.executable, "build", *as_tokens(self.config.get("build_args"))]
        if force and "--force" not in argv and "-F" not in argv:
            argv.append("--force")
        return [*argv, str(self.sif), source.spec]

    def configure_steps(self) -> list[Step]:
        if self.sif_current():
            return []
        source = self.source()
        return [Step(tuple(self.build_argv(source, force=self.sif.exists())), "build", str(self.cube.root))]

    def task_env(self) -> dict[str, str]:
        """Variables the task gets: env_args, the invocation's extra env, GPUs."""
        env: dict[str, str] = {}
        for key, value in (self.config.get("env_args") or {}).items():
            env[str(key)] = env_value(value)
        env.update(self.options.extra_env)
        gpus = self.gpu_request()
        if gpus.wanted and "CUDA_VISIBLE_DEVICES" not in env:
            visible = gpus.cuda_visible_devices()
            if visible:
                env["CUDA_VISIBLE_DEVICES"] = visible
        return env

    def run_argv(self, task: ResolvedTask) -> tuple[list[str], dict[str, str]]:
        """`singularity run|exec ...` for a task, and the variables its process needs."""
        cfg = self.config
        entry = task.entrypoint
        from cuberun.runners.container_policy import singularity_flags

        user_args = as_tokens(cfg.get("run_args"))
        argv = [*self.executable, "exec" if entry else "run", *singularity_flags(self.policy(task), user_args), *user_args]
        for flag, value in (("--security", self.option(self.options.security, "--security")),):
            if value is not None:
                argv.append(f"{flag}={value}")
        if self.gpu_request().wanted and "--nv" not in argv:
            argv.append("--nv")
        for flag, value in (
            ("--vm-ram", self.option(self.options.memory, "--vm-ram")),
            ("--vm-cpu", self.option(self.options.cpus, "--vm-cpu")),
        ):
            if value is not None:
                argv.append(f"{flag}={value}")
        process_env: dict[str, str] = {}
        task_env = {**task.environment, **self.task_env()}  # container_config.yaml run_args.environment first
        if task_env:
            version = self.version()
            # a secret's value (and, before Singularity 3.6, every value) travels as <PREFIX>ENV_<NAME> in the client's environment
            prefix = "APPTAINERENV_" if (version.is_apptainer if version else self.program == "apptainer") else "SINGULARITYENV_"
            if version is None or version.supports_env_flag():
                more, process_env = pass_env(task_env.items(), EnvSyntax("--env", secret_prefix=prefix))
                argv += more
            else:  # Singularity < 3.6: no --env
                process_env.update({f"{prefix}{k}": v for k, v in task_env.items()})
        workdir = self.workdir()
        if workdir:
            argv += ["--pwd", workdir]
        layout = self.layout(task)
        if any("," in m.host or ":" in m.host for m in layout.mounts):
            version = self.version()
            if version is not None and not version.supports_mount_flag():
                raise UsageError(
                    f"task '{task.name}': {self.program} {'.'.join(map(str, version.numbers))} cannot bind paths containing ',' or ':' "
                    "(--mount needs SingularityCE 3.9 or Apptainer)",
                    "rename the directory or override the parameter with another path",
                )
        argv += self.bind_args(layout)
        argv.append(str(self.sif))
        if entry:
            argv += entry
        argv += task.task_args(layout.args)
        return argv, process_env

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import singularity_policy

        return singularity_policy(self, task)

    # -- availability ----------------------------------------------------------------------------
    def _not_installed(self, tok: str) -> str:
        return (
            f"{self.program} is not installed (no '{tok}' on the PATH). "
            "Hint: install Apptainer or SingularityCE (the executable is set with -Prunner.singularity=PATH; "
            "--platform=apptainer uses apptainer), or use --platform=charliecloud or docker"
        )

    def unavailable_reason(self) -> str | None:
        tok = self.missing_executable()
        if tok == "sudo":
            return f"sudo is not installed. Hint: set -Prunner.singularity={self.program} (without sudo)"
        return self._not_installed(tok) if tok is not None else None

    # -- configure ---------------------------------------------------------------------------------
    def configure(self) -> None:
        """Build the SIF unless it is current. Quiet when there is nothing to do."""
        from cuberun.runners import imagefile

        imagefile.prepare_sif(self)  # a container_config.yaml SIF: downloaded, checked, decrypted
        if self.sif_current():
            self._configured = True
            return
        reason = self.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        source = self.source()
        sif = self.sif
        existed = sif.exists()
        why = "the recipe is newer than the SIF" if existed else "no SIF yet"
        argv = self.build_argv(source, force=existed)
        try:
            sif.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the image directory {sif.parent}: {exc.strerror}",
                               "set -Psingularity.image_dir=DIR to a writable directory") from None
        before = sif.stat().st_mtime_ns if existed else None
        outcome, text = stream_to_stderr(argv, f"building {sif} from {source.spec} ({why})", cwd=str(self.cube.root))
        if outcome.exit_code != 0:
            self._remove_partial(sif, before)
            if outcome.interrupted:
                raise TaskFailed(f"the build of {sif} was interrupted", outcome.exit_code)
            raise BackendError(
                f"building {sif} from {source.spec} failed with exit code {outcome.exit_code}: {_last_error(text)}",
                self._build_hint(source),
            )
        self._configured = True

    @staticmethod
    def _remove_partial(sif: Path, before: int | None) -> None:
        try:
            st = sif.stat()
        except OSError:
            return
        if before is None or st.st_mtime_ns != before:
            try:
                sif.unlink()
            except OSError:
                pass

    def _build_hint(self, source: Source) -> str:
        if source.kind == "recipe":
            return f"fix {source.spec} (the build output is above); without --fakeroot support set -Psingularity.build_args="
        if source.kind == "docker":
            return "check the image name and the registry access; a locally built image is used through docker-daemon: when the Docker engine has it"
        return "the build output is above"

    # -- run -----------------------------------------------------------------------------------------
    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        task = plan.task
        if outcome.exit_code == 255:
            line = _fatal_line(log_tail(log_path))
            if line:
                return BackendError(f"{self.program} could not run task '{task.name}': {line}", "check the SIF and the run arguments (--dry-run prints them)")
        return None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The run command (its --env values included) and variables passed through the client's
        environment, plus the SIF's identity (size and mtime: a rebuild changes them, and hashing
        a multi-GB SIF on every run would be slow); for a SIF built from a recipe, the code
        identity of the folder it is built in (a `%files` line copies from there)."""
        argv, env = self.run_argv(task)
        try:
            st = self.sif.stat()
            sif: list[int] | None = [st.st_size, st.st_mtime_ns]
        except OSError:
            sif = None
        fp: dict[str, Any] = {"runner": self.name, "command": [argv], "sif": sif}
        if env:
            fp["env"] = self.env_identity(env)
        try:
            recipe = self.source(probe=False).kind == "recipe"
        except CuberunError:
            recipe = False
        if recipe:
            fp["build_context"] = self.cube_code().to_json()
        return fp

    # -- inspect -------------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        sif = self.sif
        info: dict[str, Any] = {
            "runner": self.name,
            "platform": self.platform,
            "executable": " ".join(self.executable),
            "sif": str(sif),
            "exists": sif.is_file(),
        }
        try:
            source = self.source(probe=False)
            info["source"] = source.spec
            info["current"] = self.sif_current()
        except SpecError as exc:
            info["source"] = None
            info["problem"] = exc.lines()[0]
        if sif.is_file():
            import hashlib

            digest = hashlib.sha256()
            with open(sif, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            info["hash"] = digest.hexdigest()
        if self.unavailable_reason() is None:
            version = self.version()
            info["version"] = version.text if version else None
        return info


def _last_error(text: str) -> str:
    return last_error_line(text, lambda line: FATAL.match(line) is not None)


def _fatal_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        m = FATAL.match(line)
        if m:
            return m.group(1).strip() or line.strip()
    return None


