"""A task's Backend.AI batch session, pure once the image is known: the session name (chosen
once per run), the parameters mapped into the vfolder, the startup command, `session create`
with resources and environment (secret values redacted where shown), the dry-run steps."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import UsageError
from cuberun.runners.backendai.config import BackendAIConfig
from cuberun.runners.backendai.session import SessionPlan, session_name, startup_command, workspace_relative
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container_policy import backendai_flags, backendai_policy
from cuberun.secretid import SECRET_NAME

if TYPE_CHECKING:
    from cuberun.gpus import GpuRequest
    from cuberun.policy import Policy
    from cuberun.resolve import ResolvedTask


class BackendAIPlan(BackendAIConfig):
    """Sessions as data."""

    # -- plans (pure once the image is known) -------------------------------------------------------
    def new_session_name(self, task: ResolvedTask) -> str:
        """A session name for one run of `task`: the prefix, the task and a random part."""
        return session_name(str(self.config.get("session_prefix") or "cuberun"), task.name, os.urandom(4).hex())

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """The task's steps under a session name chosen once for this run."""
        name = self.new_session_name(task)
        return TaskPlan(task, tuple(self._steps(self.session_plan(task, name=name))), {"session": name})

    def resources(self, task: ResolvedTask | None = None) -> list[tuple[str, str]]:
        res: dict[str, str] = {}
        memory = self.options.memory
        if memory:
            res["mem"] = str(memory)
        else:
            from cuberun.backendai_export import memory_label

            mem = memory_label(self.cube.platform.get("host_memory_gb"))
            if mem:
                res["mem"] = mem
        gpus = self.gpu_count(task)
        if gpus:
            res["cuda.device"] = str(gpus)
        for key, value in (self.config.get("resources") or {}).items():
            if value is None or value == "":
                res.pop(str(key), None)
            else:
                res[str(key)] = str(value)
        order = {"cpu": 0, "mem": 1, "cuda.device": 2, "cuda.shares": 3}
        return sorted(res.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))

    def gpu_count(self, task: ResolvedTask | None = None) -> int:
        """--gpus, else a container_config.yaml task's own run_args.gpus, else platform.accelerator_count:
        a count (Backend.AI allocates `cuda.device` slots; it cannot be given all GPUs or particular ones)."""
        from cuberun.gpus import gpu_count

        return gpu_count(self.options.gpus, self.cube, task, platform="backendai", allocates="Backend.AI allocates", refuse=_refuse_gpus)

    def resource_opts(self, task: ResolvedTask | None = None) -> list[tuple[str, str]]:
        """--resource-opts: a container_config.yaml task's run_args.shm_size as `shmem` (in bytes),
        then the settings' resource_opts (which win)."""
        opts: dict[str, str] = {}
        size = task.task.run_args.shm_size if task is not None and task.task.run_args is not None else None
        if size is not None:
            assert task is not None
            opts["shmem"] = str(shm_bytes(size, f"{self.cube.file}: tasks.{task.name}.run_args.shm_size"))
        for key, value in (self.config.get("resource_opts") or {}).items():
            if value is None or value == "":
                opts.pop(str(key), None)
            else:
                opts[str(key)] = str(value)
        return list(opts.items())

    def environment(self, task: ResolvedTask | None = None) -> list[tuple[str, str]]:
        """docker.env_args, the settings' env_args, the task's own (container_config.yaml
        run_args.environment), then --env."""
        env: dict[str, str] = {}
        docker = self.cube.raw_section("docker")
        if docker is not None and isinstance(docker.get("env_args"), dict):
            for key, value in self.cube.section("docker").get("env_args", {}).items():
                env[str(key)] = "" if value is None else str(value)
        for key, value in (self.config.get("env_args") or {}).items():
            env[str(key)] = "" if value is None else str(value)
        if task is not None:
            env.update(task.environment)
        env.update(self.options.extra_env)
        return list(env.items())

    def _ignored_options(self) -> list[str]:
        ignored = []
        for flag, value in (("--security", self.options.security), ("--cpu", self.options.cpus)):
            if value:
                ignored.append(flag)
        return ignored

    def session_plan(self, task: ResolvedTask, produced: Sequence[str] = (), after: str | None = None, name: str | None = None) -> SessionPlan:
        """The session for one task (named `name`, default: a new name). `produced`:
        workspace-relative outputs of the tasks before it in the same chain (already in the
        vfolder, so not uploaded); `after`: the session it depends on."""
        mount = self.mount_point
        name = name or self.new_session_name(task)
        inputs: list[str] = []
        outputs: list[str] = []
        output_dirs: list[str] = []
        args: list[str] = []
        for p in task.params:
            rel = workspace_relative(p.host_path, task.workspace)
            if rel is None:
                raise UsageError(
                    f"backendai: task '{task.name}', {p.io} '{p.name}': {p.host_path} is outside the workspace {task.workspace}",
                    "only the workspace travels to the vfolder: put it under the workspace, or choose another --workspace",
                )
            inside = mount if rel == "." else posixpath.join(mount, rel)
            args.append(f"--{p.name}={inside}")
            if p.io == "output":
                if rel not in outputs:
                    outputs.append(rel)
                folder = rel if p.type == "directory" else posixpath.dirname(rel)
                if folder and folder != "." and folder not in output_dirs:
                    output_dirs.append(folder)
            else:
                pending = any(rel == o or rel.startswith(o.rstrip("/") + "/") or o == "." for o in produced)
                if not pending and p.host_path.exists() and rel not in inputs:
                    inputs.append(rel)
        command = self.task_command(task, args)
        _, workdir = self.image_command()
        in_tar = f".cuberun-{name}-in.tar" if inputs else None
        out_tar = f".cuberun-{name}-out.tar" if outputs else None
        links = self.volume_links(task)
        output_files = [workspace_relative(p.host_path, task.workspace) or "" for p in task.params
                        if p.mount_path is not None and p.io == "output" and p.type == "file"]
        startup = startup_command(command, mount=mount, workdir=workdir, in_tar=in_tar, out_tar=out_tar, outputs=outputs, output_dirs=output_dirs,
                                  output_files=output_files, links=links)
        real, shown = self._create_argv(task, name, startup, after)
        return SessionPlan(task, name, command, startup, inputs, outputs, in_tar, out_tar, shown, real)

    def volume_links(self, task: ResolvedTask) -> list[tuple[str, str]]:
        """A container_config.yaml task: (where the volume is in the session's vfolder, its mount
        path) for each volume; the session's startup command links each mount path to its place.
        A mount path that overlaps the vfolder's mount point, or another mount path, cannot be a link."""
        mount = self.mount_point
        links: list[tuple[str, str]] = []
        for p in task.params:
            if p.mount_path is None:
                continue
            rel = workspace_relative(p.host_path, task.workspace)
            assert rel is not None  # session_plan checked it
            where = f"{self.cube.file}: tasks.{task.name}, {p.io} volume '{p.name}'"
            target = p.mount_path
            if _overlaps(target, mount):
                raise UsageError(f"{where}: its mount path {target} overlaps the vfolder's mount point {mount} in the session",
                                 "mount the vfolder elsewhere: -Prunner.mount_point=/cuberun_ws")
            other = next((t for _, t in links if _overlaps(t, target)), None)
            if other is not None:
                raise UsageError(f"{where}: its mount path {target} and {other} are nested; on Backend.AI each volume is a "
                                 "symbolic link at its mount path, and links cannot nest", "give the volumes mount paths side by side")
            links.append((mount if rel == "." else posixpath.join(mount, rel), target))
        return links

    def policy(self, task: ResolvedTask) -> Policy:
        return backendai_policy(self, task)

    def _create_argv(self, task: ResolvedTask, name: str, startup: str, after: str | None) -> tuple[list[str], list[str]]:
        head = [*self.client, "session", "create", self.image, "--type", "batch", "--enqueue-only", "-t", name, "-c", startup,
                "-m", f"{self.vfolder}:{self.mount_point}"]
        for key, value in self.resources(task):
            head += ["-r", f"{key}={value}"]
        for key, value in self.resource_opts(task):
            head += ["--resource-opts", f"{key}={value}"]
        real, shown = list(head), list(head)
        for key, value in self.environment(task):
            real += ["-e", f"{key}={value}"]
            shown += ["-e", f"{key}=<redacted>" if SECRET_NAME.search(key) else f"{key}={value}"]
        tail: list[str] = backendai_flags(self.policy(task))
        if after:
            tail += ["--depends", after]
        if self.config.get("group"):
            tail += ["-g", str(self.config["group"])]
        if self.config.get("scaling_group"):
            tail += ["--scaling-group", str(self.config["scaling_group"])]
        tail += [str(a) for a in self.config.get("create_args") or []]
        return real + tail, shown + tail

    def _staging(self, task: ResolvedTask) -> Path:
        return Path(task.workspace) / ".cuberun" / "backendai"

    def _steps(self, plan: SessionPlan) -> list[Step]:
        stage = str(self._staging(plan.task))
        public = self.public_env()
        steps: list[Step] = []
        if plan.in_tar:
            steps.append(Step(("tar", "-cf", posixpath.join(stage, plan.in_tar), "-C", str(plan.task.workspace), "--", *plan.inputs), "pack"))
            steps.append(Step((*self.client, "vfolder", "upload", self.vfolder, plan.in_tar, "-b", stage), "upload", env=public))
        steps.append(Step(tuple(plan.create_argv), "submit", env=public))
        steps.append(Step((*self.client, "session", "watch", plan.name, "--output", "json", "--max-wait", str(int(self._max_wait()))), "wait", env=public))
        if plan.out_tar:
            steps.append(Step((*self.client, "vfolder", "download", self.vfolder, plan.out_tar, "-b", stage), "download", env=public))
        return steps

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return list(self.plan(task).steps)

    def configure_steps(self) -> list[Step]:
        steps = [Step((*self.client, "vfolder", "info", self.vfolder), "check-vfolder", env=self.public_env())]
        if self.config.get("create_vfolder", True):
            host = self.config.get("vfolder_host")
            steps.append(Step((*self.client, "vfolder", "create", self.vfolder, *([str(host)] if host else [])), "create-vfolder (if missing)",
                              env=self.public_env()))
        return steps

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """What the result depends on: the task's command in the session, the image, where the
        workspace is mounted, resources and environment (secret values redacted). Not the session
        name, the transfer archives or the dependencies, which change from run to run."""
        plan = self.session_plan(task, name="-")
        _, workdir = self.image_command()
        from cuberun.secretid import secret_digest

        env = [f"{k}={secret_digest(v)}" if SECRET_NAME.search(k) else f"{k}={v}" for k, v in self.environment(task)]
        identity = {"runner": self.name, "command": [plan.command], "image": self.image, "vfolder": self.vfolder, "mount_point": self.mount_point,
                    "workdir": workdir, "resources": [f"{k}={v}" for k, v in self.resources(task)], "env": env}
        if task.task.run_args is not None:  # container_config.yaml: where each volume is, /dev/shm
            identity["volumes"] = [list(link) for link in self.volume_links(task)]
            identity["resource_opts"] = [f"{k}={v}" for k, v in self.resource_opts(task)]
        return identity


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def shm_bytes(value: str, what: str) -> int:
    """A container_config.yaml `shm_size` (docker's --shm-size) in bytes, as Backend.AI's `shmem` takes it."""
    from cuberun.runners.k8s.manifests import shm_quantity

    quantity = shm_quantity(value, what)  # checked: more than 0, whole bytes rounded up; 2Gi, 1536Mi, 512Ki or bytes
    units = {"Gi": 1 << 30, "Mi": 1 << 20, "Ki": 1 << 10}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def _refuse_gpus(request: GpuRequest) -> UsageError:
    if request.all:
        return UsageError("backendai: --gpus=all cannot be requested from Backend.AI", "give a count, e.g. --gpus=2")
    return UsageError("backendai: Backend.AI assigns GPUs itself; devices cannot be chosen", f"give a count: --gpus={len(request.devices)}")
