"""A third-party runner, as a plugin author would write it: the `echoer` runner runs a task as
`python3 -c <writer>` on the host, writing its greeting into every output folder.

It declares a config model (read from the cube's `echoer:` section, the platform entry and
-Prunner.*) and a pure `run_steps`, and runs the planned steps for real.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from cuberun.process import Outcome, stream
from cuberun.resolve import ResolvedTask
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.schema import Field

WRITER = (
    "import os, sys\n"
    "greeting, repeat, outs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]\n"
    "for out in outs:\n"
    "    os.makedirs(out, exist_ok=True)\n"
    "    with open(os.path.join(out, 'greeting.txt'), 'w') as fh:\n"
    "        fh.write((greeting + '\\n') * repeat)\n"
    "print(greeting)\n"
)


class EchoRunner(Runner):
    name = "echoer"
    section = "echoer"
    schema: ClassVar[dict[str, Field]] = {
        "greeting": Field((str,), default="hello", doc="what the task writes"),
        "repeat": Field((int,), default=1, doc="how many times"),
        "env": Field((dict,), default={}, env=True, doc="environment of the task"),
    }

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        outs = [str(p.host_path) for p in task.params if p.io == "output"]
        argv = (sys.executable, "-c", WRITER, str(self.config["greeting"]), str(self.config["repeat"]), *outs)
        return [Step(argv, "run", cwd=str(task.workspace), env={str(k): str(v) for k, v in (self.config.get("env") or {}).items()})]

    def run(self, plan: TaskPlan, log_path: str) -> Outcome:
        import os

        step = plan.steps[0]  # the steps of run_steps(task), made once for this run
        with open(log_path, "ab") as log:
            return stream(step.argv, cwd=step.cwd, env={**os.environ, **step.env}, log=log)

    def inspect(self) -> dict[str, Any]:
        return {"runner": self.name, "platform": self.platform, "greeting": self.config["greeting"]}
