"""The charliecloud runner's conversion layer: configure (check a user image_dir, or convert the
Docker image into a directory image when it is new or changed), one conversion per image at a time."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import BackendError, BusyError, RunnerUnavailable, TaskFailed, UsageError
from cuberun.runners.base import Step
from cuberun.runners.charliecloud import verify
from cuberun.runners.charliecloud.archive import mount_points
from cuberun.runners.charliecloud.image import FORMAT, METADATA, PROBE_TIMEOUT, ROOTFS, CharliecloudImage
from cuberun.runners.rootfs import rmtree, safe_extract

if TYPE_CHECKING:
    from cuberun.progress import Activity

EXPORT_TIMEOUT = 3600.0
LOCK_TIMEOUT = 3600.0  # waiting for another conversion of the same image


class CharliecloudConvert(CharliecloudImage):
    """Configure: the conversion steps, the store lock and the conversion itself."""

    # -- conversion steps (pure, apart from the cached image config) ---------------------------------------
    def conversion_steps(self) -> list[Step]:
        """The commands of a conversion. The export is then extracted in-process into
        `.rootfs.new-<token>`, which replaces `rootfs` when complete."""
        image = self.image_ref
        store = self.store
        if self.converter == "ch-convert":
            kind = "podman" if self.engine_name == "podman" else "docker"
            return [Step(("ch-convert", "-i", kind, "-o", "dir", image, str(store / f".{ROOTFS}.new-{self._token}")), "convert")]
        return [
            Step((*self.engine, "create", f"--name={self._container}", image, "true"), "convert"),
            Step((*self.engine, "export", "-o", str(store / f".export-{self._token}.tar"), self._container), "convert"),
            Step((*self.engine, "rm", "-f", self._container), "convert"),
        ]

    def configure_steps(self) -> list[Step]:
        if self.user_image is not None:
            return []
        src = self.archive_source()
        if src is not None:
            from cuberun.runners.charliecloud import archive

            return archive.steps(self, src)
        live = self._inspect_engine(quiet=True)
        meta = self.stored_metadata()
        if live is not None and meta is not None and meta.get("id") == live.get("Id"):
            return []
        if live is None and meta is not None and self._engine_problem() is not None:
            return []  # no engine here: the converted image is used as is
        steps: list[Step] = []
        if live is None:
            steps += self.docker_runner().configure_steps()
        return steps + self.conversion_steps()

    # -- configure ------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Make the directory image ready: check a user image_dir, or convert the Docker image
        when it is new or changed. Quiet when nothing changed."""
        src = self.archive_source()
        if src is not None:  # a container_config.yaml image archive: unpacked, no Docker engine
            from cuberun.runners.charliecloud import archive

            archive.configure(self, src)
            self._configured = True
            return
        user = self.user_image
        if user is not None:
            if not user.is_dir():
                raise UsageError(f"charliecloud image_dir {user} is not a directory",
                                 "point image_dir at a directory image (ch-image build, ch-convert), or drop it to convert docker.image")
            self._configured = True
            return
        meta = self.stored_metadata()
        problem = self._engine_problem()
        if problem is None:
            docker = self.docker_runner()
            reason = docker.unavailable_reason()
            if reason is not None:
                if meta is None:
                    raise RunnerUnavailable(
                        f"cannot convert {self.image_ref} for Charliecloud: {reason.split('. Hint: ')[0]}. "
                        f"Hint: start {self.engine_name}{' (check DOCKER_HOST)' if self.engine_name == 'docker' else ''}, or convert where it runs and share "
                        f"-P{self.section}.images_dir, or point -P{self.section}.image_dir at a directory image"
                    )
                print(f"cuberun: note: using the converted image {self.rootfs} ({str(meta.get('id'))[:19]}): {reason}", file=sys.stderr)
                self._verified = verify.stored_facts(self, meta)
                self._configured = True
                return
            docker.configure()  # pull, or build per docker.build_strategy (quiet when present); checks the pin and the lock
            self._verified = dict(docker._verified)
            live = self._inspect_engine()
            if live is None:
                raise BackendError(f"{self.engine_name} has no image {self.image_ref} after configure",
                                   f"check: {' '.join(self.engine)} image inspect {self.image_ref}")
            if meta is None or meta.get("id") != live.get("Id"):
                with self._store_lock():
                    meta = self.stored_metadata()  # another cuberun may have converted it meanwhile
                    if meta is None or meta.get("id") != live.get("Id"):
                        self._convert(live, "no converted image yet" if meta is None else f"the image changed in {self.engine_name}")
        elif meta is None:
            raise RunnerUnavailable(
                f"cannot convert {self.image_ref} for Charliecloud: {problem}. "
                f"Hint: convert it where {self.engine_name} runs (cuberun configure --platform={self.platform}) and share "
                f"{self.store.parent} (-P{self.section}.images_dir=DIR), or point -P{self.section}.image_dir at a directory image"
            )
        else:  # no engine on this machine (an HPC node): the converted image is used as is, once checked
            self._verified = verify.stored_facts(self, meta)
        self._configured = True

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        """One conversion per image at a time (another cuberun may be converting it)."""
        import fcntl

        store = self.store
        store.mkdir(parents=True, exist_ok=True)
        with open(store / ".lock", "a+", encoding="utf-8") as fh:
            start = time.monotonic()
            told = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - start > LOCK_TIMEOUT:
                        raise BusyError(f"another cuberun has been converting {self.image_ref} for {LOCK_TIMEOUT:.0f} s ({store})",
                                        "wait for it, or remove the stale process") from None
                    if not told:
                        print(f"cuberun: waiting for another cuberun converting {self.image_ref}", file=sys.stderr, flush=True)
                        told = True
                    time.sleep(0.5)
            yield

    def _convert(self, live: dict[str, Any], why: str) -> None:
        import io
        import tarfile

        from cuberun import progress
        from cuberun.process import capture, stream

        store = self.store
        store.mkdir(parents=True, exist_ok=True)
        token = self._token
        new = store / f".{ROOTFS}.new-{token}"
        tar = store / f".export-{token}.tar"
        image = self.image_ref
        start = time.monotonic()
        print(f"cuberun: converting {image} into a Charliecloud directory image ({why}): {store / ROOTFS}", file=sys.stderr, flush=True)
        skipped: list[str] = []
        try:
            with progress.activity(f"converting {image} for Charliecloud", tick=_ExportSize(store)) as act:
                if self.converter == "ch-convert":
                    (step,) = self.conversion_steps()
                    act.phase("ch-convert")
                    tail = io.BytesIO()
                    echo = progress.shows_output()  # on a terminal the live line stands for its output (-v shows it)
                    outcome = stream(step.argv, log=tail, echo=act.sink(convert_line, echo=echo))
                    if outcome.interrupted:
                        raise TaskFailed(f"the conversion of {image} was interrupted", outcome.exit_code)
                    if outcome.exit_code != 0:
                        if not echo:  # show the end of what was hidden
                            sys.stderr.write(tail.getvalue()[-4096:].decode("utf-8", "replace"))
                        raise BackendError(f"'{shlex.join(step.argv)}' failed with exit code {outcome.exit_code}", "its output is above")
                else:
                    create, export, remove = self.conversion_steps()
                    try:
                        for step, phase in ((create, "creating a container"), (export, "exporting")):
                            act.phase(phase, unit="bytes" if step is export else "")
                            res = capture(step.argv, timeout=EXPORT_TIMEOUT)
                            if res.returncode != 0:
                                detail = (res.stderr.strip() or res.stdout.strip()).splitlines()
                                raise BackendError(
                                    f"converting {image} failed: '{shlex.join(step.argv)}' exited with {res.returncode}: {detail[-1] if detail else ''}",
                                    f"check that {self.engine_name} works and that {store} has space",
                                )
                    finally:
                        capture(remove.argv, timeout=PROBE_TIMEOUT)
                    try:
                        act.phase("extracting", total=tar.stat().st_size, unit="bytes")
                        skipped = safe_extract(tar, new, done=lambda n: act.update(done=n))
                        mount_points(new)  # what ch-run binds onto, when the image lacks it (a minimal image)
                    except (tarfile.TarError, OSError) as exc:
                        raise BackendError(f"cannot extract the export of {image}: {exc}", f"check the free space in {store}") from None
            meta = {
                "format": FORMAT,
                "image": image,
                "id": live.get("Id"),
                "repo_digests": live.get("RepoDigests") or [],
                "created": live.get("Created"),
                "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "converter": self.converter,
                "config": {k: (live.get("Config") or {}).get(k) for k in ("Entrypoint", "Cmd", "WorkingDir", "Env", "User")},
                "skipped": skipped[:50],
            }
            self._commit(new, meta)
        finally:
            for leftover in (tar, new, store / f".{METADATA}.{token}"):
                try:
                    rmtree(leftover)
                except OSError:
                    pass
        print(f"cuberun: converted {image} in {time.monotonic() - start:.1f} s", file=sys.stderr)

    def _commit(self, new: Path, meta: dict[str, Any]) -> None:
        """Make the complete directory image `new` (in the store) the store's image, with its metadata."""
        from cuberun.safeio import write_file

        store = self.store
        current = store / ROOTFS
        old = store / f".{ROOTFS}.old-{self._token}"
        if current.exists():
            current.rename(old)
        new.rename(current)
        write_file(store / METADATA, json.dumps(meta, indent=2) + "\n", what="image metadata")
        rmtree(old)
        self._image_config = None


class _ExportSize:
    """The bytes `docker export -o` has written so far (the activity's tick): the files directly
    in the image's store folder but its metadata and lock (the docker CLI writes a temporary
    file there and renames it at the end; podman writes the tar itself)."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def __call__(self, act: Activity) -> None:
        if act.stage != "exporting":
            return
        total = 0
        try:
            with os.scandir(self.store) as entries:
                for entry in entries:
                    if entry.name not in (METADATA, ".lock") and entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            return
        act.update(done=total)


def convert_line(line: str, act: Activity) -> None:
    """Progress from one line of ch-convert's output: the line itself, as what it does now."""
    act.update(note=line[:80])


