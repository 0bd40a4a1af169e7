"""The image file of a container_config.yaml cube (an archive or SIF from a URL, with a sha256,
or encrypted; imagefetch.ImageSource) made ready for the container runners at configure.

- docker/podman: the file is downloaded into the cache or hashed (imagefetch), its image id
  read from its manifest.json, and it is loaded when the engine lacks that image. An encrypted
  archive is decrypted into a private folder (decrypt.py), loaded, and the decrypted tar is
  deleted at once; the loaded image is removed (`rmi -f <id>`) when the invocation ends
  (`Runner.release`), also after a failure or Ctrl-C, and also when it was present before (a
  previous invocation killed with SIGKILL), so the plain image does not stay on the host.
- singularity/apptainer: the SIF is downloaded or hashed and run from where it is; an encrypted
  SIF is decrypted into a private folder that lives until the invocation ends.
- charliecloud (charliecloud/archive.py): the archive is downloaded or hashed the same way and
  unpacked into a directory image, cached by its sha256; an encrypted one is decrypted with
  `hold_decrypted` and unpacked into the same private folder, deleted at release.
- k8s, kubeflow, backendai: their nodes run registry images, cuberun cannot load a file onto
  them; `refuse_image_file` is the one error (`-Prunner.image=REF` gets past it).
"""

from __future__ import annotations

from pathlib import Path

from cuberun import imagefetch  # decrypt (tempfile, shutil, atexit) only when an image is encrypted
from cuberun.errors import BackendError, UsageError
from cuberun.runners.base import Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.runners.base import Runner
    from cuberun.runners.docker import DockerRunner
    from cuberun.runners.singularity import SingularityRunner

PRIVATE = "<private temporary folder>"


class _Held:
    def __init__(self) -> None:
        self.loaded: list[str] = []  # image ids to remove from the engine at release
        self.files: Any = None  # a decrypt.Holder, made by the first decryption

    def holder(self) -> Any:
        if self.files is None:
            from cuberun import decrypt

            self.files = decrypt.Holder()
        return self.files


def _held(runner: Runner) -> _Held:
    held = runner.__dict__.get("_imagefile")
    if held is None:
        held = runner.__dict__["_imagefile"] = _Held()
    return held


def private_images(runner: Runner) -> list[str]:
    """The image ids loaded from an encrypted archive for this invocation (removed at release, or
    by the watchdog when cuberun is killed)."""
    return list(_held(runner).loaded)


def refuse_image_file(runner: Runner, sif_why: str, archive_onto: str, sif_hint: str, archive_hint: str) -> None:
    """Refuse a container_config.yaml image that is a file (DockerArchive, SingularityFile, their
    Encrypted kinds) on a runner whose nodes run registry images, in the runner's words: why they
    cannot run a SIF, what an archive cannot be loaded onto and why, and how to get the image there
    instead (the hints: push it, then `-Prunner.image=REF`, which gets past this)."""
    from cuberun.spec.container_config import DOCKER_IMAGE, FORMAT, SINGULARITY_FILE

    cube = runner.cube
    data = cube.doc.data if cube.format == FORMAT else None
    kind = data.get("container_type") if isinstance(data, dict) else None
    if kind is None or kind == DOCKER_IMAGE:
        return
    if kind.removeprefix("Encrypted") == SINGULARITY_FILE:
        raise UsageError(f"{cube.file}: container_type {kind}: the {runner.name} runner cannot run a SIF file ({sif_why})", sif_hint)
    raise UsageError(f"{cube.file}: container_type {kind}: the {runner.name} runner cannot load an image archive onto {archive_onto}", archive_hint)


def source(runner: Runner) -> imagefetch.ImageSource | None:
    return imagefetch.source_of(runner.cube)


def _image_id(path: Path, src: imagefetch.ImageSource) -> str:
    from cuberun.spec.container_config import archive_image_id

    image_id = archive_image_id(path)
    if image_id.startswith("error:"):
        raise BackendError(f"{src.location}: {image_id[6:]}", "give an archive written by `docker save` or `podman save`")
    return image_id


def _file_for_steps(src: imagefetch.ImageSource, given: str | None) -> str:
    digest = src.sha256 if given is None else imagefetch.normalize_sha256(given)
    if src.is_url:
        return str(imagefetch.cached_path(digest)) if digest else src.location
    return src.location


def docker_steps(runner: DockerRunner) -> list[Step] | None:
    """What configure runs for the cube's image file (the --dry-run); None: no image file."""
    src = source(runner)
    if src is None:
        return None
    file = _file_for_steps(src, runner.options.image_sha256)
    if not src.encrypted:
        return [Step((*runner.executable, "load", "--input", file), "load")]
    from cuberun import decrypt

    plain = f"{PRIVATE}/image.tar"
    key = Path(runner.options.decryption_key or "KEYFILE")
    return [Step(tuple(decrypt.gpg_argv(Path(file), key, Path(plain), Path(f"{PRIVATE}/gnupg"))), "decrypt"),
            Step((*runner.executable, "load", "--input", plain), "load")]


def prepare_docker(runner: DockerRunner) -> bool:
    """Make the cube's image file the runner's image; True when it is loaded already (an
    encrypted archive), False when the runner's own configure is to load it."""
    src = source(runner)
    if src is None:
        return False
    if not src.docker:
        raise UsageError(f"a {src.kind} runs on singularity or apptainer, not on {runner.engine}", "use --platform=singularity")
    file = imagefetch.local_file(src, runner.options.image_sha256)
    if not src.encrypted:
        runner.config["image"] = _image_id(file, src)
        runner.config["tar_file"] = str(file)
        runner._state = None
        return False
    from cuberun import decrypt

    key = decrypt.key_file(runner.options.decryption_key, f"{src.kind} {src.location}")
    with decrypt.decrypted(file, key, "image.tar") as plain:
        image_id = _image_id(plain, src)
        runner.config["image"] = image_id
        _held(runner).loaded.append(image_id)  # before the load: an interrupted load is removed too
        runner.config["tar_file"] = str(plain)
        runner._state = None
        try:
            if not runner.image_state().present:
                runner._fetch()
        finally:
            runner.config["tar_file"] = None
    runner._state = None
    return True


def sif_steps(runner: SingularityRunner) -> list[Step] | None:
    src = source(runner)
    if src is None or not src.encrypted:
        return None if src is None else []
    from cuberun import decrypt

    file = _file_for_steps(src, runner.options.image_sha256)
    key = Path(runner.options.decryption_key or "KEYFILE")
    return [Step(tuple(decrypt.gpg_argv(Path(file), key, Path(f"{PRIVATE}/image.sif"), Path(f"{PRIVATE}/gnupg"))), "decrypt")]


def prepare_sif(runner: SingularityRunner) -> None:
    """Point the runner at the checked (downloaded, decrypted) SIF of the cube."""
    src = source(runner)
    if src is None:
        return
    if src.docker:
        raise UsageError(f"a {src.kind} runs on docker or podman, not on singularity", "use --platform=docker (or podman)")
    file = imagefetch.local_file(src, runner.options.image_sha256)
    if src.encrypted:
        from cuberun import decrypt

        key = decrypt.key_file(runner.options.decryption_key, f"{src.kind} {src.location}")
        file = hold_decrypted(runner, file, key, "image.sif")
    runner.config["image"] = str(file)


def hold_decrypted(runner: Runner, encrypted: Path, key: Path, name: str) -> Path:
    """The plain content of `encrypted` as `<private folder>/<name>`; the folder (and whatever
    the runner puts in it) is deleted at `release`, at the latest when cuberun exits."""
    return Path(_held(runner).holder().hold(encrypted, key, name))


def release(runner: Any) -> None:
    """End of the invocation: delete decrypted files, remove images loaded from encrypted archives."""
    held = runner.__dict__.get("_imagefile")
    if held is None:
        return
    if held.files is not None:
        held.files.release()
    while held.loaded:
        image_id = held.loaded.pop()
        runner._capture("rmi", "-f", image_id)
        runner._state = None
