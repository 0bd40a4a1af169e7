"""The kubeflow runner on the BatchRunner loop: the pipeline of a run or a chain is ONE
submission of all its tasks. `plan_batch` compiles it (offline: every problem surfaces before
anything is submitted), `submit` creates the KFP run (`kfp.Client(host)
.create_run_from_pipeline_package`; without `pipeline_host` nothing is submitted and the
compiled file is the result), `follow_all` polls it until it ends or `timeout`, printing state
changes, and maps it onto one outcome per task; Ctrl-C and errors terminate the run."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cuberun.console import say, warn
from cuberun.errors import BackendError, RunnerUnavailable, TaskFailed
from cuberun.runners.k8s.api import Cancelled, _check_cancel, cancellable_sleep
from cuberun.runners.k8s.manifests import dns_label, unique_suffix
from cuberun.runners.kubeflow.pipeline import KubeflowPipeline, _first
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.runners.base import TaskPlan

DONE_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
OK_STATES = ("SUCCEEDED", "SKIPPED", "CACHED")


class RunLeftRunning(TaskFailed):
    """The KFP run outlived `timeout`: cuberun stops waiting, the run goes on on the server."""


class RunUnreadable(BackendError):
    """The KFP run's state could not be read: it may still be going on (the error says where)."""


@dataclass(frozen=True)
class PipelinePlan:
    """One submission: the compiled pipeline of these tasks."""

    names: tuple[str, ...]
    path: Path


@dataclass
class PipelineRun:
    """A submitted pipeline run (run_id None: compiled only, no pipeline_host)."""

    plan: PipelinePlan
    run_id: str | None = None
    client: Any = None
    started: float = 0.0
    finished: bool = False


class KubeflowRunner(KubeflowPipeline):
    # the hooks take the pipeline's plan and run, not the k8s runner's Job (hence the ignores)
    leave_running = (RunLeftRunning, RunUnreadable)

    # a seam for tests: called like kfp.Client(host=..., **client_args)
    client_factory: ClassVar[Callable[..., Any] | None] = None

    def client(self) -> Any:
        factory = type(self).client_factory
        if factory is None:
            import kfp

            factory = kfp.Client
        kwargs = {str(k): v for k, v in (self._get("client_args") or {}).items()}
        if self.kfp_namespace and "namespace" not in kwargs:
            kwargs["namespace"] = self.kfp_namespace
        try:
            with _stdout_to_stderr():
                return factory(host=self.host, **kwargs)
        except Exception as exc:
            raise RunnerUnavailable(f"cannot connect to the Kubeflow Pipelines API at {self.host}: {type(exc).__name__}: {_first(exc)}",
                                    "check pipeline_host (e.g. kubectl port-forward svc/ml-pipeline-ui 8080:80 -n kubeflow)") from None

    # -- the batch hooks (the loop is BatchRunner.run_batch; one pipeline, one submission) ---------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[PipelinePlan]:  # type: ignore[override]
        self._warn_ignored_options()
        tasks = [p.task for p in planned]
        return [PipelinePlan(tuple(t.name for t in tasks), self.compile(tasks))]

    def tasks_in(self, plan: PipelinePlan) -> int:  # type: ignore[override]
        return len(plan.names)

    def stage(self, plan: PipelinePlan) -> None:  # type: ignore[override]
        """Nothing to upload: the tasks read the workspace PVC."""

    def submit(self, plan: PipelinePlan, after: PipelineRun | None) -> PipelineRun:  # type: ignore[override]
        start = time.monotonic()
        if not self.host:
            return PipelineRun(plan, started=start, finished=True)
        client = self.client()
        run_id = self._create_run(client, plan.path, plan.names)
        say(f"submitted pipeline run {run_id} to {self.host} (experiment '{self.experiment}')")
        return PipelineRun(plan, run_id, client, start)

    def follow_all(self, submission: PipelineRun, later: Sequence[PipelineRun], log_paths: Sequence[str],  # type: ignore[override]
                   cancel: Any) -> list[Outcome]:
        from cuberun.process import Outcome

        plan, run_id = submission.plan, submission.run_id
        logs = [open(p, "ab") for p in log_paths]
        try:
            _log(logs, f"compiled pipeline '{self.pipeline_name}' ({', '.join(plan.names)}) to {plan.path}")
            if run_id is None:
                say(f"compiled pipeline '{self.pipeline_name}' to {plan.path}; not submitted: pipeline_host is not set")
                elapsed = time.monotonic() - submission.started
                return [Outcome(0, elapsed, details={"pipeline_file": str(plan.path), "submitted": False}) for _ in plan.names]
            _log(logs, f"submitted pipeline run {run_id} to {self.host} (experiment '{self.experiment}')")
            details = {"pipeline_file": str(plan.path), "run_id": run_id, "host": self.host}
            try:
                run = self._wait_run(submission.client, run_id, plan.names, logs)
            except Cancelled:
                say(f"interrupted: terminating pipeline run {run_id}")
                self._terminate(submission)
                sig = cancel.received or signal.SIGINT
                return [Outcome(128 + sig, time.monotonic() - submission.started, interrupted=True, received=sig,
                                reason=f"was interrupted (pipeline run {run_id} terminated)", details=details)]
            submission.finished = True
            return self._outcomes(run, run_id, plan.names, details, time.monotonic() - submission.started)
        finally:
            for fh in logs:
                fh.close()

    def cancel(self, submissions: Sequence[PipelineRun], current: PipelineRun | None, outcome: Outcome | None) -> None:  # type: ignore[override]
        for run in submissions:
            if not run.finished:
                self._terminate(run)

    def interrupted(self, submitted: Sequence[PipelineRun], cancel: Any) -> Outcome:  # type: ignore[override]
        from cuberun.process import Outcome

        self.cancel(submitted, None, None)
        sig = cancel.received or signal.SIGINT
        return Outcome(128 + sig, 0.0, interrupted=True, received=sig)

    def watchdog_cleanup(self, submission: PipelineRun) -> list[list[str]]:  # type: ignore[override]
        return []  # the KFP API has no command line to call

    # -- the KFP run ------------------------------------------------------------------------------
    def _terminate(self, run: PipelineRun) -> None:
        """Terminate the run, quietly (another error or the interrupt is on its way)."""
        if run.run_id is None or run.finished:
            return
        run.finished = True
        try:
            run.client.terminate_run(run.run_id)
        except Exception as exc:
            warn(f"could not terminate pipeline run {run.run_id}: {_first(exc)}")

    def _create_run(self, client: Any, path: Path, names: Sequence[str]) -> str:
        run_name = f"{self.pipeline_name}-{'-'.join(dns_label(n) for n in names)}"[:50] + f"-{unique_suffix()}"
        kwargs: dict[str, Any] = {
            "arguments": {},
            "run_name": run_name,
            "experiment_name": self.experiment,
            "enable_caching": bool(self.config.get("caching")),
        }
        if self.kfp_namespace:
            kwargs["namespace"] = self.kfp_namespace
        if self._get("service_account"):
            kwargs["service_account"] = self._get("service_account")
        try:
            with _stdout_to_stderr():  # kfp prints "Experiment details: URL" and "Run details: URL"
                result = client.create_run_from_pipeline_package(str(path), **kwargs)
        except Exception as exc:
            raise BackendError(f"submitting the pipeline to {self.host} failed: {type(exc).__name__}: {_first(exc)}",
                               f"the compiled pipeline is {path}; check pipeline_host and the credentials (client_args)") from None
        run_id = getattr(result, "run_id", None)
        if not run_id:
            raise BackendError(f"the Kubeflow Pipelines API at {self.host} returned no run id")
        return str(run_id)

    def _wait_run(self, client: Any, run_id: str, names: Sequence[str], logs: Sequence[IO[bytes]]) -> Any:
        timeout = self.seconds("timeout", 86400)
        interval = max(0.05, self.seconds("poll_interval", 5.0))
        deadline = time.monotonic() + timeout
        last_state: str | None = None
        task_states: dict[str, str] = {}
        while True:
            _check_cancel()
            try:
                run = client.get_run(run_id)
            except Exception as exc:
                raise RunUnreadable(f"reading pipeline run {run_id} failed: {type(exc).__name__}: {_first(exc)}",
                                    f"the run may still be going on: {self.host}/#/runs/details/{run_id}") from None
            state = _state(run)
            if state != last_state:
                _log(logs, f"pipeline run {run_id}: {state}")
                say(f"pipeline run {run_id}: {state}")
                last_state = state
            for name, (tstate, _) in _task_states(run, names).items():
                if task_states.get(name) != tstate:
                    task_states[name] = tstate
                    _log(logs, f"task '{name}': {tstate}")
                    say(f"task '{name}' in pipeline run {run_id}: {tstate}")
            if state in DONE_STATES:
                return run
            if time.monotonic() > deadline:
                raise RunLeftRunning(
                    f"pipeline run {run_id} did not finish within {timeout:g} s (state {state}); it goes on on the server",
                    124,
                    f"follow it at {self.host}/#/runs/details/{run_id}, or raise -Prunner.timeout=SECONDS",
                )
            cancellable_sleep(interval)

    def _outcomes(self, run: Any, run_id: str, names: Sequence[str], details: dict[str, Any], elapsed: float) -> list[Outcome]:
        """One outcome per task, ending at the first that did not succeed."""
        from cuberun.process import Outcome

        state = _state(run)
        if state in ("SUCCEEDED", "SKIPPED"):
            return [Outcome(0, elapsed, details=details) for _ in names]
        tasks = _task_states(run, names)
        outcomes: list[Outcome] = []
        for name in names:
            tstate, error = tasks.get(name, (None, None))
            if tstate in OK_STATES:
                outcomes.append(Outcome(0, elapsed, details=details))
                continue
            if tstate == "FAILED":
                why = f"failed in pipeline run {run_id}" + (f": {error}" if error else "") + f" (logs: {self.host}/#/runs/details/{run_id})"
            else:
                run_error = _error_message(getattr(run, "error", None))
                why = f"did not complete: pipeline run {run_id} ended {state}" + (f": {run_error}" if run_error else "")
            outcomes.append(Outcome(1, elapsed, reason=why, details=details))
            break
        return outcomes

    # -- inspect -------------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "runner": self.name,
            "platform": self.platform,
            "pipeline_host": self.host or None,
            "namespace": self.kfp_namespace,
            "experiment": self.experiment,
            "image": self.image,
            "pvc": self.pvc,
            "mount_path": self.mount_path,
            "output": str(self.output),
        }
        reason = self.unavailable_reason()
        info["kfp"] = None if reason else _kfp_version()
        if reason:
            info["unavailable"] = reason
        if self.host and not reason:
            try:
                health = self.client().get_kfp_healthz()
                info["server"] = {"multi_user": getattr(health, "multi_user", None)}
            except Exception as exc:
                info["server"] = {"error": _first(exc)}
        return info


def _stdout_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """Our stdout carries task output only: what the kfp client prints goes to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def _state(run: Any) -> str:
    value = getattr(run, "state", None)
    if value is None and isinstance(run, Mapping):
        value = run.get("state")
    return str(value or "UNKNOWN").upper()


def _error_message(error: Any) -> str | None:
    if error is None:
        return None
    message = getattr(error, "message", None)
    if message is None and isinstance(error, Mapping):
        message = error.get("message")
    return str(message) if message else None


def _task_states(run: Any, names: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Our tasks' states from a V2beta1Run (run_details.task_details, matched by display name)."""
    details = getattr(run, "run_details", None)
    items = getattr(details, "task_details", None) or []
    found: dict[str, tuple[str, str | None]] = {}
    wanted = set(names)
    for item in items:
        name = getattr(item, "display_name", None)
        if name in wanted:
            found[str(name)] = (str(getattr(item, "state", None) or "UNKNOWN").upper(), _error_message(getattr(item, "error", None)))
    return found


def _log(logs: Sequence[IO[bytes]], message: str) -> None:
    for fh in logs:
        try:
            fh.write(f"cuberun: {message}\n".encode())
            fh.flush()
        except (OSError, ValueError):
            pass


def _kfp_version() -> str | None:
    try:
        import kfp

        return str(kfp.__version__)
    except ImportError:
        return None
