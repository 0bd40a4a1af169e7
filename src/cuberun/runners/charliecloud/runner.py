"""The charliecloud runner (the Runner contract): the ch-run command and its environment,
availability, the run hooks (mount points, network isolation, secrets on stdin, ch-run's own
errors), the fingerprint and inspect. The layers below: image.py < convert.py."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import BackendError, UsageError
from cuberun.records import log_tail
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import TaskPlan
from cuberun.runners.charliecloud.convert import CharliecloudConvert
from cuberun.runners.charliecloud.image import SCHEMA
from cuberun.runners.container import BindSyntax, EnvSyntax, pass_env, proxy_env
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CH_BIND = BindSyntax("-b", mount_flag=None, ro_suffix="")  # ch-run binds read-write only; no way to bind a path with ':'
# `--set-env=K=V`; a secret's value is read by ch-run from its stdin (`--set-env=/dev/stdin`), never from argv
CH_ENV = EnvSyntax("--set-env", joined=True)
SECRET_ENV_FILE = "/dev/stdin"
MAX_SECRET_INPUT = 60000  # below a pipe's buffer: written before ch-run starts
CH_ERROR = re.compile(r"^ch-run\[\d+\]: (?:error: )?(.*?)(?: \([\w.]+:\d+(?: \d+)?\))?\s*$")
CH_FAILURE_CODES = (1, 31)  # ch-run's own failures: 1 (0.31), 31 (later versions)


def _user_name() -> str:
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


class CharliecloudRunner(CharliecloudConvert):
    name = "charliecloud"
    section = "charliecloud"
    executable_key = "ch_run"
    default_executable = "ch-run"
    bind_syntax = CH_BIND
    identity_labels: ClassVar[Mapping[str, str]] = {"image_id": "image digest", "archive_sha256": "image archive sha256",
                                                    "locked": "locked image digest (cuberun.lock)"}
    image_keys: ClassVar[tuple[str, str | None] | None] = ("image", "image_id")
    schema: ClassVar[dict[str, Field]] = SCHEMA

    # -- steps (pure, apart from the cached image config) ------------------------------------------------
    def task_env(self, task: ResolvedTask | None = None) -> dict[str, str]:
        """The task's environment: the image's ENV, then cuberun's defaults, the task's own
        (container_config.yaml run_args.environment), the section's env_vars and the run options."""
        from cuberun.gpus import effective_gpus

        ic = self.image_config()
        env = dict(ic.env)
        clean = bool(self.config.get("clean_env", True))
        if clean:
            env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOME", "/tmp")
        env["USER"] = _user_name()
        if clean:
            env.update(proxy_env(env))
        if task is not None:
            env.update(task.environment)
        for key, value in (self.config.get("env_vars") or {}).items():
            env[str(key)] = "" if value is None else str(value)
        env.update(self.options.extra_env)
        if self.options.gpus is not None or self.cube.accelerator_count > 0:
            visible = effective_gpus(self.options.gpus, self.cube.accelerator_count).cuda_visible_devices()
            if visible is not None and "CUDA_VISIBLE_DEVICES" not in (self.config.get("env_vars") or {}):
                env["CUDA_VISIBLE_DEVICES"] = visible
        return env

    def run_argv(self, task: ResolvedTask) -> tuple[list[str], dict[str, str]]:
        """The ch-run command, and the secret variables ch-run reads from its stdin."""
        from cuberun.runners.container_policy import charliecloud_prefix

        cfg = self.config
        layout = self.layout(task)
        argv = [*charliecloud_prefix(self.policy(task), layout.mounts), *self.ch_run]
        if cfg.get("clean_env", True):
            argv.append("--unset-env=*")
        argv.append("--env-no-expand")
        more, secrets = pass_env(self.task_env(task).items(), CH_ENV)
        argv += more
        if secrets:
            argv.append(f"--set-env={SECRET_ENV_FILE}")
        if cfg.get("private_tmp", True):
            argv.append("--private-tmp")
        if cfg.get("write", False):
            argv.append("--write")
        argv.append(f"--cd={self.image_config().workdir or '/'}")
        for m in layout.mounts:
            if not CH_BIND.can_bind(m.host):
                raise UsageError(f"task '{task.name}': ch-run cannot bind {m.host} (the path contains ':')",
                                 "move the data to a path without ':' or override the parameter")
        argv += self.bind_args(layout)
        argv += as_tokens(cfg.get("run_args"))
        args = task.task_args(layout.args)
        if not args and not task.entrypoint:
            args = self.image_config().cmd  # as `docker run IMAGE` with no arguments: ENTRYPOINT + CMD
        argv += [str(self.rootfs), "--", *self.command(task), *args]
        return argv, secrets

    # -- availability ---------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        exe = self.missing_executable(self.ch_run[:1])
        if exe is not None:
            return (
                f"Charliecloud is not installed (no '{exe}' on the PATH). "
                "Hint: install it (Debian/Ubuntu: apt-get install charliecloud-runtime; HPC: module load charliecloud), "
                "or set -Prunner.ch_run=PATH"
            )
        return None

    # -- run ----------------------------------------------------------------------------------------------
    def ensure_mount_points(self, targets: Sequence[str], files: Sequence[str] = ()) -> None:
        """ch-run binds only onto what exists in the image: create /mlcube_ioN (directories) and,
        for `files` (a container_config.yaml file volume bound at its fixed path), an empty file.
        An empty directory in the file's place (left by cuberun before file volumes were known)
        becomes that file; anything else in the way is an error naming it."""
        rootfs = self.rootfs
        for target in targets:
            path = rootfs / target.lstrip("/")
            is_file = target in files
            try:
                if is_file:
                    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                        path.rmdir()
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
                    if not path.is_file():
                        raise BackendError(f"the image {rootfs} has a non-file at {target}, where a file volume is bound",
                                           "use an image without it, or mount the volume at another path")
                    continue
                if path.is_dir():
                    continue
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(
                    f"cannot create the mount point {target} in the image {rootfs}: {exc.strerror}",
                    f"create it once with write access ({'touch' if is_file else 'mkdir'} {path}), or use a converted image",
                ) from None

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import charliecloud_policy

        return charliecloud_policy(self, task)

    def before_run(self, plan: TaskPlan) -> None:
        mounts = self.layout(plan.task).mounts
        self.ensure_mount_points([m.target for m in mounts], [m.target for m in mounts if os.path.isfile(m.host)])

    def client_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)  # the secrets (`extra`) go through stdin: see client_stdin
        env.setdefault("USER", _user_name())  # ch-run refuses to start without $USER
        return env

    def client_stdin(self, extra: Mapping[str, str]) -> bytes | None:
        """The `--set-env` file of the secret variables: `NAME='VALUE'` lines (ch-run strips the
        outer quotes and, with --env-no-expand, expands nothing)."""
        if not extra:
            return None
        bad = [k for k, v in extra.items() if "\n" in v or "\0" in v]
        if bad:
            raise UsageError(f"the value of {bad[0]} holds a line break, which ch-run cannot be given", "pass it in a file instead")
        data = "".join(f"{k}='{v}'\n" for k, v in extra.items()).encode("utf-8", "surrogateescape")
        if len(data) > MAX_SECRET_INPUT:
            raise UsageError(f"the secret variables ({', '.join(extra)}) are larger than {MAX_SECRET_INPUT} bytes", "pass large values in a file")
        return data

    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        from cuberun.runners.charliecloud.sandbox import FAILED, PREFIX

        task = plan.task
        if outcome.exit_code == FAILED and outcome.signal is None:
            last = _last_error(log_tail(log_path))
            if last.startswith(PREFIX):
                return BackendError(f"cannot isolate ch-run for task '{task.name}': {last[len(PREFIX):]}",
                                    "ch-run 0.31 has no isolation of its own: cuberun needs unprivileged user namespaces for the network off "
                                    "and read-only inputs (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)")
        if outcome.exit_code in CH_FAILURE_CODES and outcome.signal is None:
            line = _ch_error(log_tail(log_path))
            if line:
                if "can't execve" in line:
                    return BackendError(f"the container of task '{task.name}' could not run its command: {line}",
                                        "check the task's entrypoint and the image's ENTRYPOINT (--dry-run prints the command)", exit_code=127)
                return BackendError(f"ch-run could not start task '{task.name}': {line}",
                                    "check the image directory and the bind paths (--dry-run prints the command)")
        return None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The ch-run command plus the image's identity: a converted image's Docker image ID, or,
        for an image_dir, its ch-image metadata (edit a directory image in place: use --force)."""
        argv, secrets = self.run_argv(task)
        src = self.archive_source()
        if src is not None and src.encrypted:
            from cuberun.runners.charliecloud.archive import fingerprint_command

            argv = fingerprint_command(argv, self.rootfs)
        fp: dict[str, Any] = {"runner": self.name, "command": [argv]}
        if secrets:
            fp["env"] = self.env_identity(secrets)
        user = self.user_image
        if src is not None:
            meta = self.stored_metadata()
            fp["image"] = src.location
            fp["image_id"] = meta.get("id") if meta else None
            fp["archive_sha256"] = meta.get("archive_sha256") if meta else None
        elif user is None:
            from cuberun.runners import images

            meta = self.stored_metadata()
            fp["image"] = self.image_ref
            fp["image_id"] = meta.get("id") if meta else None
            locked = images.locked_value(self.docker_runner())
            if locked is not None:
                fp["locked"] = locked
        else:
            import hashlib

            try:
                fp["image_metadata"] = hashlib.sha256((user / "ch" / "metadata.json").read_bytes()).hexdigest()
            except OSError:
                fp["image_metadata"] = None
        return fp

    def image_identity(self) -> dict[str, Any] | None:
        """The image that ran, for the run record: the converted image's id (the Docker image id,
        or an archive's config digest) and, for an archive, its sha256. None for an image_dir."""
        meta = self.stored_metadata()
        if meta is None or not meta.get("id"):
            return None
        src = self.archive_source()
        if src is None:
            from cuberun.runners.charliecloud.verify import identity

            return identity(self, meta)
        out: dict[str, Any] = {"ref": meta.get("image"), "id": meta.get("id"), "repo_digests": [], "archive_sha256": meta.get("archive_sha256")}
        if src.encrypted:
            del out["archive_sha256"]
            out["private"] = True  # unpacked from the decrypted archive, deleted after the run
        return out

    def lock_images(self, pull: bool = False) -> tuple[str, dict[str, dict[str, str]]] | None:
        """`cuberun lock`: lock the Docker image the conversion takes (verify.py); none for an
        image_dir or an image archive (an archive is checked by its sha256)."""
        if self.user_image is not None or self.archive_source() is not None:
            return None
        return self.docker_runner().lock_images(pull)

    # -- inspect --------------------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        info: dict[str, Any] = {"runner": self.name, "platform": self.platform, "rootfs": str(self.rootfs),
                                "exists": self.rootfs.is_dir()}
        src = self.archive_source()
        if src is not None:
            meta = self.stored_metadata()
            info.update(image=src.location, id=meta.get("id") if meta else None, archive_sha256=meta.get("archive_sha256") if meta else None,
                        converted=meta.get("converted") if meta else None)
        elif self.user_image is None:
            meta = self.stored_metadata()
            info["image"] = self.image_ref
            info["id"] = meta.get("id") if meta else None
            info["converted"] = meta.get("converted") if meta else None
            live = self._inspect_engine(quiet=True)
            info["engine_id"] = live.get("Id") if live else None
            info["up_to_date"] = (meta.get("id") == live.get("Id")) if (meta and live) else None
        ic = self.image_config()
        info["entrypoint"] = ic.entrypoint
        info["workdir"] = ic.workdir
        info["config_from"] = ic.origin
        return info


def _ch_error(text: str) -> str | None:
    """ch-run's own error, when it is the last thing in the log (ch-run fails before the task runs)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines:
        m = CH_ERROR.match(lines[-1])
        if m:
            return m.group(1)
    return None


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
