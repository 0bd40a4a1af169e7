"""What the batch runners (slurm, k8s, backendai, kubeflow) share: the submit -> follow -> cancel loop.

A batch backend takes work into a queue and runs it later, elsewhere: cuberun submits, follows
each submission's state and log until it ends, and maps the end onto an Outcome. `BatchRunner`
holds the algorithm once, for one task, a chain of dependent tasks (`run_chain`) or the
independent variants of a sweep (`run_array`):

1. plan every task first (every config problem surfaces before anything leaves this machine);
   one submission may run several tasks (`tasks_in`): a Slurm job array runs every variant of a
   sweep, a Kubeflow pipeline every task of a chain;
2. stage what the tasks need (uploads), then submit them in order, each after the previous
   one (the backend's dependency; in an array: independent), stopping at Ctrl-C;
3. follow them in order (the runner's `follow`, or `follow_all` for a submission of several
   tasks: bounded polling, log streaming, its own time bounds); in a chain the first non-zero
   outcome ends it and the submissions after it are cancelled; in an array every submission
   is followed to its end, unless Ctrl-C ends them all;
4. on any error, or Ctrl-C before the first one of a chain was followed, cancel what was
   submitted and not finished (an array's submissions are followed instead, each answering the
   Ctrl-C with one interrupted outcome per task): nothing submitted is ever left behind, unless
   the error says the backend can no longer be reached or the submission goes on by design
   (`leave_running`), where the cancel could not work or is not wanted (the error says what to
   cancel by hand instead).

A runner plugs in with small hooks: `plan_batch` (`plan_array` for sweeps), `tasks_in`,
`stage`, `submit`, `follow` (`follow_all`), `cancel`, `interrupted`, `watchdog_cleanup`.
`poll_interval` is the bounded backoff every follower uses. A runner whose backend answers
"what state is job X in" and "remove job X" can leave `follow`, `cancel` and `interrupted` to
`runners/batch_follow.py` (`PollingBatchRunner`): the HTCondor plugin does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cuberun.runners.base import Runner, TaskPlan

if TYPE_CHECKING:
    from cuberun.process import Outcome

P = TypeVar("P")  # the runner's plan of one task (a job script, a session)
S = TypeVar("S")  # one submission (a job id, a session)


def poll_interval(waited: float, base: float) -> float:
    """How long to wait before asking the backend again, `waited` seconds into a wait: fast while
    a short job may already be done (0.1 s, growing to `base` over the first seconds), then
    backing off to 2 s after two minutes and 5 s after ten (never below `base`)."""
    if waited > 600:
        return max(base, 5.0)
    if waited > 120:
        return max(base, 2.0)
    return min(base, 0.1 + waited / 20)


class BatchRunner(Runner, Generic[P, S]):
    """A runner whose tasks are submitted to a queue and followed until they end."""

    supports_chain: ClassVar[bool] = True
    # errors after which the submissions are left alone: the backend cannot be reached to cancel them
    leave_running: ClassVar[tuple[type[BaseException], ...]] = ()

    # -- the hooks ------------------------------------------------------------------------------
    def plan_batch(self, plans: Sequence[TaskPlan]) -> list[P]:
        """The submission plans of a run or a chain, in order, covering the planned tasks in order
        (`tasks_in` each; one per task by default); raises on any config problem (nothing is
        submitted yet)."""
        raise NotImplementedError

    def plan_array(self, plans: Sequence[TaskPlan]) -> list[P]:
        """The submission plans of a sweep's independent variants (e.g. ONE job array for all of
        them). Only called when `supports_array`."""
        raise NotImplementedError(f"runner '{self.name}' does not run arrays")

    def tasks_in(self, plan: P) -> int:
        """How many of the planned tasks one submission runs (a job array, a pipeline: several)."""
        return 1

    def stage(self, plan: P) -> None:
        """Make what the task reads available to the backend (e.g. upload its inputs)."""

    def submit(self, plan: P, after: S | None) -> S:
        """Submit one plan, to start after `after` has succeeded (None: at once)."""
        raise NotImplementedError

    def follow(self, submission: S, later: Sequence[S], log_path: str, cancel: Any) -> Outcome:
        """Wait (bounded) until the submission ends, streaming its log into `log_path`, and map its
        end to an Outcome. On Ctrl-C (`cancel.requested`) it cancels itself and `later`."""
        raise NotImplementedError

    def follow_all(self, submission: S, later: Sequence[S], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        """`follow` for a submission of `tasks_in` tasks: one outcome per task, in order (a chain's
        may end at its first non-zero one). Default: the one task's `follow`."""
        return [self.follow(submission, later, log_paths[0], cancel)]

    def cancel(self, submissions: Sequence[S], current: S | None, outcome: Outcome | None) -> None:
        """Cancel the submissions that have not finished, quietly (another error may be on its
        way). `outcome`: the non-zero outcome of `current` that ends the chain; None: an error."""
        raise NotImplementedError

    def interrupted(self, submitted: Sequence[S], cancel: Any) -> Outcome:
        """Ctrl-C came before the first submission was followed: cancel `submitted`, say so."""
        raise NotImplementedError

    def watchdog_cleanup(self, submission: S) -> list[list[str]]:
        """Commands a watchdog runs if cuberun is killed while `submission` is out (e.g. scancel)."""
        return []

    # -- the algorithm ----------------------------------------------------------------------------
    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        return self.run_batch([plan], [log_path])[0]

    def run_chain(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        return self.run_batch(plans, log_paths)

    def run_array(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        return self.run_batch(plans, log_paths, array=True)

    def run_batch(self, planned: Sequence[TaskPlan], log_paths: Sequence[str], *, array: bool = False) -> list[Outcome]:
        """Run `planned` as a chain (each submission after the previous one; the first failure ends
        it) or, `array`, as independent variants (every one followed to its end)."""
        from cuberun.process import handle_signals

        plans = self.plan_array(planned) if array else self.plan_batch(planned)
        groups: list[Sequence[str]] = []
        for plan in plans:
            first = sum(len(g) for g in groups)
            groups.append(log_paths[first : first + self.tasks_in(plan)])
        submitted: list[S] = []
        outcomes: list[Outcome] = []
        with handle_signals() as cancel, _watchdogs() as guards:
            try:
                for plan in plans:
                    if cancel.requested:
                        break
                    self.stage(plan)
                for plan in plans:
                    if cancel.requested:
                        break
                    after = submitted[-1] if submitted and not array else None
                    submitted.append(self.submit(plan, after))
                    cleanup = self.watchdog_cleanup(submitted[-1])
                    if cleanup:  # if cuberun is killed, its watchdog cancels the submission
                        from cuberun.process import watchdog

                        guards.append(watchdog(cleanup=cleanup))
                if cancel.requested and not (array and submitted):
                    return [self.interrupted(submitted, cancel)]
                # (an array's submissions are followed even then: each follower answers the Ctrl-C at
                # once, and every task gets its own interrupted outcome, as run_array promises)
                for i, (submission, paths) in enumerate(zip(submitted, groups, strict=False)):
                    group = self.follow_all(submission, submitted[i + 1 :], paths, cancel)
                    outcomes.extend(group)
                    failed = next((o for o in group if o.exit_code != 0), None)
                    if failed is not None and (not array or failed.interrupted or cancel.requested):
                        self.cancel(submitted[i:], submission, failed)
                        break
            except self.leave_running:
                raise
            except BaseException:
                self.cancel(submitted, None, None)  # never leave our submissions behind
                raise
        return outcomes


@contextmanager
def _watchdogs() -> Iterator[list[Any]]:
    """Watchdogs (process.watchdog) armed while submissions are followed, disarmed at the end."""
    guards: list[Any] = []
    try:
        yield guards
    finally:
        for guard in guards:
            guard.disarm()
