"""Verifiable images on the charliecloud runner: the Docker image it converts, pinned by digest
(`image: name@sha256:D`, `name:tag@sha256:D`) or locked in `cuberun.lock` (runners/images.py).

- With a Docker engine, configure makes the image present through the docker runner, whose
  configure checks the engine's image against the pin and the lock (images.verify) before it is
  converted; what it found (`pinned`, `locked`) goes into the run record.
- Without one (an HPC node using an image converted elsewhere), the converted image's own record
  (image.json: the image id and RepoDigests the engine gave it at conversion) is checked the
  same way: a converted image of another digest is refused before anything runs.
- `cuberun lock --platform=charliecloud` locks the Docker image the conversion takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cuberun.runners import images

if TYPE_CHECKING:
    from cuberun.runners.charliecloud.image import CharliecloudImage

RECONVERT = "convert it again where the Docker engine runs (cuberun configure --platform=charliecloud) and share the images_dir"


def stored_facts(runner: CharliecloudImage, meta: dict[str, Any]) -> dict[str, Any]:
    """Check a converted image used without an engine against the pin and the lock; what the run
    record says about it. ImageMoved (exit 2, one line) when it is another image."""
    docker = runner.docker_runner()
    ref = images.checked_ref(docker)
    digests = images.digests_for([str(d) for d in meta.get("repo_digests") or []], ref.name)
    what = ", ".join(digests) or f"an image with no registry digest ({meta.get('id')})"
    facts: dict[str, Any] = {}
    if ref.digest:
        if ref.digest not in digests:
            raise images.ImageMoved(f"the converted image {runner.rootfs} is {what}, not the pinned {ref.digest}; nothing ran", RECONVERT)
        facts["pinned"] = ref.digest
    locked = images.lock_entry(docker)
    if locked is not None:
        path, entry = locked
        if (entry.digest and entry.digest not in digests) or (not entry.digest and entry.id != meta.get("id")):
            raise images.ImageMoved(f"image {ref.text} moved: {path} locks {entry.value}, the converted image {runner.rootfs} is "
                                    f"{what if entry.digest else meta.get('id')}; nothing ran", f"{images.RELOCK_HINT}, or {RECONVERT}")
        facts["locked"] = {"file": str(path), **({"digest": entry.digest} if entry.digest else {"id": entry.id})}
    return facts


def identity(runner: CharliecloudImage, meta: dict[str, Any]) -> dict[str, Any]:
    """The converted Docker image for the run record: its id, registry digest and what was verified."""
    digests = [str(d) for d in meta.get("repo_digests") or []]
    ref = str(meta.get("image") or runner.image_ref)
    return {"ref": ref, "id": meta.get("id"), "digest": images.registry_digest(ref, digests), "repo_digests": digests, **runner._verified}
