"""The HTCondor runner's config and its jobs as data: the job's program (htcondor.command,
else what the local runner would start), its files (shared, or moved by HTCondor), resources,
and the submit description of a task or of a whole sweep (one cluster); the dry-run steps. Pure:
nothing here runs a command."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import UsageError
from cuberun.runners.base import Step
from cuberun.runners.batch_polling import PollingBatchRunner
from cuberun.schema import Field
from cuberun.valueclass import dataclass
from cuberun_htcondor import submit as sub

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask


@dataclass(frozen=True)
class JobPlan:
    """One submission: a submit description and the tasks it queues (process i runs tasks[i])."""

    tasks: tuple[ResolvedTask, ...]
    path: str
    content: str


@dataclass(frozen=True)
class Submitted:
    """A submitted cluster."""

    plan: JobPlan
    cluster: str


TOOLS = ("condor_submit", "condor_q", "condor_history", "condor_rm")
CLIENT_TIMEOUT = 60.0
ATTRIBUTES = "ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,RemoveReason,LeaveJobInQueue"
# JobStatus numbers (HTCondor's job ClassAd)
STATES = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held", 6: "Transferring Output", 7: "Suspended"}
# submit commands the runner writes itself: `submit:` may not set them
MANAGED = {"universe", "executable", "arguments", "initialdir", "output", "error", "log", "environment", "getenv", "queue",
           "should_transfer_files", "when_to_transfer_output", "transfer_input_files", "transfer_output_files",
           "transfer_output_remaps", "transfer_executable", "stream_output", "stream_error"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*[KMGT]?B?$", re.IGNORECASE)


@dataclass(frozen=True)
class SubmitFileStep(Step):
    """The submit description a run writes (what --dry-run shows as a here-doc)."""

    path: str = ""
    content: str = ""

    def display(self) -> str:
        marker = "CUBERUN_SUBMIT"
        while marker in self.content.splitlines():
            marker += "_"
        return f"mkdir -p {shlex.quote(os.path.dirname(self.path))} && cat > {shlex.quote(self.path)} <<'{marker}'\n{self.content}{marker}"

    def to_json(self) -> dict[str, Any]:
        return dict(super().to_json(), path=self.path, content=self.content)


@dataclass(frozen=True)
class NoteStep(Step):
    """A command that takes the job's cluster id, known only after the submit (shown as a comment)."""

    def display(self) -> str:
        return f"# {self.purpose}: " + " ".join(shlex.quote(a) if a != "CLUSTER" else a for a in self.argv)


class HTCondorJobs(PollingBatchRunner[JobPlan, Submitted]):
    """The runner's config and its jobs as data (submit descriptions, dry-run steps); runner.py
    submits and follows them."""

    name = "htcondor"
    section = "htcondor"
    supports_array = True  # a sweep is one cluster (`queue ... from`): job <cluster>.<i> runs variant i
    supports_chain = False  # no job dependencies (that would be DAGMan): a chain runs task by task
    schema: ClassVar[dict[str, Field]] = {
        "command": Field((str, list), doc="the program the job starts (default: the task's entrypoint, else local.command)"),
        "workdir": Field((str,), doc="the job's working folder, relative to the cube folder (default: the cube folder)"),
        "universe": Field((str,), default="vanilla", choices=("vanilla",), doc="the HTCondor universe (vanilla only)"),
        "files": Field((str,), default="shared", choices=("shared", "transfer"),
                       doc="shared: the execute nodes see these paths; transfer: HTCondor moves inputs and outputs"),
        "schedd": Field((str,), doc="the schedd to submit to (-name); default: the local one"),
        "pool": Field((str,), doc="the central manager (-pool host[:port]); default: the configured one"),
        "requirements": Field((str,), doc="a ClassAd expression the execute slot must match"),
        "request_cpus": Field((int,), doc="default: --cpus, else HTCondor's default"),
        "request_memory": Field((str, int), doc="MB as an integer, or with a unit (4G); default: --memory, else platform.host_memory_gb"),
        "request_gpus": Field((int,), doc="default: the count of --gpus, else platform.accelerator_count"),
        "env_vars": Field((dict,), default={}, doc="environment variables of the job"),
        "submit": Field((dict,), default={}, doc="more submit commands, e.g. {+ProjectName: '\"ml\"', request_disk: 2G}"),
        "bin_dir": Field((str,), doc="the folder holding condor_submit, condor_q, condor_history, condor_rm (default: PATH)"),
        "job_dir": Field((str,), doc="where submit files and job logs go (default: <workspace>/.cuberun/htcondor)"),
        "poll_interval": Field((float,), default=2.0, doc="seconds between condor_q polls once the job ran a while"),
        "max_wait": Field((int,), default=7 * 24 * 3600, doc="seconds from submission until cuberun removes the job and stops waiting"),
    }

    # -- configuration -------------------------------------------------------------------------
    def tool(self, name: str) -> str:
        folder = self.config.get("bin_dir")
        return os.path.join(os.path.expanduser(str(folder)), name) if folder else name

    def where(self) -> list[str]:
        out = []
        if self.config.get("schedd"):
            out += ["-name", str(self.config["schedd"])]
        if self.config.get("pool"):
            out += ["-pool", str(self.config["pool"])]
        return out

    def job_dir(self) -> str:
        value = self.config.get("job_dir")
        ws = str(self.cube.workspace)
        if not value:
            return os.path.join(ws, ".cuberun", "htcondor")
        path = os.path.expanduser(os.path.expandvars(str(value)))
        return os.path.normpath(path if os.path.isabs(path) else os.path.join(ws, path))

    def workdir(self) -> str | None:
        value = self.config.get("workdir")
        return os.path.normpath(os.path.join(str(self.cube.root), str(value))) if value else None

    def program(self, task: ResolvedTask) -> tuple[list[str], str, dict[str, str]]:
        """(the program and its own arguments, the folder it starts in, its environment) without
        the task's parameters: htcondor.command, else what the local runner would start on a
        host (the cube's local section, or its Dockerfile's ENTRYPOINT mapped to the cube's files)."""
        value = self.config.get("command")
        workdir = self.workdir()
        if value:
            try:
                tokens = shlex.split(value) if isinstance(value, str) else [str(t) for t in value]
            except ValueError as exc:
                raise UsageError(f"htcondor.command: cannot split {value!r}: {exc}", "balance the quotes, or give the command as a list") from None
            if not tokens:
                raise UsageError("htcondor.command is empty", "give the program the job starts")
            return tokens, workdir or str(self.cube.root), {}
        from cuberun.runners.local import LocalRunner
        from cuberun.schema import defaults

        local = {**defaults(LocalRunner.schema), **self.cube.section("local"), "env": "system"}  # the execute node's own python
        try:
            step = LocalRunner(self.cube, local, "local", self.options).run_steps(task)[0]
        except UsageError as exc:
            raise UsageError(f"the HTCondor job of task '{task.name}' has no program: {exc.message}",
                             "set htcondor.command (e.g. -Phtcondor.command='python3 main.py')") from None
        suffix = tuple(task.task_args(task.host_args()))
        argv = list(step.argv)
        if suffix and tuple(argv[-len(suffix):]) == suffix:
            argv = argv[: -len(suffix)]
        env = {k: v for k, v in step.env.items() if k not in ("PATH", "PYTHONUNBUFFERED")}
        return argv, workdir or str(step.cwd or self.cube.root), env

    def _memory(self) -> str | None:
        value = self.config.get("request_memory")
        if value is None or value == "":
            if self.options.memory:
                value = self.options.memory
            else:
                gb = self.cube.platform.get("host_memory_gb")
                if isinstance(gb, (int, float)) and not isinstance(gb, bool) and gb > 0:
                    return str(int(gb * 1024))
                return None
        text = str(value).strip()
        if not _MEMORY.match(text):
            raise UsageError(f"htcondor.request_memory: '{value}' is not a memory size", "write MB as an integer (4096) or with a unit (4G)")
        return text.upper().removesuffix("B").replace(" ", "")

    def _gpus(self) -> int | None:
        if self.config.get("request_gpus") is not None:
            return int(self.config["request_gpus"])
        from cuberun.gpus import effective_gpus

        request = effective_gpus(self.options.gpus, self.cube.accelerator_count)
        if request.all:
            raise UsageError("--gpus=all cannot be turned into an HTCondor request", "give a count (--gpus=N), or set htcondor.request_gpus")
        return (len(request.devices) or request.count) or None

    @staticmethod
    def _stem(task: ResolvedTask) -> str:
        return _SAFE.sub("_", task.name)[:60] or "task"

    # -- the submit description (pure) ------------------------------------------------------------
    def description(self, task: ResolvedTask) -> sub.SubmitDescription:
        tokens, workdir, env = self.program(task)
        transfer = self.config.get("files") == "transfer"
        head = tokens[0]
        if "/" in head:
            executable = os.path.normpath(os.path.join(workdir, head))
            rest = tokens[1:]
        else:  # found on the execute node's PATH
            executable, rest = "/usr/bin/env", tokens
        inputs: list[str] = []
        outputs: list[tuple[str, str]] = []
        if transfer:
            args, inputs, outputs = self._transfer_args(task, rest, workdir)
        else:
            args = [*rest, *task.task_args(task.host_args())]
        stem = os.path.join(self.job_dir(), self._stem(task))
        cmds: list[tuple[str, str]] = [
            ("universe", str(self.config.get("universe") or "vanilla")),
            ("executable", sub.path_value(executable, "htcondor.command")),
            ("arguments", sub.arguments(args)),
            ("initialdir", sub.path_value(workdir, "htcondor.workdir")),
            ("output", sub.path_value(stem, "htcondor.job_dir") + "-$(ClusterId).$(ProcId).out"),
            ("error", sub.path_value(stem, "htcondor.job_dir") + "-$(ClusterId).$(ProcId).err"),
            ("log", sub.path_value(stem, "htcondor.job_dir") + "-$(ClusterId).log"),
            ("getenv", "false"),
        ]
        env.update({str(k): "" if v is None else str(v) for k, v in (self.config.get("env_vars") or {}).items()})
        env.update(self.options.extra_env)
        if env:
            cmds.append(("environment", sub.environment(env, "htcondor.env_vars")))
        if transfer:
            cmds += [
                ("should_transfer_files", "YES"),
                ("when_to_transfer_output", "ON_EXIT"),
                ("transfer_executable", "true" if executable != "/usr/bin/env" and os.path.isfile(executable) else "false"),
                ("stream_output", "true"),
                ("stream_error", "true"),
            ]
            if inputs:
                cmds.append(("transfer_input_files", sub.file_list(inputs, "transfer_input_files")))
            if outputs:
                cmds.append(("transfer_output_files", sub.file_list([n for n, _ in outputs], "transfer_output_files")))
                cmds.append(("transfer_output_remaps", sub.remaps(outputs, "transfer_output_remaps")))
        else:
            cmds += [("should_transfer_files", "NO"), ("transfer_executable", "false")]
        if self.config.get("request_cpus") is not None:
            cmds.append(("request_cpus", str(int(self.config["request_cpus"]))))
        elif self.options.cpus:
            cmds.append(("request_cpus", str(max(1, round(float(self.options.cpus))))))
        memory = self._memory()
        if memory:
            cmds.append(("request_memory", memory))
        gpus = self._gpus()
        if gpus:
            cmds.append(("request_gpus", str(gpus)))
        if self.config.get("requirements"):
            cmds.append(("requirements", sub.check(str(self.config["requirements"]), "htcondor.requirements")))
        cmds.append(("batch_name", sub.escape(f"cuberun-{self.cube.name}-{task.name}", "batch_name")))
        for key, value in (self.config.get("submit") or {}).items():
            if str(key).lower() in MANAGED:
                raise UsageError(f"htcondor.submit.{key}: cuberun writes '{key}' itself", "set it through the htcondor section's own keys")
            cmds.append((str(key), sub.check("" if value is None else str(value), f"htcondor.submit.{key}")))
        return sub.SubmitDescription(tuple(cmds))

    def _transfer_args(self, task: ResolvedTask, rest: list[str], workdir: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        """Arguments by base name; what goes to the scratch folder; what comes back where."""
        names: dict[str, str] = {}
        inputs: list[str] = []
        outputs: list[tuple[str, str]] = []
        args: list[str] = []
        for p in task.params:
            base = p.host_path.name
            other = names.setdefault(base, p.name)
            if other != p.name:
                raise UsageError(f"htcondor files=transfer: parameters '{other}' and '{p.name}' have the same base name '{base}'",
                                 "give them different names, or use files: shared")
            args.append(f"--{p.name}={base}")
            if p.io == "input":
                if p.exists or os.path.exists(p.host_path):
                    inputs.append(str(p.host_path))
            else:
                if p.type == "directory":
                    inputs.append(str(p.host_path))  # so that the folder exists in the scratch folder
                outputs.append((base, str(p.host_path)))
        for tok in rest:  # the command's own files (a script next to the cube)
            path = os.path.normpath(os.path.join(workdir, tok))
            if not tok.startswith("-") and os.path.isfile(path) and os.path.basename(path) not in names:
                inputs.append(path)
        return [*rest, *task.task_args(args)], inputs, outputs

    def submit_file(self, task: ResolvedTask) -> tuple[str, str]:
        content = self.description(task).render()
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        return os.path.join(self.job_dir(), f"{self._stem(task)}-{digest}.sub"), content

    def array_file(self, tasks: Sequence[ResolvedTask]) -> tuple[str, str] | None:
        """One submit description for a sweep whose variants differ only in their arguments:
        `arguments = $(CuberunArgs)` and `queue CuberunArgs from (...)`, one line per variant
        (process i = variant i). None when more differs (files: transfer moves other files per
        variant): the variants are then submitted one by one."""
        descs = [self.description(t) for t in tasks]
        rest = [tuple(c for c in d.commands if c[0] != "arguments") for d in descs]
        if any(r != rest[0] for r in rest[1:]):
            return None
        commands = tuple(("arguments", "$(CuberunArgs)") if k == "arguments" else (k, v) for k, v in descs[0].commands)
        items = "\n".join(d.get("arguments") or '""' for d in descs)
        content = sub.SubmitDescription(commands, queue=f"queue CuberunArgs from (\n{items}\n)").render()
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        return os.path.join(self.job_dir(), f"{self._stem(tasks[0])}-array-{digest}.sub"), content

    def array_steps(self, tasks: Sequence[ResolvedTask]) -> list[Step]:
        one = self.array_file(tasks)
        return self._steps(*one) if one is not None else [step for t in tasks for step in self.run_steps(t)]

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return self._steps(*self.submit_file(task))

    def _steps(self, path: str, content: str) -> list[Step]:
        return [
            SubmitFileStep((), "submit-file", path=path, content=content),
            Step((self.tool("condor_submit"), "-terse", *self.where(), path), "submit", cwd=self.job_dir()),
            NoteStep((self.tool("condor_q"), *self.where(), "CLUSTER", "-json", "-attributes", ATTRIBUTES), "follow"),
            NoteStep((self.tool("condor_history"), *self.where(), "CLUSTER", "-json", "-limit", "1", "-attributes", ATTRIBUTES), "then"),
            NoteStep((self.tool("condor_rm"), *self.where(), "CLUSTER"), "on Ctrl-C"),
        ]

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The job's program, arguments, environment and files mode; queue and resources are left
        out (they do not change results), and so is where the job files go."""
        desc = self.description(task)
        keys = ("universe", "executable", "arguments", "initialdir", "environment", "should_transfer_files")
        return {"runner": self.name, "command": {k: desc.get(k) for k in keys}, "code": self.cube_code().to_json()}

    def sections(self) -> list[str] | None:
        return ["htcondor", "local"]

    def unavailable_reason(self) -> str | None:
        from cuberun.process import which

        for name in TOOLS:
            tool = self.tool(name)
            if (os.path.isabs(tool) and not os.access(tool, os.X_OK)) or (not os.path.isabs(tool) and which(tool) is None):
                return f"{tool} not found. Hint: install the HTCondor client tools, or set htcondor.bin_dir"
        return None
