"""The charliecloud runner: a task in a Charliecloud directory image, run with `ch-run`.

Unprivileged (user namespaces; no daemon, no setuid), so it fits HPC login and compute nodes.

Image: either a directory image the user already has (`image_dir:`, e.g. from `ch-image build`
or `ch-convert`), used as is, or the cube's Docker image (`image:`, default `docker.image`)
converted into a directory image under `images_dir` (default `$CUBERUN_CACHE_DIR` or
`~/.cache/cuberun`, then `charliecloud/`). Conversion makes the image present in the Docker
engine first (through the docker runner: pull, or build with `docker.build_strategy`), then
`docker create` + `docker export -o TAR` + `docker rm`, and extracts the tar with Python's
tarfile, refusing absolute and `..` members and any member or hard link that would land outside
the image (device files are skipped: ch-run binds the host's /dev). The image config
(Entrypoint, Cmd, WorkingDir, Env) from `docker image inspect` is stored in `image.json` next to
the `rootfs/` directory, with the image ID: configure converts again only when the ID changed,
and runs without any Docker engine once converted (an HPC node without Docker). With
`converter: ch-convert`, Charliecloud's `ch-convert -i docker -o dir` does the conversion
(Debian's charliecloud-builders package; it pulls in buildah and docker.io, so the built-in
export is the default).

Image archives (container_config.yaml `DockerArchive`, `EncryptedDockerArchive`; archive.py): the
`docker save` tar, from a path or a URL checked by its sha256, is unpacked by cuberun itself
(manifest.json, the layers one over the other with their whiteouts), no Docker engine needed;
cached by the archive's sha256, or, encrypted, decrypted and unpacked into a private folder
deleted when the invocation ends. A pinned digest (`image: name@sha256:...`) and `cuberun.lock`
are checked in the engine the image is converted from, or, without one, against the image id and
RepoDigests the conversion recorded (verify.py).

Run: `ch-run --unset-env=* --env-no-expand --set-env=K=V... -t --cd=WORKDIR -b HOST:/mlcube_ioN
... IMAGE -- <ENTRYPOINT> [task] --p=/mlcube_ioN/...` (a task entrypoint replaces ENTRYPOINT
and CMD, and the task name is dropped, as with Docker). The task's environment is the image's
Env, then PATH (if the image sets none), HOME=/tmp, USER, the host's proxy variables,
`env_vars`, CUDA_VISIBLE_DEVICES; the host environment is not passed (`clean_env: false`
passes it). `/tmp` is private to the task (`private_tmp`), the image is read-only unless
`write: true`, and the task runs as the invoking user (an image's USER is not applied), so
outputs are owned by that user.
ch-run needs `$USER`: it is set for ch-run when the environment lacks it. ch-run execs the task
(no supervisor process), so Ctrl-C reaches the task's process group directly.

Limits (Charliecloud 0.31): bind mounts are always read-write (`ch-run -b` has no read-only
mode), so inputs are NOT read-only under this runner; a bind target must exist in the image,
so the `/mlcube_ioN` mount points are created in the image directory (a user `image_dir` must
be writable once, or already contain them); host paths containing ':' cannot be bound; there
is no network isolation (the task shares the host network); GPUs need the NVIDIA libraries
injected into the image beforehand (`ch-fromhost --nvidia`); only CUDA_VISIBLE_DEVICES is set.

Modules, each layer a class on top of the one before: image.py (the configuration, the image's
store and run configuration, the Docker engine side) < convert.py (configure: the conversion into a
directory image, one at a time per image) < runner.py (the ch-run command, the run hooks, the
fingerprint, inspect); archive.py and verify.py are functions of the runner used by them.
"""

from cuberun.runners.charliecloud.runner import CharliecloudRunner

__all__ = ["CharliecloudRunner"]
