"""The docker runner: a task in a Docker or Podman container.

Compatible with the reference's `docker:` keys and invocation contract (`/mlcube_ioN` mounts,
`[<task>] --p=/mlcube_ioN[/file]`, `--entrypoint=FIRST IMAGE REST... --p=...`), with its bugs
fixed: argv lists (no shell), `--rm` plus a unique name and label so that no container is left
behind (also on Ctrl-C and failures), the host user's uid:gid inside the container, inputs
read-only by default, one GPU model (`--gpus` + CUDA_VISIBLE_DEVICES), proxy variables passed
to builds and runs, and single-token entrypoints that keep their parameters.

`build_strategy: auto` labels each image it builds with a hash of the build inputs (the
context without what `.dockerignore` excludes, the recipe, the build args) and rebuilds when
the hash changes, so an unchanged cube costs one `docker image inspect`.

The same runner drives Podman (`docker: podman`): runs get `--pull=never`, because the image is
always made present first and short names must never be resolved against a registry.

Modules: engine.py (the configuration; the image probe, from the API socket or `image inspect`;
availability) < runner.py (steps, the `docker run` command, configure, run hooks, identity,
inspect); commands.py (the pure helpers: `--gpus` values, container names, error lines, the build
context hash, `build_recipe`).
"""

from __future__ import annotations

from cuberun.runners.container import PROXY_VARS
from cuberun.runners.docker.commands import build_recipe, context_hash, gpus_value, new_container_name
from cuberun.runners.docker.engine import HASH_LABEL, RUN_LABEL, ImageState
from cuberun.runners.docker.runner import DockerRunner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["HASH_LABEL", "PROXY_VARS", "RUN_LABEL", "DockerRunner", "ImageState", "build_recipe", "context_hash", "gpus_value",
           "is_ignored", "new_container_name", "read_dockerignore"]

_IGNOREFILES = ("IgnoreRule", "is_ignored", "read_dockerignore")  # re-exported for older imports, from cuberun.ignorefiles


def __getattr__(name: str) -> Any:
    """The names re-exported from cuberun.ignorefiles, imported only when asked for (not on every run)."""
    if name in _IGNOREFILES:
        from cuberun import ignorefiles

        return getattr(ignorefiles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
