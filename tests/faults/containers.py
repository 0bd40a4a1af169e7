"""The container engines (docker, podman) as fault-test harnesses.

The fault cube runs in the locally imported base image (`docker.image` in the cube), with
`--network none`. Containers are found by the names cuberun gave them (the `--name=` in the run
records) and, while they run, by their ids; "nothing left" means no such container in the
engine and no process of ours in the container's cgroup (conmon included, for podman).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.faults import helpers as h


def container_names(workspace: Path) -> list[str]:
    names = []
    for record in h.records(workspace):
        for step in record.get("steps", []):
            names += [a[len("--name="):] for a in step["argv"] if a.startswith("--name=cuberun-")]
    return names


def processes_in_cgroup(container_id: str) -> list[tuple[int, str]]:
    """Live processes whose cgroup names the container (its task, conmon, the shim's children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        if container_id in cgroup and h.alive(int(entry)):
            found.append((int(entry), h.cmdline(int(entry))[:120]))
    return found


class Engine(h.Harness):
    """docker or podman (the docker runner with `docker: podman`)."""

    real_pids = False  # the READY pids are the container's own

    def __init__(self, kind: str, base_image: str, env: dict[str, str], cwd: Path) -> None:
        super().__init__(env, cwd, ["--network=none"])
        self.kind = kind
        self.platform = kind  # the built-in platforms `docker` and `podman`
        self.base_image = base_image
        self.ids: set[str] = set()  # ids of containers seen running, for the cgroup check

    def sections(self) -> dict[str, Any]:
        return {"docker": {"image": self.base_image}}

    def engine(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kind, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def existing(self, names: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        if not names:
            return []
        out = self.engine("ps", "-a", "--no-trunc", "--format", "{{.Names}}", env=env).stdout.split()
        return [n for n in names if n in out]

    def remember_running(self, workspace: Path, env: dict[str, str] | None = None) -> str:
        """The id of the one container of this workspace that runs now."""
        [name] = container_names(workspace)[-1:]
        proc = self.engine("ps", "-q", "--no-trunc", "--filter", f"name=^/?{name}$", env=env)
        ids = proc.stdout.split()
        assert len(ids) == 1, f"container {name} is not running: {proc.stdout} {proc.stderr}"
        self.ids.add(ids[0])
        return ids[0]

    def task_pid(self, workspace: Path) -> int:
        """The host pid of the task (PID 1 of the running container)."""
        cid = self.remember_running(workspace)
        found = [p for p, _ in processes_in_cgroup(cid) if h.TASK_MARK in h.cmdline(p)]
        assert len(found) == 1, (cid, processes_in_cgroup(cid))
        return found[0]

    def leftovers(self, workspace: Path, pids: Sequence[int]) -> list[str]:
        left = super().leftovers(workspace, pids)
        names = container_names(workspace)
        left += [f"container {n}" for n in self.existing(names)]
        for cid in self.ids:
            left += [f"pid {p} in container {cid[:12]}: {line}" for p, line in processes_in_cgroup(cid)]
        for name in names:
            left += [f"pid {p}: {line}" for p, line in h.processes_mentioning(name)]
        return left

    def cleanup(self, workspace: Path, pids: Sequence[int]) -> None:
        super().cleanup(workspace, pids)
        names = container_names(workspace)
        for name in self.existing(names):
            self.engine("rm", "-f", name)
        # what an engine lost track of: processes in our containers' cgroups, and their conmon
        strays = [p for cid in self.ids for p, _ in processes_in_cgroup(cid)]
        h.kill_ours(strays, h.TASK_MARK, h.CHILD_MARK, *self.ids)
        h.kill_ours([p for name in names for p, _ in h.processes_mentioning(name)], *[f"-n {name} " for name in names])
