"""`cuberun lock`: write the digests of a cube's images into cuberun.lock next to the cube file."""

from __future__ import annotations

import sys

import click

from cuberun.cli.commands import mlcube_option, p_option, platform_option, workspace_option

HELP = """Write cuberun.lock next to the cube file: the digest of every image the cube's tasks use.

\b
Each image is made present first (pulled or built as `cuberun run` would); its registry
(manifest) digest is locked, or, for an image with none (built locally and never pushed or
pulled), its image id. With --pull the registry's current image for the tag is pulled first.
Later runs on docker/podman verify the image against the lock and refuse one that moved
(`cuberun run --no-lock` skips the check; `cuberun lock` again accepts the new image)."""


@click.command("lock", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@mlcube_option
@platform_option
@workspace_option
@p_option
@click.option("--pull", is_flag=True, help="Pull the image from its registry first (take what its tag names there now).")
def lock(mlcube: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...], pull: bool) -> int:
    from cuberun import api

    result = api.lock(mlcube or ".", platform=platform, workspace=workspace, params=params, pull=pull, echo=True)
    for ref, entry in result.images.items():
        what = f"digest {entry['digest']}" if "digest" in entry else f"image id {entry['id']} (no registry digest: built locally)"
        print(f"{ref}: {what}")
    print(f"cuberun: wrote {result.path}", file=sys.stderr)
    return 0
