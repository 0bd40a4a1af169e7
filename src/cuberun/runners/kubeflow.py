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
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cuberun.console import say, warn
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, TaskFailed, UsageError
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.k8s import KubernetesRunner
from cuberun.runners.k8s_api import Cancelled, _check_cancel, cancellable_sleep
from cuberun.runners.k8s_manifests import PULL_POLICIES, dns_label, unique_suffix
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask

KFP_HINT = "pip install 'cuberun[kubeflow]'"
DONE_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
OK_STATES = ("SUCCEEDED", "SKIPPED", "CACHED")


@dataclass(frozen=True)
class ComponentStep(Step):
    """One task of the pipeline. `--dry-run` prints it as comment lines (the compiled pipeline
    is written by `cuberun run`); argv is the container's command line."""

    spec: Mapping[str, Any] = field(default_factory=dict)

    def display(self) -> str:
        s = self.spec
        lines = [f"# kubeflow pipeline '{s['pipeline']}', task '{s['task']}'"
                 + (f" (after: {', '.join(s['after'])})" if s["after"] else "")]
        lines.append(f"#   image:   {s['image']}")
        if s.get("command"):
            lines.append(f"#   command: {' '.join(s['command'])}")
        lines.append(f"#   args:    {' '.join(s['args'])}")
        lines.append(f"#   volume:  pvc {s['pvc']} at {s['mount_path']}" + (f" (subPath {s['sub_path']})" if s.get("sub_path") else ""))
        if s.get("resources"):
            lines.append("#   resources: " + ", ".join(f"{k}={v}" for k, v in s["resources"].items()))
        lines.append(f"#   compiled to {s['output']}; " + (f"submitted to {s['host']}" if s["host"] else "not submitted (no pipeline_host)"))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["component"] = dict(self.spec)
        return data


class KubeflowRunner(KubernetesRunner):
    name = "kubeflow"
    section = "kubeflow"
    supports_chain = True
    native_retries = enforces_timeout = False  # not mapped onto KFP: cuberun retries; a time limit is ignored, with a warning (retry.py)
    schema: ClassVar[dict[str, Field]] = {
        "image": Field((str,), doc="container image (default: docker.image)"),
        "pvc": Field((str,), doc="PersistentVolumeClaim holding the workspace (required)"),
        "namespace": Field((str,), default="default", doc="Kubeflow profile namespace of multi-user deployments ('default': none)"),
        "pipeline_host": Field((str,), default="", doc="KFP API endpoint (e.g. http://localhost:8080); empty: compile only"),
        "output": Field((str,), doc="the compiled pipeline (default: <workspace>/.cuberun/kubeflow/<name>.yaml)"),
        "experiment": Field((str,), doc="experiment of the runs (default: the cube name)"),
        "sub_path": Field((str,), default="", doc="the workspace's directory inside the PVC (default: its root)"),
        "timeout": Field((int, float, str), default=86400, doc="seconds to wait for a submitted run"),
        "poll_interval": Field((int, float, str), default=5.0, doc="seconds between run status polls"),
        "caching": Field((bool,), default=False, doc="let KFP reuse earlier task results"),
        "memory": Field((str, int), doc="memory request and limit (default: platform.host_memory_gb; --memory wins)"),
        "cpu": Field((str, int, float), doc="CPU request and limit, e.g. 2 or 500m"),
        "gpu_resource": Field((str,), default="nvidia.com/gpu", doc="the accelerator resource type"),
        "image_pull_policy": Field((str,), choices=PULL_POLICIES, doc="Always | IfNotPresent | Never"),
        "service_account": Field((str,), doc="service account of the run"),
        "env": Field((dict,), default={}, env=True, doc="environment variables of the tasks"),
        "client_args": Field((dict,), default={}, doc="more keyword arguments for kfp.Client (existing_token, cookies, ssl_ca_cert, ...)"),
    }

    # a seam for tests: called like kfp.Client(host=..., **client_args)
    client_factory: ClassVar[Callable[..., Any] | None] = None

    # -- configuration ---------------------------------------------------------------------------
    @property
    def pvc(self) -> str:
        value = self._get("pvc")
        if value is None:
            raise UsageError(
                f"the {self.name} runner needs the PersistentVolumeClaim that holds the workspace",
                f"set pvc: NAME in the {self.name} platform settings or the cube's kubeflow: section, or -Prunner.pvc=NAME",
            )
        return str(value)

    @property
    def volume(self) -> str:
        return "pvc"

    @property
    def host(self) -> str:
        return str(self._get("pipeline_host") or "").rstrip("/")

    @property
    def pipeline_name(self) -> str:
        return dns_label(self.cube.name, 63, "cube")

    @property
    def output(self) -> Path:
        value = self._get("output")
        if value is None:
            return self.cube.workspace / ".cuberun" / "kubeflow" / f"{self.pipeline_name}.yaml"
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else Path.cwd() / path

    @property
    def experiment(self) -> str:
        return str(self._get("experiment") or self.cube.name)

    @property
    def kfp_namespace(self) -> str | None:
        ns = self._get("namespace")
        return None if ns in (None, "default") else str(ns)

    def dependencies(self, names: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """task -> the tasks among `names` it must run after (through tasks not in `names` too)."""
        deps = self.task_graph(overrides)
        chosen = set(names)
        result: dict[str, list[str]] = {}
        for name in names:
            found: list[str] = []
            seen: set[str] = set()
            stack = list(deps.get(name, []))
            while stack:
                dep = stack.pop(0)
                if dep in seen:
                    continue
                seen.add(dep)
                if dep in chosen:
                    if dep not in found:
                        found.append(dep)
                else:
                    stack.extend(deps.get(dep, []))
            result[name] = [n for n in names if n in found]
        return result

    def component_spec(self, task: ResolvedTask, after: Sequence[str]) -> dict[str, Any]:
        command, args = self.container_args(task)
        resources: dict[str, str] = {}
        memory = self.memory()
        if memory:
            resources["memory"] = memory
        if self._get("cpu") is not None:
            resources["cpu"] = str(self._get("cpu"))
        gpus = self.gpu_count()
        if gpus:
            resources[str(self._get("gpu_resource") or "nvidia.com/gpu")] = str(gpus)
        return {
            "pipeline": self.pipeline_name,
            "task": task.name,
            "after": list(after),
            "image": self.image,
            "command": command or [],
            "args": args,
            "env": {e["name"]: e["value"] for e in self.env()},
            "pvc": self.pvc,
            "mount_path": self.mount_path,
            "sub_path": self.sub_path,
            "resources": resources,
            "output": str(self.output),
            "host": self.host,
        }

    # -- steps (pure) ------------------------------------------------------------------------------
    def policy(self, task: ResolvedTask) -> None:  # type: ignore[override]
        """The k8s runner's policy (securityContext, NetworkPolicy) is not mapped onto KFP components."""
        return None

    def _warn_ignored_options(self) -> None:
        super()._warn_ignored_options()
        for flag, value in (("--network", self.options.network), ("--mount", self.options.mount)):
            if value:
                warn(f"{flag}={value} does not apply to the {self.name} runner and is ignored")

    def configure_steps(self) -> list[Step]:
        return []

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        after = self.task_graph(task.overrides).get(task.name, [])
        spec = self.component_spec(task, after)
        return [ComponentStep((*spec["command"], *spec["args"]), "kubeflow-task", spec=spec)]

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        spec = self.component_spec(task, [])
        return {
            "runner": self.name,
            "command": [[*spec["command"], *spec["args"]]],
            "image": spec["image"],
            "resources": spec["resources"],
            "pvc": spec["pvc"],
            "mount_path": spec["mount_path"],
            "submit": self.host,
        }

    # -- kfp -----------------------------------------------------------------------------------------
    def _import(self) -> Any:
        try:
            import kfp
        except ImportError:
            raise RunnerUnavailable(f"the {self.name} runner needs the 'kfp' package", KFP_HINT) from None
        try:
            from kfp import kubernetes  # noqa: F401 - the kfp-kubernetes extension mounts the PVC
        except ImportError:
            raise RunnerUnavailable(
                f"the {self.name} runner needs the 'kfp-kubernetes' package to mount the workspace PVC into the tasks", KFP_HINT
            ) from None
        return kfp

    def unavailable_reason(self) -> str | None:
        try:
            self._import()
        except RunnerUnavailable as exc:
            return exc.lines()[0]
        return None

    def configure(self) -> None:
        """Nothing to prepare: the pipeline is compiled per run (the PVC must exist on the cluster)."""

    def pipeline_function(self, tasks: Sequence[ResolvedTask]) -> Any:
        """The KFP pipeline function for `tasks` (in dependency order)."""
        self._import()
        from kfp import dsl
        from kfp import kubernetes as kfk

        names = [t.name for t in tasks]
        overrides: dict[str, str] = {}
        for t in tasks:
            overrides.update(t.overrides)
        deps = self.dependencies(names, overrides)
        specs = [self.component_spec(t, deps[t.name]) for t in tasks]
        seen: dict[str, str] = {}
        for spec in specs:
            key = dns_label(spec["task"])
            if key in seen:
                raise UsageError(f"tasks '{seen[key]}' and '{spec['task']}' have the same name in a KFP pipeline ('{key}')",
                                 "run them in separate invocations (--task)")
            seen[key] = spec["task"]
        components = {spec["task"]: _container_component(spec) for spec in specs}
        caching = bool(self.config.get("caching"))
        pull_policy = self._get("image_pull_policy")

        def pipeline() -> None:
            made: dict[str, Any] = {}
            for spec in specs:
                task = components[spec["task"]]()
                task.set_display_name(spec["task"])
                task.set_caching_options(caching)
                for dep in spec["after"]:
                    task.after(made[dep])
                res = spec["resources"]
                if "memory" in res:
                    task.set_memory_request(res["memory"]).set_memory_limit(res["memory"])
                if "cpu" in res:
                    task.set_cpu_request(res["cpu"]).set_cpu_limit(res["cpu"])
                for key, value in res.items():
                    if key not in ("memory", "cpu"):
                        task.set_accelerator_type(key).set_accelerator_limit(int(value))
                for key, value in spec["env"].items():
                    task.set_env_variable(key, value)
                mount: dict[str, Any] = {"pvc_name": spec["pvc"], "mount_path": spec["mount_path"]}
                if spec["sub_path"]:
                    mount["sub_path"] = spec["sub_path"]
                kfk.mount_pvc(task, **mount)
                if pull_policy:
                    kfk.set_image_pull_policy(task, pull_policy)
                made[spec["task"]] = task

        pipeline.__annotations__ = {}  # kfp reads a postponed "None" return annotation as an output
        pipeline.__name__ = self.pipeline_name.replace("-", "_")
        return dsl.pipeline(name=self.pipeline_name, description=self.cube.description or f"cube {self.cube.name} (cuberun)")(pipeline)

    def compile(self, tasks: Sequence[ResolvedTask], path: Path | None = None) -> Path:
        """Compile the pipeline of `tasks` to a YAML file (offline); returns its path."""
        from kfp import compiler

        target = path or self.output
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.yaml")
        try:
            try:
                compiler.Compiler().compile(pipeline_func=self.pipeline_function(tasks), package_path=str(tmp))
            except CuberunError:
                raise
            except Exception as exc:
                raise BackendError(f"the kfp compiler rejected the pipeline: {type(exc).__name__}: {_first(exc)}",
                                   "cuberun run --dry-run --platform=... shows its tasks") from None
            from cuberun.safeio import write_file

            write_file(target, tmp.read_bytes(), what="pipeline file")
        finally:
            if tmp.exists():
                tmp.unlink()
        return target

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

    # -- run -------------------------------------------------------------------------------------------
    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        return self.run_chain([plan], [log_path])[0]

    def run_chain(self, plans: Sequence[TaskPlan], log_paths: Sequence[str]) -> list[Outcome]:
        from cuberun.process import CANCEL, Outcome, handle_signals

        tasks = [p.task for p in plans]

        start = time.monotonic()
        self._warn_ignored_options()
        path = self.compile(tasks)
        names = [t.name for t in tasks]
        logs = [open(p, "ab") for p in log_paths]
        try:
            _log(logs, f"compiled pipeline '{self.pipeline_name}' ({', '.join(names)}) to {path}")
            if not self.host:
                say(f"compiled pipeline '{self.pipeline_name}' to {path}; not submitted: pipeline_host is not set")
                return [Outcome(0, time.monotonic() - start, details={"pipeline_file": str(path), "submitted": False}) for _ in tasks]
            with handle_signals():
                if CANCEL.requested:
                    sig = CANCEL.received or signal.SIGINT
                    return [Outcome(128 + sig, 0.0, interrupted=True, received=sig)]
                client = self.client()
                run_id = self._submit(client, path, names)
                details = {"pipeline_file": str(path), "run_id": run_id, "host": self.host}
                message = f"submitted pipeline run {run_id} to {self.host} (experiment '{self.experiment}')"
                say(message)
                _log(logs, message)
                try:
                    run = self._wait_run(client, run_id, names, logs)
                except Cancelled:
                    sig = CANCEL.received or signal.SIGINT
                    say(f"interrupted: terminating pipeline run {run_id}")
                    try:
                        client.terminate_run(run_id)
                    except Exception as exc:
                        warn(f"could not terminate pipeline run {run_id}: {_first(exc)}")
                    return [Outcome(128 + sig, time.monotonic() - start, interrupted=True, received=sig,
                                    reason=f"was interrupted (pipeline run {run_id} terminated)", details=details)]
            return self._outcomes(run, run_id, names, details, time.monotonic() - start)
        finally:
            for fh in logs:
                fh.close()

    def _submit(self, client: Any, path: Path, names: Sequence[str]) -> str:
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
                raise BackendError(f"reading pipeline run {run_id} failed: {type(exc).__name__}: {_first(exc)}",
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
                raise TaskFailed(
                    f"pipeline run {run_id} did not finish within {timeout:g} s (state {state}); it goes on on the server",
                    124,
                    f"follow it at {self.host}/#/runs/details/{run_id}, or raise -Prunner.timeout=SECONDS",
                )
            cancellable_sleep(interval)

    def _outcomes(self, run: Any, run_id: str, names: Sequence[str], details: dict[str, Any], elapsed: float) -> list[Outcome]:
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


def _container_component(spec: Mapping[str, Any]) -> Any:
    from kfp import dsl

    image, command, args = spec["image"], list(spec["command"]) or None, list(spec["args"])

    def component() -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image=image, command=command, args=args)

    component.__annotations__["return"] = dsl.ContainerSpec  # a class, not the postponed string kfp cannot read
    component.__name__ = dns_label(spec["task"]).replace("-", "_")
    return dsl.container_component(component)


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


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


def _kfp_version() -> str | None:
    try:
        import kfp

        return str(kfp.__version__)
    except ImportError:
        return None

