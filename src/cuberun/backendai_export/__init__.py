"""Backend.AI kernel images from cubes: the `ai.backend.*` labels, inferred and written.

A Backend.AI agent only runs images that carry its kernel labels (kernelspec, features, resource
minimums, base distro, runtime type and path). Users of MLPerf-style cubes used to add them by
hand; this module derives them:

- `export_from_cube`: a Dockerfile `FROM <cube image>` plus one LABEL block. Values come from,
  highest first: the command-line flags, labels the image already carries, facts read from the
  image (`/etc/os-release` for the base distro, the image's `python3` for the runtime path), the
  cube's `platform` block (host_memory_gb, accelerator_count), then defaults. Every value says
  where it came from, so nothing is guessed silently.
- `rewrite_dockerfile`: adds the labels to the final stage of any Dockerfile. Existing
  `ai.backend.*` labels are kept (or updated in place when a flag names them), never duplicated;
  other labels, comments and continuation lines are left as they were.

Pure functions do the work (golden tests pin them); `probe_image` is the only part that talks to
the container engine, through `cuberun.process`.

`labels` names the labels and formats their values, `image` reads what an image says, `choose` picks
each value, `dockerfile` writes and rewrites Dockerfiles.
"""

from __future__ import annotations

from cuberun.backendai_export.choose import Choice, LabelOptions, choose_labels, describe_choices
from cuberun.backendai_export.dockerfile import Rewrite, final_stage_labels, parse_instructions, render_dockerfile, rewrite_dockerfile
from cuberun.backendai_export.image import ImageFacts, inspect_image, probe_image
from cuberun.backendai_export.labels import (
    ACCELERATORS,
    BASE_DISTRO,
    CORECOUNT,
    DEFAULT_BASE_DISTRO,
    DEFAULT_CORECOUNT,
    DEFAULT_MIN_CPU,
    DEFAULT_MIN_MEM,
    DEFAULT_RUNTIME_PATH,
    FEATURES,
    KERNELSPEC,
    MIN_CPU,
    MIN_CUDA,
    MIN_MEM,
    ORDER,
    PREFIX,
    PROBE_TIMEOUT,
    REQUIRED,
    RUNTIME_PATH,
    RUNTIME_TYPE,
    RUNTIME_TYPES,
    SERVICE_PORTS,
    derive_image_name,
    features_for,
    label_block,
    memory_label,
    parse_os_release,
    quote_value,
)

__all__ = [
    "ACCELERATORS",
    "BASE_DISTRO",
    "CORECOUNT",
    "DEFAULT_BASE_DISTRO",
    "DEFAULT_CORECOUNT",
    "DEFAULT_MIN_CPU",
    "DEFAULT_MIN_MEM",
    "DEFAULT_RUNTIME_PATH",
    "FEATURES",
    "KERNELSPEC",
    "MIN_CPU",
    "MIN_CUDA",
    "MIN_MEM",
    "ORDER",
    "PREFIX",
    "PROBE_TIMEOUT",
    "REQUIRED",
    "RUNTIME_PATH",
    "RUNTIME_TYPE",
    "RUNTIME_TYPES",
    "SERVICE_PORTS",
    "Choice",
    "ImageFacts",
    "LabelOptions",
    "Rewrite",
    "choose_labels",
    "derive_image_name",
    "describe_choices",
    "features_for",
    "final_stage_labels",
    "inspect_image",
    "label_block",
    "memory_label",
    "parse_instructions",
    "parse_os_release",
    "probe_image",
    "quote_value",
    "render_dockerfile",
    "rewrite_dockerfile",
]
