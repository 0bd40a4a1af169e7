"""The Slurm runner: a task becomes a batch job that runs `cuberun run` with an inner platform.

What it does for `cuberun run --platform=slurm`:

1. Renders a job script (a file, never a shell string we execute): `#SBATCH` lines for the job
   name, partition, account, qos, time, cpus, memory, GPUs (`--gres`), the job log and the working
   directory, then `exec <cuberun> run --task=<task> --platform=<inner> ...` with every parameter
   override, `-P` value and run option forwarded (runners/nested.py; the job's cuberun reports its
   run id and its own errors through the `--handshake` event lines in the job log). The script is named by its content hash, so
   concurrent runs never submit each other's script. `--dry-run` prints it as a `cat <<EOF` step.
2. Submits it with `sbatch --parsable` (chains: `--dependency=afterok:<previous> --kill-on-invalid-dep=yes`).
3. Waits: polls `scontrol show job -o` (adaptive: fast at first, gentler on the controller for
   long jobs), falling back to `sacct` (when accounting is enabled) and then the jobcomp file once
   scontrol has forgotten the job; meanwhile it follows the job log as it grows and copies it to
   our stdout and the run's log. Every wait is bounded: `max_wait` from submission, and the job's
   time limit plus a margin once it runs.
   A task's time limit (retry.py) is `--time` in whole minutes, rounded up, and the job's cuberun
   stops the task at the exact seconds (exit 124); retries are new submissions (the job's cuberun
   gets `--retries=0`), never `--requeue` (Slurm requeues after node failures, not task failures).
4. Ctrl-C / SIGTERM / SIGHUP: `scancel` of the jobs this run submitted (never any other), a bounded
   wait until Slurm reports them ended, exit 128+signal. A second signal escalates to SIGKILL.
5. Sweeps (`run_array`): the variants that are not up to date become ONE job array
   (`#SBATCH --array=0-N`, `%max` from `array_parallelism`) whose script execs element i's quoted
   cuberun command in a `case "$SLURM_ARRAY_TASK_ID"`. One `scontrol show job -o <array>` per poll
   follows every element (pending ones share the array's record; forgotten ones are looked up
   in sacct / the jobcomp log); each element's log (`<task>-<array>_<i>.log`) streams into its own
   run log and, line by line after `[<array>_<i>] `, to our stdout; each element gets its own
   outcome (the table below), and Ctrl-C cancels the whole array (`scancel <array>`).

Exit codes (the Outcome's exit code; execute turns a non-zero one into TaskFailed):

| job state                      | exit code                                                      |
|--------------------------------|----------------------------------------------------------------|
| COMPLETED                      | N of ExitCode N:S (0)                                          |
| FAILED, NODE_FAIL, others      | N; else 128+S when a signal S (1-31) killed it; else 125 (e.g. launch failure 0:53) |
| CANCELLED (not by us)          | N, or 128+S, else 143                                          |
| TIMEOUT, OUT_OF_MEMORY         | always 137 (128+SIGKILL: killed for exceeding a limit, whatever the task did with the warning SIGTERM; docker reports OOM kills the same way) |
| interrupted by Ctrl-C          | 128+signal (130)                                               |
| cuberun stopped waiting        | 124 (max_wait exceeded, or still running long past its time limit; the job is cancelled) |
| sbatch refused the job         | 125 (BackendError: unknown partition, bad gres/time/memory, ...) |
| controller unreachable         | 125 (RunnerUnavailable / BackendError)                          |

Modules, each layer a class on top of the one before: client.py (Slurm client calls: sbatch, scontrol,
sacct, scancel; job lookups), submit.py (the job script of a task or a sweep, sbatch), follow.py
(waiting for a job: polling, its log, cancelling, its outcome), arrays.py (a sweep as one job
array), runner.py (the Runner contract); jobs.py (job scripts and scheduler output, pure) and
logs.py (log tails, the jobcomp log, the job's handshake) hold what they use.
"""

from cuberun.runners.slurm.runner import SlurmRunner

__all__ = ["SlurmRunner"]
