"""The Backend.AI runner: a task becomes a batch session, driven through the official client.

Design: cuberun runs the `backend.ai` executable (package `backend.ai-client`, the `backendai`
extra) out of process and imports nothing from it. The client brings ~85 packages and pins click
and rich, so it may live in its own virtualenv (`client: /opt/bai/bin/backend.ai`); it owns the
request signing, API-version negotiation, the storage-proxy transfer protocols and the event
stream, all of which change between manager releases. cuberun only builds argument lists and
reads the client's documented output. Endpoint and keys come from the client's own environment
variables (BACKEND_ENDPOINT, BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY); cuberun never writes them
to a run record or a log.

How a task runs (`cuberun run --platform=backendai`):

1. The workspace lives in one vfolder (`vfolder`, default `cuberun-<cube name>`), created if
   missing and mounted at `mount_point` (default `/mlcube_ws`). Every parameter is a path under
   the workspace, so `--p=/mlcube_ioN/x` becomes `--p=/mlcube_ws/<path in the workspace>/x`.
2. The task's inputs are packed into one tar archive and uploaded (one `vfolder upload`). The
   23.9 client uploads directories file by file and fails on existing directories, and cannot
   download directories at all; one archive each way avoids both.
3. `session create IMAGE --type batch --enqueue-only -t NAME -c STARTUP -m VF:/mlcube_ws -r ...
   -e ... [--depends PREVIOUS]`. The agent ignores the image's ENTRYPOINT, so STARTUP is the
   whole command, shell-quoted into one string (the agent runs it with `/bin/sh -c`): unpack the
   inputs, create the output directories, `cd <WORKDIR>` and run `<ENTRYPOINT> [<task>]
   --p=/mlcube_ws/...`, pack the outputs, exit with the task's code.
4. `session watch NAME --output json` until the session ends, while `session logs NAME` is
   polled and copied to our stdout and the run log. Then the outputs archive is downloaded and
   unpacked into the workspace (only the declared outputs, never outside them).
5. `--task=a,b`: every session is created at once, each with `--depends` on the one before.

A MedPerf container_config.yaml task (DockerImage only; an image file is refused: agents run
kernel images registered with the manager) runs its run_args: the entrypoint and command, its
environment (after the settings' env_args, before --env), `gpus` as `cuda.device` slots (`all`
and device lists: --gpus=N), `shm_size` as `--resource-opts shmem=BYTES` (the settings'
resource_opts win). Its volumes travel like parameters, through the workspace in the vfolder;
the startup command then places each one at its fixed mount path as a symbolic link into the
vfolder (an empty directory the image has there gives way; anything else, or a path the kernel
user cannot create, ends the session with 125 and a line saying so). Mount paths that overlap
the vfolder's mount point or each other are refused before anything runs.

A task's time limit (`tasks.<t>.timeout`, `--timeout`) is counted by cuberun from the session's
start, not its queue (limit.py): at the limit cuberun removes the session as Ctrl-C does, exit
124, `timed_out` in the record; retries make a new session per attempt (retry.py).

The exit code and the `session watch` pitfalls:

| what happened                                        | exit code                                  |
|------------------------------------------------------|--------------------------------------------|
| `session_success` event                              | its exitCode (0)                           |
| `session_failure` event                              | its exitCode (1 if absent or 0; 128+N for -N) |
| watch ended on `session_terminated`/`kernel_cancelled` (exit 0) without a success event | not trusted: `session info` decides; result SUCCESS -> 0, else the kernel's exit code or 1 |
| watch exit 3                                         | a task's exit 3 only with a `session_failure` event carrying exitCode 3; without one it is the client's --max-wait: cuberun stopped waiting, destroys the session, 124 |
| watch found no session ("No matching items": it already ended, or is not among the 10 newest) | `session info` decides (polled until the session ends) |
| Ctrl-C / SIGTERM                                     | `session rm` of this run's sessions, 128+signal |
| the task's time limit passed since the session started | `session rm` of the session, 124 (`timed_out`), unless a success event came first |
| session create refused                               | 125 (BackendError)                         |
| the manager refuses every call for 30 s after the watch ended (killed, down) | 125 (ManagerLost: one line naming the session, which may still run, and how to remove it) |

Modules, each layer a class on top of the one before: config.py (the config model, the client
and its environment, the image's ENTRYPOINT/WORKDIR, the vfolder) < plan.py (a task's session:
its `session create` command line, startup command, resources, environment, container_config
volume links; the dry-run steps) < transfer.py (the inputs archive up, the outputs archive down) < sessions.py (creating,
watching, confirming and removing sessions, the log follower) < runner.py (the BatchRunner
hooks); session.py holds the pure helpers (names, `session watch`/`info` verdicts, the startup
command, safe unpacking of the outputs archive) and limit.py the time limit's clock and words.
"""

from cuberun.runners.backendai.runner import BackendAIRunner

__all__ = ["BackendAIRunner"]
