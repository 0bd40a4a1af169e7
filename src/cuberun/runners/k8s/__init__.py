"""The k8s runner: each task becomes a Kubernetes `batch/v1` Job.

Contract (the reference's k8s keys, with its bugs fixed):
- the workspace is one volume mounted at `/mnt/mlcube/<pvc>` (the reference forgot the slash):
  a PersistentVolumeClaim (`volume: pvc`, the default; named by `pvc`, default the cube name,
  created by `configure` when `create_pvc: true`) or a `hostPath` for single-node clusters;
- a parameter at `<workspace>/<rel>` is passed as `--<param>=/mnt/mlcube/<pvc>/<rel>`; paths
  outside the workspace cannot be mounted and are an error;
- `[<task>] --p=...` as for containers, or the task's `entrypoint` tokens as the container
  command (task name dropped, parameters kept);
- a container_config.yaml task (DockerImage; image files are refused, `-Prunner.image` gets past
  that): its entrypoint as `command`, its command as `args`, its environment; each volume mounted
  from the workspace volume through `subPath` at its own mount path (no workspace mount), `shm_size`
  as a memory emptyDir at /dev/shm, `gpus` as a count;
- resources from the cube's `platform` block (`host_memory_gb` -> memory request and limit,
  `accelerator_count` or `--gpus=N` -> `nvidia.com/gpu` limit), `--memory`, `cpu`;
- a task's time limit and retries (retry.py: `--timeout`/`--retries`, `tasks.<t>.timeout`/
  `retries`) are the Job's `activeDeadlineSeconds` (rounded up) and `backoffLimit`: a Job past
  its deadline is exit 124 (cuberun deletes it, its pods go with it); each pod is an attempt;
- `run` creates the Job, waits for its pod (polling, with a bounded start deadline), streams
  the pod's log, returns the container's exit code (a failed Job is a failure), and deletes
  the Job (propagation Background) unless `keep_jobs: true`. Ctrl-C / SIGTERM delete the Job
  and return 130 / 143.
- `--dry-run` prints the manifests (the PVC when configure would create it, then one Job per
  task) as multi-document YAML that `kubectl apply -f -` accepts: Job names are unique names
  chosen by cuberun (`generateName` would not work with `kubectl apply`).

Every manifest is checked by `check_manifest` (DNS-1123 names, label syntax, restart policy,
resource quantities, volume references) before it is printed or submitted. The `kubernetes`
package is imported only when the API server is contacted, so `--dry-run` works without it.

Limits: cuberun does not copy data to or from a PVC. Inputs are checked in the local workspace
(the same directory as the volume with hostPath; with a PVC keep the two in step, or pass
--allow-missing-inputs), and up-to-date decisions see only the local workspace too. Auth plugins
named in a kubeconfig (exec credential helpers) are run by the kubernetes client itself.

Modules, each layer a class on top of the one before: config.py (settings, paths inside the pod,
the container's command and env, the policy) < plan.py (the Job, PVC and NetworkPolicy manifests;
the plan) < client.py (the kubernetes client, kubeconfig, configure, deletes) < follow.py (waiting
for a Job, pod logs, attempts) < runner.py (the batch hooks, fingerprint, inspect); api.py (the
API calls, errors and the log follower), manifests.py (names, quantities, manifest checks; pure)
and policy.py (the run policy on a Job; pure) hold what they use.
"""

from cuberun.runners.k8s.runner import KubernetesRunner

__all__ = ["KubernetesRunner"]
