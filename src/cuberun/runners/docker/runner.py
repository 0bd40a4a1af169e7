"""The docker runner (the Runner contract): build/pull/load steps, the `docker run` command,
configure, the run hooks (cleanup, Ctrl-C, the engine's own failures), identity and inspect.
The layer below: engine.py; the pure helpers: commands.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, TaskFailed
from cuberun.records import log_tail
from cuberun.runners import images
from cuberun.runners.argv import env_value
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container import DAEMON_DOWN, pass_env, proxy_env, stream_to_stderr, user_spec
from cuberun.runners.docker.commands import (
    ENGINE_ERROR,
    _has_flag,
    _last_error_line,
    _name_prefix,
    context_hash,
    gpus_value,
    new_container_name,
)
from cuberun.runners.docker.engine import (
    CANCEL_TIMEOUT,
    DOCKER_BIND,
    DOCKER_ENV,
    HASH_LABEL,
    PROBE_TIMEOUT,
    RUN_LABEL,
    SCHEMA,
    DockerEngine,
)
from cuberun.schema import Field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from cuberun.codeid import CodeId
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask


class DockerRunner(DockerEngine):
    name = "docker"
    section = "docker"
    executable_key = "docker"
    default_executable = "docker"
    bind_syntax = DOCKER_BIND
    identity_labels: ClassVar[Mapping[str, str]] = {"image_id": "image digest", "locked": "locked image digest (cuberun.lock)"}
    image_keys: ClassVar[tuple[str, str | None] | None] = ("image", "image_id")
    schema: ClassVar[dict[str, Field]] = SCHEMA

    # -- steps (pure) ----------------------------------------------------------------------
    def build_argv(self, hash_value: str | None = None) -> list[str]:
        argv = [*self.executable, "build", "--force-rm"]  # no intermediate container survives a failed step
        network = self.config.get("build_network")
        if network:
            argv.append(f"--network={network}")
        build_args = self.config.get("build_args") or {}
        names: list[str] = []
        if isinstance(build_args, Mapping):
            for key, value in build_args.items():
                argv += ["--build-arg", f"{key}={env_value(value)}"]
                names.append(str(key))
        else:
            tokens = as_tokens(build_args)
            argv += tokens
            names = [t.split("=", 1)[0] for t in tokens]
        for key, value in proxy_env(names):
            argv += ["--build-arg", f"{key}={value}"]
        digest = hash_value or self.context_hash()
        argv += ["--label", f"{HASH_LABEL}={digest}", "-t", self.image, "-f", str(self.recipe), str(self.context)]
        return argv

    def context_code(self) -> CodeId:
        """The build context's code identity (computed once per runner: one invocation)."""
        if self._context_code is None:
            from cuberun.codeid import identity

            self._context_code = identity([self.context], "docker", label="build context")
        return self._context_code

    def context_hash(self) -> str:
        return context_hash(self.context, self.recipe, self.config.get("build_args") or {}, self.context_code())

    def _tar_file(self) -> Path | None:
        value = self.config.get("tar_file")
        if not value:
            return None
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else self.cube.root / path

    def _fetch_step(self) -> Step:
        tar = self._tar_file()
        if tar is not None and tar.is_file():
            return Step((*self.executable, "load", "--input", str(tar)), "load")
        return Step(tuple(images.pull_argv(self.executable, self.is_podman, self.image)), "pull")

    def configure_steps(self) -> list[Step]:
        if self.has_image_file():
            from cuberun.runners import imagefile

            archive = imagefile.docker_steps(self)  # a container_config.yaml archive (URL, encrypted)
            if archive is not None:
                return archive
        if self.strategy != "pull" and self.recipe.is_file():
            return [Step(tuple(self.build_argv()), "build")]
        return images.lock_steps(self) or [self._fetch_step()]

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """The run of `task` under a container name of its own (parallel sweep variants of one
        task get their own), chosen once, so the run record shows the container that really ran."""
        name = new_container_name(task.name)
        argv, env = self.run_argv(task, name)
        return TaskPlan(task, (Step(tuple(argv), "run", None, env),), {"container": name})

    def run_argv(self, task: ResolvedTask, name: str | None = None) -> tuple[list[str], dict[str, str]]:
        """`docker run ...` for a task (in container `name`, default: a new one), and the
        environment variables the engine must pass on."""
        cfg = self.config
        gpus = self.task_gpus(task)
        user_args = as_tokens(cfg.get("gpu_args") if gpus.wanted else cfg.get("cpu_args"))
        extra = as_tokens(cfg.get("extra_run_args"))
        argv = [*self.executable, "run"]
        if cfg.get("remove", True):
            argv.append("--rm")
        argv += [f"--name={name or new_container_name(task.name)}", f"--label={RUN_LABEL}=1"]
        if self.is_podman:
            argv.append("--pull=never")
        mapped = bool(cfg.get("run_as_user", True)) and not _has_flag(user_args + extra, "-u", "--user")
        if mapped:
            argv += ["-u", user_spec()]
        from cuberun.runners.container_policy import docker_flags

        argv += docker_flags(self.policy(task), user_args + extra)  # the run policy: no network, no capabilities, ...
        argv += user_args
        for flag, value in (
            ("--security-opt", self.option(self.options.security, "--security-opt")),
            ("--memory", self.option(self.options.memory, "--memory")),
            ("--cpuset-cpus", self.option(self.options.cpus, "--cpuset-cpus")),
        ):
            if value is not None and not _has_flag(user_args, flag):
                argv.append(f"{flag}={value}")
        if gpus.wanted and not _has_flag(user_args + extra, "--gpus"):
            argv.append(f"--gpus={gpus_value(gpus)}")
        if task.task.run_args is not None and task.task.run_args.shm_size:
            argv.append(f"--shm-size={task.task.run_args.shm_size}")
        entry = task.entrypoint
        if entry:
            argv.append(f"--entrypoint={entry[0]}")

        # environment: env_args, RunOptions.extra_env, proxies, GPUs, HOME for a mapped user
        env: dict[str, str] = {}
        names: list[str] = []

        def add_env(*items: tuple[str, str]) -> None:
            names.extend(k for k, _ in items)
            more, secret = pass_env(items, DOCKER_ENV, via_env=not self.uses_sudo)  # sudo drops our env
            argv.extend(more)
            env.update(secret)

        env_args = cfg.get("env_args") or {}
        if isinstance(env_args, Mapping):
            add_env(*((str(k), env_value(v)) for k, v in env_args.items()))
        else:
            tokens = as_tokens(env_args)
            argv += tokens
            names += [t.split("=", 1)[0] for t in tokens if not t.startswith("-")]
        add_env(*task.environment.items())  # container_config.yaml run_args.environment
        add_env(*self.options.extra_env.items())
        add_env(*proxy_env(names))
        if gpus.devices and "CUDA_VISIBLE_DEVICES" not in names:
            # only the requested devices exist inside the container, renumbered from 0
            add_env(("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(len(gpus.devices)))))
        if mapped and os.getuid() != 0 and "HOME" not in names:
            add_env(("HOME", "/tmp"))  # an unknown uid gets HOME=/, which it cannot write
        argv += extra

        layout = self.layout(task)
        argv += self.bind_args(layout)
        argv.append(self.image)
        if entry:
            argv += entry[1:]
        argv += task.task_args(layout.args)
        return argv, env

    def lock_images(self, pull: bool = False) -> tuple[str, dict[str, dict[str, str]]] | None:
        return images.lock_image(self, pull)

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import docker_policy

        return docker_policy(self, task)

    # -- configure -------------------------------------------------------------------------
    def configure(self) -> None:
        """Make the image present: build (auto: only when the context changed; always: every
        time) or load/pull it when missing (a locked one by its digest), then verify it against
        its pinned digest and the lock file (images.py). Quiet when there is nothing to do."""
        if self.has_image_file():
            from cuberun.runners import imagefile

            if imagefile.prepare_docker(self):  # a container_config.yaml archive: downloaded, checked, decrypted, loaded
                self._configured = True
                return
        if images.prepare(self):
            self._state = None
        state = self.image_state()
        if self.strategy != "pull" and self.recipe.is_file():
            digest = self.context_hash()
            if self.strategy == "always":
                self._build(digest, "build_strategy is always")
            elif not state.present:
                self._build(digest, "the image is missing")
            elif HASH_LABEL in state.labels and state.labels[HASH_LABEL] != digest:
                self._build(digest, "the build context changed")
            # else: up to date, or an image cuberun did not build (pulled or tagged by hand): used as is
        elif not state.present:
            self._fetch()
        self._verified = images.verify(self)
        self._configured = True

    def _build(self, digest: str, why: str) -> None:
        argv = self.build_argv(digest)
        outcome, text = stream_to_stderr(argv, f"building {self.image} ({why})")
        if outcome.interrupted:
            raise TaskFailed(f"the build of {self.image} was interrupted", outcome.exit_code)
        if outcome.exit_code != 0:
            problem = self._daemon_problem(text)
            if problem:
                raise RunnerUnavailable(problem)
            hint = f"fix {self.recipe} (the build output is above)"
            if not self.config.get("build_network"):
                hint += f"; RUN steps that need the network may need -P{self.section}.build_network=host"
            raise BackendError(f"building image {self.image} failed with exit code {outcome.exit_code}: {_last_error_line(text)}", hint)
        self._state = None  # probed again (for the new image id) only if someone asks

    def _fetch(self) -> None:
        step = self._fetch_step()
        what = "loading" if step.purpose == "load" else "pulling"
        outcome, text = stream_to_stderr(step.argv, f"{what} {self.image} (not present locally)")
        if outcome.interrupted:
            raise TaskFailed(f"{what} {self.image} was interrupted", outcome.exit_code)
        if outcome.exit_code != 0:
            problem = self._daemon_problem(text)
            if problem:
                raise RunnerUnavailable(problem)
            recipe = self.recipe
            build_hint = (
                f"build it from {recipe} with -P{self.section}.build_strategy=auto, or tag a local image: {self.engine} tag SOURCE {self.image}"
                if recipe.is_file()
                else f"tag a local image with exactly this name: {self.engine} tag SOURCE {self.image}"
            )
            tar = self._tar_file() if step.purpose == "load" else None
            if tar is not None:
                from cuberun.runners.zstdlayer import zstd_layers

                if zstd_layers(tar):  # Docker 20.10 cannot load them ("archive/tar: invalid tar header")
                    build_hint = (f"{tar} has zstd-compressed layers, which this {self.engine} may not load: use a newer Docker, "
                                  "podman or --platform=charliecloud, or save the image again with gzip layers")
            raise BackendError(f"cannot {what[:-3]} image {self.image} (exit {outcome.exit_code}): {_last_error_line(text)}", build_hint)
        self._state = None

    # -- run ---------------------------------------------------------------------------------
    def _remove_container(self, name: str, *, kill: bool) -> None:
        if kill:
            self._capture("kill", name, timeout=CANCEL_TIMEOUT)
        if self.config.get("remove", True):
            self._capture("rm", "-f", name, timeout=CANCEL_TIMEOUT)

    def _cleanup_after(self, name: str, interrupted: bool) -> None:
        """Make sure the container is gone after an interrupted or broken run. When the client
        was stopped, a create request may still have been in flight: look once more shortly after."""
        if not self.config.get("remove", True):
            self._capture("kill", name, timeout=CANCEL_TIMEOUT)
            return
        for attempt in range(2 if interrupted else 1):
            if interrupted:  # SIGKILL first: podman's `rm -f` waits 10 s for SIGTERM, as long as our timeout
                self._capture("kill", name, timeout=CANCEL_TIMEOUT)
            res = self._capture("rm", "-f", name, timeout=CANCEL_TIMEOUT)
            if res.returncode == 0 and res.stdout.strip():
                return
            if attempt == 0 and interrupted:
                time.sleep(0.5)

    def on_cancel(self, plan: TaskPlan) -> Callable[[], None]:
        name = plan.value("container")
        return lambda: self._remove_container(name, kill=True)

    def watchdog_cleanup(self, plan: TaskPlan) -> list[list[str]]:
        """The container goes with a killed cuberun (removed, or killed when `remove` is off), and
        then an image this invocation loaded from an encrypted archive (imagefile.py)."""
        name = plan.value("container")
        commands = [[*self.executable, "rm", "-f", name] if self.config.get("remove", True) else [*self.executable, "kill", name]]
        if "_imagefile" in self.__dict__:  # an image file was prepared (imagefile.py is loaded only then)
            from cuberun.runners import imagefile

            commands += [[*self.executable, "rmi", "-f", image_id] for image_id in imagefile.private_images(self)]
        return commands

    def after_run(self, plan: TaskPlan, outcome: Outcome) -> None:
        if outcome.details and outcome.details.get("timed_out"):
            self._cleanup_after(plan.value("container"), True)  # stopped by --timeout: the container must be gone
            return
        if outcome.interrupted or outcome.signal is not None or outcome.exit_code in (125, 126, 127):
            self._cleanup_after(plan.value("container"), outcome.interrupted or outcome.signal is not None)

    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        task = plan.task
        lost = self._engine_lost(task, outcome)
        if lost is not None:
            return lost
        if outcome.exit_code in (125, 126, 127):
            text = log_tail(log_path)
            line = _last_error_line(text)
            if outcome.exit_code == 125 and ENGINE_ERROR.match(line):
                problem = self._daemon_problem(text)
                if problem:
                    return RunnerUnavailable(problem)
                return BackendError(f"{self.engine} could not start the container for task '{task.name}': {line}", "check the image and the run arguments (--dry-run prints them)")
            if "oci runtime" in line.lower() or "executable file not found" in line.lower():
                return BackendError(
                    f"the container of task '{task.name}' could not run its command (exit {outcome.exit_code}): {line}",
                    "check the task's entrypoint and the image's ENTRYPOINT",
                    exit_code=outcome.exit_code,
                )
        if outcome.exit_code == 137 and outcome.signal is None:
            memory = self.option(self.options.memory, "--memory")
            limit = f" (now {memory})" if memory else ""
            return TaskFailed(
                f"task '{task.name}' was killed (SIGKILL, exit 137): possibly out of memory",
                137,
                f"raise --memory{limit}, or lower the task's memory use; the log is {log_path}",
            )
        return None

    def _engine_lost(self, task: ResolvedTask, outcome: Outcome) -> BackendError | None:
        """A failed run caused by the engine, not the task: the `run` client itself was killed by a
        signal (the task's own death reaches us as its exit code), or the daemon went away while
        the task ran (a stopping daemon kills its containers: 137 or 143; a vanished one: 125)."""
        import signal

        if outcome.signal is not None:
            try:
                name = signal.Signals(outcome.signal).name
            except ValueError:
                name = f"signal {outcome.signal}"
            return BackendError(
                f"'{self.engine} run' was killed by {name} while task '{task.name}' was running; its container was removed",
                "the task did not fail by itself: find what killed the engine client, then run again",
            )
        if outcome.exit_code not in (125, 137, 143):
            return None
        probe = self._capture("version", timeout=PROBE_TIMEOUT)
        if probe.returncode == 0 or not any(s in probe.stderr.lower() for s in DAEMON_DOWN):
            return None
        host = os.environ.get("DOCKER_HOST")
        where = f" at {host}" if host else ""
        return BackendError(
            f"the {self.engine} daemon{where} went away while task '{task.name}' was running (its container exited with {outcome.exit_code})",
            f"start the daemon again (check its log), then run again; {self.engine} ps -a --filter label={RUN_LABEL}=1 lists what is left",
        )

    def identity(self, plan: TaskPlan) -> dict[str, Any]:
        """The run command without its random container name (env values and run arguments are
        in it; secret values, passed through the engine's environment, as keyed digests), the
        image id (a rebuilt or re-pulled image makes the task out of date) and, when cuberun
        built the image from the cube's build context, that context's code identity (to say
        which file changed)."""
        step = plan.steps[-1]
        env = step.env
        name = f"--name={plan.value('container')}"
        command = [f"--name={_name_prefix(plan.task.name)}*" if a == name else a for a in step.argv]
        state = self.image_state()
        fp: dict[str, Any] = {"runner": self.name, "command": [command], "image": self.image, "image_id": state.id}
        locked = images.locked_value(self)
        if locked:
            fp["locked"] = locked
        if env:
            fp["env"] = self.env_identity(env, digest_all=True)
        if self.strategy != "pull" and self.recipe.is_file() and state.labels.get(HASH_LABEL) == self.context_hash():
            fp["build_context"] = self.context_code().to_json()
        return fp

    # -- inspect -------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        reason = self.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        image = self.image
        res = self._capture("image", "inspect", image)
        if res.returncode != 0:
            raise CuberunError(f"image {image} is not present locally", f"run: cuberun configure --platform={self.platform}")
        try:
            data = json.loads(res.stdout)
            entry = data[0] if isinstance(data, list) else data
        except (ValueError, IndexError, KeyError):
            raise BackendError(f"cannot parse the output of {self.engine} image inspect {image}") from None
        config = entry.get("Config") or {}
        labels = config.get("Labels") or entry.get("Labels") or {}
        digests = entry.get("RepoDigests") or []
        current = None
        if self.recipe.is_file():
            current = self.context_hash()
        recorded = labels.get(HASH_LABEL)
        return {
            "runner": self.name,
            "platform": self.platform,
            "engine": " ".join(self.executable),
            "image": image,
            "id": entry.get("Id"),
            "digest": digests[0].split("@", 1)[1] if digests and "@" in digests[0] else None,
            "repo_digests": digests,
            "created": entry.get("Created"),
            "build_strategy": self.strategy,
            "context_hash": recorded,
            "current_context_hash": current,
            "up_to_date": (recorded == current) if (recorded and current) else None,
            "labels": labels,
        }

