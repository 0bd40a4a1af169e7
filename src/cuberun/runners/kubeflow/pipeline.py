"""The kubeflow runner's pipeline, offline: its config, one KFP container component per task
(image, arguments, the workspace PVC, resources, `.after()` edges from the task graph), the
dry-run steps and the compiled pipeline file. `kfp` is imported only to compile."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.console import warn
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, UsageError
from cuberun.runners.base import Step
from cuberun.runners.k8s import KubernetesRunner
from cuberun.runners.k8s.manifests import PULL_POLICIES, dns_label
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask

KFP_HINT = "pip install 'cuberun[kubeflow]'"


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


class KubeflowPipeline(KubernetesRunner):
    """The k8s runner's config (image, arguments, env, resources) read for KFP components; the
    k8s runner's Job hooks are replaced by the KFP run's (runner.py)."""

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
        if task.task.run_args is not None:
            raise UsageError(f"{self.cube.file}: task '{task.name}': the {self.name} runner mounts only the workspace PVC at {self.mount_path}, "
                             "not container_config.yaml volumes at their own mount paths", "run the cube with the k8s runner")
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


def _container_component(spec: Mapping[str, Any]) -> Any:
    from kfp import dsl

    image, command, args = spec["image"], list(spec["command"]) or None, list(spec["args"])

    def component() -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image=image, command=command, args=args)

    component.__annotations__["return"] = dsl.ContainerSpec  # a class, not the postponed string kfp cannot read
    component.__name__ = dns_label(spec["task"]).replace("-", "_")
    return dsl.container_component(component)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
