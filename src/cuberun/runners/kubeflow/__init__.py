"""The kubeflow runner: the selected tasks as one Kubeflow Pipelines (KFP v2) pipeline.

Each task becomes a container component (the image, and `[<task>] --p=...` or the task's
entrypoint, exactly as for the k8s runner), with the workspace PVC (`pvc`, mandatory) mounted
at `/mnt/mlcube/<pvc>` through `kfp-kubernetes`, resources from the `platform` block, and an
`.after()` edge for every dependency in the task graph (a task whose input is another task's
output runs after it; `cuberun.depends_on` too). Caching is off by default: tasks have side
effects on the volume.

`run` compiles the pipeline offline with the `kfp` SDK and writes it to `output` (default
`<workspace>/.cuberun/kubeflow/<name>.yaml`). When `pipeline_host` is set it submits the file
(`kfp.Client(host).create_run_from_pipeline_package`), waits for the run with a deadline
(`timeout`), and reports each task's state: a failed task is a failed cuberun task; Ctrl-C
terminates the run. Without `pipeline_host` nothing runs: the compiled file is the result
(upload it in the KFP UI). Unlike the reference, `--task` is honoured and the run is awaited.

Task logs stay on the cluster (pod logs, the KFP UI): only state changes are printed.
`kfp` is imported only when a pipeline is compiled, so `--dry-run` works without it.

On the BatchRunner loop: the pipeline of a run or a chain is ONE submission that runs every task
(`tasks_in`), so `plan_batch` compiles it, `submit` creates the KFP run, `follow_all` polls it to
its end and gives one outcome per task (ending at the first failed one), `cancel` and
`interrupted` terminate it. A run that outlives `timeout`, or whose state cannot be read any
more, goes on on the server (`leave_running`): the error names it.

Modules: pipeline.py (the config, the component specs, the dry-run steps, the offline compile)
< runner.py (the KFP client and the batch hooks).
"""

from cuberun.runners.kubeflow.pipeline import ComponentStep
from cuberun.runners.kubeflow.runner import KubeflowRunner

__all__ = ["ComponentStep", "KubeflowRunner"]
