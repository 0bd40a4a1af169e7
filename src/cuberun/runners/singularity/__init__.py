"""The singularity runner: a task in a Singularity / Apptainer SIF image.

Compatible with the reference's `singularity:` keys (`image`, `image_dir`, `build_args`,
`run_args`, `build_file`, the CLI-set `--network`, `--security`, `--nv`, `--vm-ram`,
`--vm-cpu`, `--mount_opts`) and its invocation contract: `run SIF <task> --p=/mlcube_ioN...`
without a task entrypoint, `exec SIF <entrypoint tokens> --p=...` with one (parameters kept,
also for a single-token entrypoint), `--bind HOST:/mlcube_ioN[:ro]` mounts.

Fixed, compared with the reference:
- argv lists, no shell; paths with spaces work, paths with ',' or ':' use `--mount`;
- the SIF keeps the name `singularity.image` also when it is built from the `docker:` section
  (the reference renames it to `alnum(docker.image).sif`); without `image` that name is the default;
- `image_dir` defaults to a per-cube cache directory (`$CUBERUN_CACHE_DIR` or
  `~/.cache/cuberun`, then `singularity/<name>-<hash of the cube root>`), not
  `${runtime.workspace}/.image`: another `--workspace` does not rebuild. Set
  `image_dir: ${runtime.workspace}/.image` for the reference's layout;
- configure skips only when the SIF is current: it exists and is newer than its recipe (or
  `docker-archive:` tar). A rebuild passes `--force`; a failed or interrupted build removes
  the partial SIF, so it is never mistaken for a current one;
- the docker fallback (no recipe, no SIF) prefers `docker-archive:<docker.tar_file>`, then
  `docker-daemon:<docker.image>` when the local Docker engine has the image (offline builds
  of locally built images), then `docker://<docker.image>`;
- `--nv` only when GPUs are requested (`--gpus=0` means none; `platform.accelerator_count`
  counts), `CUDA_VISIBLE_DEVICES` for counts and device lists (host indexes: singularity does
  not renumber devices);
- the version probe (`singularity --version`) runs only when a run needs `--env` (Singularity
  < 3.6 has no `--env`: `SINGULARITYENV_<NAME>` variables are used instead), and its output is
  parsed tolerantly (extra lines, `-ce`, distribution suffixes);
- for images from the `docker:` section, `--pwd` is the Dockerfile's WORKDIR, so relative
  entrypoints (`python 01_download.py`) work; `pwd:` overrides it.

Tested for real against Apptainer 1.4.5 (tests/integration/test_apptainer_real.py, through the
wrapper of scripts/backends/apptainer.sh, named by the `singularity` setting like any install);
the command lines are also pinned by golden tests.

Modules: image.py (the configuration, the version probe, the SIF image and its source) <
runner.py (build and run commands, configure, failures, fingerprint, inspect).
"""

from cuberun.runners.singularity.image import Source, Version, alnum, parse_version
from cuberun.runners.singularity.runner import SingularityRunner

__all__ = ["SingularityRunner", "Source", "Version", "alnum", "parse_version"]
